"""The command line: JSON summary contract, one-line errors with exit code 2, the compare table."""

import json
import subprocess
import sys

import pytest

from bioplausible.cli import main
from helpers import needs_mnist

SMALL = ["--train-subset", "1000", "--test-subset", "300", "--epochs", "1", "--threads", "1", "--quiet",
         "--hidden-sizes", "32"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bioplausible.cli", *args], capture_output=True, text=True)


@needs_mnist
def test_train_json_summary_contract(tmp_path):
    p = run_cli("train", "--dataset", "mnist", "--rule", "dfa", *SMALL, "--json", "--out", str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    for key in ("test_error", "train_loss", "epochs", "seconds", "rule", "dataset"):
        assert key in s
    assert s["rule"] == "dfa" and s["dataset"] == "mnist" and s["epochs"] == 1
    assert 0 <= s["test_error"] <= 1
    assert (tmp_path / "r" / "config.json").is_file() and (tmp_path / "r" / "summary.json").is_file()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--rule", "hebbian"], "argument --rule: invalid choice: 'hebbian'"),
        (["--dataset", "svhn"], "argument --dataset: invalid choice: 'svhn'"),
        (["--lr", "-1"], "--lr: invalid value -1.0; accepted: float in (0, 3.4e+38]"),
        (["--lr", "abc"], "--lr: invalid value 'abc'; expected float"),
        (["--epochs", "0"], "--epochs: invalid value 0"),
        (["--batch-size", "2.5"], "--batch-size: invalid value '2.5'; expected int"),
        (["--rule", "bp", "--target-step", "0.1"], "rule option 'target_step' does not apply to rule 'bp'"),
        (["--rule", "fa", "--inverse-lr", "0.1"], "--inverse-lr: only rule 'dtp' has inverse maps"),
        (["--hidden-sizes", "0"], "argument --hidden-sizes: invalid value '0'"),
        (["--loss", "ce", "--output", "sigmoid"], "loss: 'ce' needs output 'softmax'"),
        (["--update-noise", "-0.1"], "--update-noise: invalid value -0.1"),
    ],
)
def test_invalid_options_one_line_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        code = main(["train", *args, "--epochs", "1"] if "--epochs" not in args else ["train", *args])
        raise SystemExit(code)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@needs_mnist
def test_batch_larger_than_dataset(capsys):
    assert main(["train", "--train-subset", "100", "--batch-size", "200", "--epochs", "1", "--quiet",
                 "--out", "/tmp/never-written-bp"]) == 2
    assert "--batch-size: invalid value 200; accepted: at most the 100 training examples" in capsys.readouterr().err


@needs_mnist
def test_compare_prints_a_table(tmp_path):
    p = run_cli("compare", "--dataset", "mnist", "--rules", "bp,dfa", *SMALL, "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith("| ")]
    assert lines[0].startswith("| rule | network | test error")
    assert [l.split("|")[1].strip() for l in lines[1:]] == ["bp", "dfa"]


def test_output_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    """`bioplausible sweep SPEC --dry-run | head`: a reader that leaves early (here `true`, which never
    reads, and is gone long before Python has imported torch) gets no BrokenPipeError trace."""
    cmd = f"{sys.executable} -m bioplausible sweep quick --dry-run --store {tmp_path / 's'} | true"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_boolean_options_override_the_preset_both_ways():
    """--no-standardize / --no-augment-flip turn off what the tuned preset turns on for CIFAR (a DP run
    must not standardise with the private training set's statistics), and the plain flags turn them on."""
    from bioplausible.cli import build_parser, config_from_args

    p = build_parser()
    base = ["train", "--preset", "tuned", "--dataset", "cifar10", "--rule", "bp"]
    c = config_from_args(p.parse_args(base))
    assert c.standardize is True and c.augment_flip is True
    c = config_from_args(p.parse_args([*base, "--no-standardize", "--no-augment-flip", "--no-per-layer-clipping"]))
    assert c.standardize is False and c.augment_flip is False and c.per_layer_clipping is False
    c = config_from_args(p.parse_args(["train", "--dataset", "mnist", "--rule", "dfa", "--standardize", "--shared-feedback"]))
    assert c.standardize is True and c.rule_options["shared_feedback"] is True
