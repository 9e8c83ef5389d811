"""Fault injection (issue 6): hostile checkpoints, bad options, divergence, signals, SIGKILL at random
moments, a full disk, privacy misuse. Each case checks what the user sees (one line, exit code 2, or
the run's recorded status) and that nothing already finished is lost.

Hostile *data files* (truncated or non-gzip ``.gz``, wrong IDX magic or dimensions, count mismatches,
IDX headers declaring billions of items, CIFAR files of the wrong length, archives with ``..``,
absolute paths, links or devices, checksum mismatches, corrupt cached files) are covered in
``tests/test_data.py``; ``docs/reliability.md`` lists which test covers which case.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bioplausible import resolve, train
from bioplausible.checkpoint import read_checkpoint
from bioplausible.cli import build_parser, config_from_args, main
from bioplausible.data import Dataset
from bioplausible.errors import UserError
from bioplausible.training import read_metrics
from helpers import needs_mnist

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "eval_seconds")


# --------------------------------------------------------------------------------------- helpers
def synthetic(n=512, m=128, seed=0) -> Dataset:
    """A learnable 10-class problem shaped like MNIST (class centres plus noise), in memory."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(10, 784, generator=g)
    y = torch.randint(0, 10, (n + m,), generator=g)
    x = (centres[y] + 0.3 * torch.rand(n + m, 784, generator=g)).clamp(0, 1)
    return Dataset("mnist", x[:n], y[:n], x[n:], y[n:], None, None, 10, 784, (1, 28, 28))


def small(**kw):
    base = dict(hidden_sizes=[32], batch_size=32, epochs=3, threads=1, stop_delta=None, output="softmax",
                loss="ce", reduction="mean", optimizer="adam", lr=1e-2, schedule="cosine")
    base.update(kw)
    return resolve(preset="paper", **base)


def one_line_error(capsys, argv) -> str:
    """Run the CLI in-process; assert exit code 2 and a single stderr line without a traceback."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def rows_without_timing(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def same_checkpoint(a: Path, b: Path) -> None:
    ta, ma = read_checkpoint(a)
    tb, mb = read_checkpoint(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert ma["meta"] == mb["meta"]


# ------------------------------------------------------------- 1. a truncated download in the cache
def test_truncated_cached_download_is_deleted_and_fetched_afresh(tmp_path, monkeypatch):
    """A download cut short (truncated .gz) in the cache: one line naming the file and the problem,
    the file is deleted (never reused), and the next run downloads an intact copy."""
    from bioplausible.data import load_dataset, store
    from bioplausible.errors import DataError
    from test_data import gz, make_mnist, md5, pin, write_mnist

    monkeypatch.setenv("BIOPLAUSIBLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BIOPLAUSIBLE_DATA", raising=False)
    monkeypatch.setattr(store, "SYSTEM_DIRS", (tmp_path / "system",))
    _, contents = make_mnist()
    pin(monkeypatch, "mnist", {k: md5(v) for k, v in contents.items()})
    cache = write_mnist(tmp_path / "cache" / "mnist", contents)
    cut = cache / "t10k-images-idx3-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:40])
    with pytest.raises(DataError) as e:
        load_dataset("mnist", download=False)
    msg = str(e.value)
    assert msg.startswith(f"{cut}: truncated gzip file") and f"the corrupt cached copy {cut} was deleted" in msg
    assert "\n" not in msg and not cut.exists()
    fetched = []

    def retrieve(url, known_hash, fname, path):
        fetched.append(fname)
        if not (Path(path) / fname).exists():
            (Path(path) / fname).write_bytes(gz(contents[fname[:-3]]))
        return str(Path(path) / fname)

    monkeypatch.setattr(store, "_retrieve", retrieve)
    ds = load_dataset("mnist")
    assert ds.source["origin"] == "downloaded" and "t10k-images-idx3-ubyte.gz" in fetched
    assert ds.x_test.shape == (7, 784) and cut.read_bytes() == gz(contents["t10k-images-idx3-ubyte"])


# ------------------------------------------------------------------- 1. checkpoints: no pickle, ever
class _Payload:
    """Unpickling this creates a marker file: proof that foreign code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _interrupted_run(tmp_path, name, **kw) -> tuple[Path, object]:
    """A run directory with config.json and a checkpoint after 1 of 3 epochs (as if stopped)."""
    cfg = small(**kw)
    out = tmp_path / name
    train(small(**{**kw, "epochs": 1}), out=out, data=synthetic())
    cfgd = json.loads((out / "config.json").read_text())
    cfgd.update(cfg.to_dict(), run_hash=cfg.run_hash())
    (out / "config.json").write_text(json.dumps(cfgd))
    (out / "summary.json").unlink()
    return out, cfg


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickle_disguised_as_checkpoint_is_refused_without_running_it(tmp_path, kind):
    out, cfg = _interrupted_run(tmp_path, "r")
    marker = tmp_path / "pwned"
    ck = out / "checkpoint.safetensors"
    if kind == "pickle":
        ck.write_bytes(pickle.dumps({"net.layers.0.weight": _Payload(marker)}))
    else:
        torch.save({"x": _Payload(marker)}, ck)
    with pytest.raises(UserError) as e:
        train(cfg, out=out, resume=True, data=synthetic())
    msg = str(e.value)
    assert f"checkpoint {ck}: not a readable safetensors file" in msg and "\n" not in msg
    assert not marker.exists()


def test_truncated_and_hostile_safetensors_header(tmp_path):
    out, cfg = _interrupted_run(tmp_path, "r")
    ck = out / "checkpoint.safetensors"
    whole = ck.read_bytes()
    ck.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=re.escape(f"checkpoint {ck}: not a readable safetensors file")):
        train(cfg, out=out, resume=True, data=synthetic())
    # a header that declares an absurd length: refused, nothing allocated
    ck.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        read_checkpoint(ck)
    # valid safetensors, but not ours
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(ck))
    with pytest.raises(UserError, match="missing metadata 'architecture'; not a bioplausible checkpoint"):
        read_checkpoint(ck)


@pytest.mark.parametrize(
    "theirs, ours, needle",
    [
        ({"hidden_sizes": [16]}, {}, "architecture mismatch in 'sizes': checkpoint has [784, 16, 10], "
                                     "this run has [784, 32, 10]"),
        ({"hidden": "relu"}, {}, "architecture mismatch in 'hidden': checkpoint has 'relu', this run has 'tanh'"),
        ({"rule": "dfa"}, {"rule": "fa"}, "rule mismatch: checkpoint has 'dfa', this run has 'fa'"),
    ],
)
def test_checkpoint_of_another_run_is_refused_naming_the_mismatch(tmp_path, capsys, theirs, ours, needle):
    """A checkpoint copied in from another run: the CLI refuses it in one line that names the mismatch."""
    other, _ = _interrupted_run(tmp_path, "other", **{"rule": "bp", **theirs})
    mine, cfg = _interrupted_run(tmp_path, "mine", **{"rule": "bp", **ours})
    shutil.copy(other / "checkpoint.safetensors", mine / "checkpoint.safetensors")
    with pytest.raises(UserError) as e:
        train(cfg, out=mine, resume=True, data=synthetic())
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_no_pickle_anywhere_in_the_library():
    """Static guard: no module can unpickle (pickle, torch.load, numpy's allow_pickle, joblib)."""
    bad = re.compile(r"\bimport pickle\b|\bpickle\.load|\btorch\.load\(|allow_pickle\s*=\s*True|\bjoblib\b|"
                     r"\bdill\b|\bcloudpickle\b|weights_only\s*=\s*False|\bmarshal\.load")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for p in sorted((REPO / "src" / "bioplausible").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert hits == []


# ----------------------------------------------------------- 2. bad configuration, before any work
@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """Loading any dataset fails the test: the error must come from validation alone."""
    def boom(*a, **k):
        raise AssertionError("a dataset was loaded before the options were validated")

    monkeypatch.setattr("bioplausible.training.load_data", boom)
    monkeypatch.setattr("bioplausible.data.load_dataset", boom)
    monkeypatch.setenv("BIOPLAUSIBLE_DATA", str(tmp_path / "empty"))
    return tmp_path


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--noise-multiplier", "-1"], "--noise-multiplier: invalid value -1.0; accepted: float in [0, inf]"),
        (["--update-noise", "nan"], "--update-noise: invalid value nan; expected a number, not NaN"),
        (["--lr", "0"], "--lr: invalid value 0.0; accepted: float in (0, 3.4e+38]"),
        (["--lr", "inf"], "--lr: invalid value inf; expected a finite number"),
        (["--target-epsilon", "0"], "--target-epsilon: invalid value 0.0; accepted: float in (0, inf]"),
        (["--target-epsilon", "-3"], "--target-epsilon: invalid value -3.0"),
        (["--clip-norm", "0"], "--clip-norm: invalid value 0.0; accepted: float in (0, inf]"),
        (["--delta", "1"], "--delta: invalid value 1.0; accepted: float in (0, 1)"),
        (["--delta", "1e-4", "--train-subset", "20000", "--target-epsilon", "1"],
         "--delta: invalid value 0.0001; accepted: 0 < delta < 1/n = 5e-05 for n = 20000 training examples"),
        (["--batch-size", "60001"], "--batch-size: invalid value 60001; accepted: at most the 60000 training examples"),
        (["--batch-size", "600", "--train-subset", "500"], "at most the 500 training examples"),
        (["--dataset", "cifar10", "--batch-size", "45001", "--validation", "5000"],
         "at most the 45000 training examples (cifar10, after train_subset and validation)"),
        (["--validation", "60000"], "--validation: invalid value 60000; accepted: a count in [1, 59999]"),
        (["--validation", "2.5"], "--validation: invalid value 2.5; expected int"),
        (["--rule", "fa", "--inverse-noise", "0.1"], "rule option 'inverse_noise' does not apply to rule 'fa'"),
        (["--rule", "bp", "--shared-feedback"], "rule option 'shared_feedback' does not apply to rule 'bp'"),
        (["--rule", "dtp", "--target-step", "-1"], "--target-step: invalid value -1.0"),
        (["--epochs", "1e12"], "--epochs: invalid value '1e12'; expected int"),
        (["--seed", "-1"], "--seed: invalid value -1"),
        (["--threads", "0"], "--threads: invalid value 0"),
        (["--momentum", "1"], "--momentum: invalid value 1.0; accepted: float in [0, 1)"),
        (["--target-epsilon", "1", "--noise-multiplier", "1"], "give either target_epsilon or noise_multiplier"),
        (["--dataset", "mnist", "--rule", "hebbian"], "argument --rule: invalid choice: 'hebbian'"),
        (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    ],
)
def test_bad_options_are_refused_before_any_data_is_loaded(no_data, capsys, args, needle):
    err = one_line_error(capsys, ["train", *args, "--out", str(no_data / "never"), "--quiet"])
    assert needle in err
    assert not (no_data / "never").exists()


@pytest.mark.parametrize(
    "toml, needle",
    [
        ('[base]\nlr = -1\n', "key 'lr': invalid value -1; accepted: float in (0, 3.4e+38]"),
        ('[base]\nepochs = 2.5\n', "key 'epochs': invalid value 2.5; expected int"),
        ('[base]\nepochs = true\n', "key 'epochs': invalid value True; expected int"),
        ('[base]\nepochs = inf\n', "key 'epochs': invalid value inf; expected int"),
        ('[base]\nhidden_sizes = [800.5]\n', "key 'hidden_sizes': invalid value 800.5; expected int"),
        ('[base]\naugment_flip = 1\n', "key 'augment_flip': invalid value 1; accepted: true or false"),
        ('[base]\ndata_dir = 3\n', "key 'data_dir': invalid value 3; accepted: a directory path"),
        ('[[grid]]\nrule = [["bp"]]\n', "key 'rule': unknown rule ['bp']"),
        ('[base]\npreset = "tuned"\ndataset = 5\n', "key 'dataset': invalid value 5"),
        ('[base]\nrule = "bp"\nrule_options = {target_step = 0.1}\n',
         "key 'rule_options': rule option 'target_step' does not apply to rule 'bp'"),
        ('[base]\ndataset = "mnist"\nbatch_size = 100000\n', "key 'batch_size': invalid value 100000"),
        ('[base]\nnoise_multiplier = -0.5\n', "key 'noise_multiplier': invalid value -0.5"),
        ('[base]\nlearning_rate = 0.1\n', "key 'learning_rate': unknown key"),
        ('[base\n', "not valid TOML"),
    ],
)
def test_bad_spec_files_exit_2_naming_file_and_key(no_data, capsys, toml, needle):
    spec = no_data / "bad.toml"
    spec.write_text(toml)
    err = one_line_error(capsys, ["sweep", str(spec), "--store", str(no_data / "store"), "--dry-run"])
    assert str(spec) in err and needle in err


# --------------------------------------------------------------------------------- 3. divergence
def test_nan_mid_run_ends_diverged_keeps_last_good_checkpoint_and_stops_the_epoch_early(tmp_path, monkeypatch):
    """A NaN injected into a weight during epoch 2: the run stops within 16 batches with status
    ``diverged`` and the epoch, and the run directory still holds the finite checkpoint of epoch 1."""
    import bioplausible.training as T

    calls = []
    real = T.make_rule

    def make_rule(*a, **k):
        rule = real(*a, **k)
        teach = rule.teach

        def poisoned(x, t):
            calls.append(x.shape[0])  # (the epoch-end alignment diagnostic calls it on 500 rows)
            if calls.count(8) == 64 + 3:  # epoch 1 has 64 batches; poison the 3rd batch of epoch 2
                with torch.no_grad():
                    rule.net.layers[0].weight[0, 0] = float("nan")
            return teach(x, t)

        rule.teach = poisoned
        return rule

    monkeypatch.setattr(T, "make_rule", make_rule)
    out = tmp_path / "r"
    s = train(small(epochs=4, batch_size=8), out=out, data=synthetic())
    assert s["status"] == "diverged" and s["diverged_epoch"] == 2
    assert s["stop_reason"] == "non-finite loss or weights in epoch 2"
    assert calls.count(8) == 64 + 16  # epoch 2 stopped at its first check (every 16 batches); 3-4 never ran
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["diverged"] and "test_error" not in rows[1]
    assert s["test_error"] == rows[0]["test_error"]  # the summary reports the last good epoch
    tensors, meta = read_checkpoint(out / "checkpoint.safetensors")
    assert meta["meta"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("net."))
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    # a diverged run is final: resuming returns its summary without training again
    calls.clear()
    again = train(small(epochs=4, batch_size=8), out=out, resume=True, data=synthetic())
    assert again["status"] == "diverged" and calls == []


def test_huge_learning_rate_diverges_in_epoch_1_and_the_cli_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("bioplausible.training.load_data", lambda cfg, **kw: synthetic())
    out = tmp_path / "r"
    code = main(["train", "--hidden-sizes", "32", "--hidden", "relu", "--output", "linear", "--lr", "100",
                 "--batch-size", "32", "--epochs", "3", "--threads", "1", "--quiet", "--json", "--out", str(out)])
    assert code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["status"] == "diverged" and s["diverged_epoch"] == 1 and s["test_error"] is None
    assert not (out / "checkpoint.safetensors").exists()  # nothing good to keep
    capsys.readouterr()
    code = main(["compare", "--rules", "bp", "--hidden-sizes", "32", "--hidden", "relu", "--output", "linear",
                 "--lr", "100", "--batch-size", "32", "--epochs", "3", "--threads", "1", "--quiet",
                 "--out", str(tmp_path / "cmp")])
    assert code == 0
    assert "| bp | 784-32-10 | n/a (diverged) | n/a | 1 |" in capsys.readouterr().out


# ------------------------------------------------------------------------ 4. interruption (real)
# Enough epochs that none of the interruptions below (the first at up to 4 s after the start) can land
# after the run has finished: a full epoch here takes ~0.1 s.
KILL_ARGS = [
    "--dataset", "mnist", "--rule", "dfa", "--hidden-sizes", "64x2", "--epochs", "40", "--train-subset", "3000",
    "--test-subset", "500", "--optimizer", "adam", "--lr", "1e-3", "--schedule", "cosine", "--augment-shift", "1",
    "--output", "softmax", "--loss", "ce", "--reduction", "mean", "--batch-size", "25", "--threads", "1",
    "--no-early-stop", "--quiet", "--json",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of KILL_ARGS, trained in this process."""
    from bioplausible.data import load_dataset

    args = build_parser().parse_args(["train", *KILL_ARGS])
    out = tmp_path_factory.mktemp("reference") / "run"
    summary = train(config_from_args(args), out=out, data=load_dataset("mnist", download=False))
    return out, summary


def _cli(out, *extra):
    return [sys.executable, "-m", "bioplausible.cli", "train", *KILL_ARGS, "--out", str(out), *extra]


def _wait_for_epochs(run, k, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(read_metrics(run)) >= k:
            return True
        time.sleep(0.02)
    return False


def _assert_same_as_reference(run, reference, summary):
    ref_dir, ref = reference
    for k in ("status", "epochs", "test_error", "test_loss", "train_loss", "train_error", "best_test_error"):
        assert summary[k] == ref[k], k
    assert rows_without_timing(run) == rows_without_timing(ref_dir)
    same_checkpoint(run / "checkpoint.safetensors", ref_dir / "checkpoint.safetensors")


@needs_mnist
def test_kills_and_signals_at_random_moments_then_resume_equals_uninterrupted(tmp_path, reference):
    """One real training run, restarted with ``--resume`` after each of: SIGKILL at a seeded random
    moment of the start (imports, data loading, first epoch), one SIGTERM (the epoch finishes, is saved, the run
    says ``interrupted``, exit 0), two SIGINTs (abort now, exit 130, last finished epoch kept), and
    a SIGKILL at a random moment of an epoch. The end result is bit-identical to the uninterrupted run:
    every metric, every weight, feedback matrix, optimizer moment and RNG state."""
    rng = random.Random(6)
    run = tmp_path / "run"
    seen = []
    for step in ("kill-startup", "term", "int-int", "kill"):
        proc = subprocess.Popen(_cli(run, "--resume"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = len(read_metrics(run))
        if step == "kill-startup":
            time.sleep(rng.uniform(0.0, 4.0))  # imports, data loading, first batches
        else:
            assert _wait_for_epochs(run, before + 1, proc), proc.communicate()
            time.sleep(rng.uniform(0.0, 0.3))  # anywhere in the next epoch
        if step.startswith("kill"):
            proc.send_signal(signal.SIGKILL)
        else:
            sig = signal.SIGTERM if step == "term" else signal.SIGINT
            proc.send_signal(sig)
            want = f"bioplausible: {signal.Signals(sig).name} received, stopping after this epoch"
            line = proc.stderr.readline()
            while line and want not in line:  # skip any unrelated warning lines
                line = proc.stderr.readline()
            assert want in line
            if step == "int-int":
                proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        ck = run / "checkpoint.safetensors"
        saved = read_checkpoint(ck)[1]["meta"]["epoch"] if ck.exists() else 0
        if step == "term":
            assert proc.returncode == 0, err
            s = json.loads(out)
            assert s["status"] == "interrupted" and s["stop_reason"] == "stopped by signal; resume with --resume"
            assert s["epochs"] == saved == len(read_metrics(run))
            assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
        elif step == "int-int":
            assert proc.returncode == 130 and err.strip().endswith("bioplausible: interrupted"), err
        else:
            assert proc.returncode == -signal.SIGKILL
        seen.append((step, len(read_metrics(run)), saved))
    epochs = int(KILL_ARGS[KILL_ARGS.index("--epochs") + 1])
    assert seen[-1][1] < epochs, f"every interruption should land before the run ends: {seen}"
    res = subprocess.run(_cli(run, "--resume"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    _assert_same_as_reference(run, reference, json.loads(res.stdout))


# ------------------------------------------------------------------------------ full disk, atomicity
def test_disk_full_mid_run_keeps_previous_files_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """os.replace fails with ENOSPC while epoch 2 is saved: the previous metrics and checkpoint are
    byte-identical, no temporary file is left, the CLI prints one line (exit 2); after space is freed,
    --resume ends exactly like an uninterrupted run."""
    monkeypatch.setattr("bioplausible.training.load_data", lambda cfg, **kw: synthetic())
    argv = ["train", "--hidden-sizes", "32", "--output", "softmax", "--loss", "ce", "--reduction", "mean",
            "--optimizer", "adam", "--lr", "0.01", "--batch-size", "32", "--epochs", "3", "--threads", "1",
            "--no-early-stop", "--quiet", "--json"]
    ref = tmp_path / "ref"
    assert main([*argv, "--out", str(ref)]) == 0
    capsys.readouterr()

    run = tmp_path / "full"
    real_replace = os.replace
    snapshot = {}

    def replace(src, dst):
        if Path(dst).name == "metrics.jsonl" and read_metrics(run):
            snapshot.update({p.name: p.read_bytes() for p in run.iterdir() if not p.name.endswith(".tmp")})
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    err = one_line_error(capsys, [*argv, "--out", str(run)])
    assert err == (f"bioplausible: error: out: cannot write to {str(run)!r} (No space left on device); files "
                   "already there are intact (last checkpoint: epoch 1); free space and continue with --resume")
    monkeypatch.setattr(os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == snapshot  # intact, and no *.tmp left behind
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    assert main([*argv, "--out", str(run), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["test_error"] == json.loads((ref / "summary.json").read_text())[
        "test_error"]
    assert rows_without_timing(run) == rows_without_timing(ref)
    same_checkpoint(run / "checkpoint.safetensors", ref / "checkpoint.safetensors")


def test_full_or_unwritable_out_is_detected_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("bioplausible.training.load_data", lambda cfg, **kw: synthetic())
    argv = ["train", "--hidden-sizes", "32", "--batch-size", "32", "--epochs", "1", "--threads", "1", "--quiet"]
    real = shutil.disk_usage
    monkeypatch.setattr("bioplausible.training.shutil.disk_usage", lambda p: real(p)._replace(free=4096))
    err = one_line_error(capsys, [*argv, "--out", str(tmp_path / "full")])
    assert re.search(r"out: '.*full' has 0\.0 MiB free but a checkpoint needs about 1\.\d MiB; free space or "
                     r"choose another --out", err), err
    assert read_metrics(tmp_path / "full") == []
    monkeypatch.setattr("bioplausible.training.shutil.disk_usage", real)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = one_line_error(capsys, [*argv, "--out", str(blocker / "sub")])
    assert "out: cannot write to" in err and "choose a writable directory" in err


# --------------------------------------------------------------------------------- 6. privacy misuse
@pytest.mark.parametrize(
    "opts, reason",
    [
        (["--clip-norm", "1"], "per-example clipping without noise"),
        (["--noise-multiplier", "1"], "noise without per-example clipping bounds nothing"),
        (["--clip-norm", "1", "--noise-multiplier", "0"], "noise multiplier 0"),
        (["--update-noise", "0.1"], "update noise sigma=0.1 at site 'gradient' is added without per-example clipping"),
        (["--update-noise", "0.1", "--noise-site", "error"], "at site 'error'"),
    ],
)
def test_misused_privacy_is_labelled_epsilon_inf_everywhere(tmp_path, monkeypatch, capsys, opts, reason):
    monkeypatch.setattr("bioplausible.training.load_data", lambda cfg, **kw: synthetic())
    out = tmp_path / "r"
    base = ["train", "--hidden-sizes", "32", "--batch-size", "32", "--epochs", "2", "--threads", "1", "--quiet",
            "--out", str(out), *opts]
    assert main(base) == 0
    line = capsys.readouterr().out
    assert line.strip().endswith("; epsilon=inf"), line  # the human-readable line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epsilon"] == "inf" and summary["private"] is False
    assert summary["privacy"].startswith("no formal privacy guarantee (epsilon = inf)") and reason in summary["privacy"]
    assert all(r["epsilon"] == "inf" for r in read_metrics(out))  # every epoch's record


def test_poisson_sampling_without_noise_is_not_reported_as_epsilon_zero(tmp_path):
    """Sampling alone is no privacy mechanism: never claim ε = 0 (summary or metrics)."""
    s = train(small(epochs=1, sampling="poisson"), out=tmp_path / "r", data=synthetic())
    assert s["private"] is False and s.get("epsilon") in (None, "inf"), s
    assert all(r.get("epsilon") in (None, "inf") for r in read_metrics(tmp_path / "r"))


def test_unreachable_target_epsilon_says_so_instead_of_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("bioplausible.training.load_data", lambda cfg, **kw: synthetic())
    err = one_line_error(capsys, ["train", "--hidden-sizes", "32", "--batch-size", "32", "--epochs", "100",
                                  "--target-epsilon", "1e-6", "--delta", "1e-10", "--quiet", "--out",
                                  str(tmp_path / "r")])
    assert "--target-epsilon: 1e-06 is unreachable at delta=1e-10 even with noise multiplier 10000" in err
    assert read_metrics(tmp_path / "r") == [] and not (tmp_path / "r" / "checkpoint.safetensors").exists()
