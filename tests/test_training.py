"""The training loop on real data: every rule learns, runs are deterministic and resume exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bioplausible import resolve, train
from bioplausible.checkpoint import read_checkpoint
from bioplausible.errors import UserError
from bioplausible.training import read_metrics
from helpers import needs_mnist

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def mnist():
    from bioplausible.data import load_dataset

    return load_dataset("mnist", download=False)


def quick(rule, **kw):
    base = dict(
        rule=rule, dataset="mnist", epochs=2, train_subset=6000, test_subset=2000, threads=1,
        hidden_sizes=[128], output="softmax", loss="ce", reduction="mean", optimizer="adam", lr=2e-3,
        batch_size=100, stop_delta=None,
    )
    base.update(kw)
    return resolve(preset="paper", **base)


@needs_mnist
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa", "ifa", "dtp"])
def test_each_rule_learns_real_mnist(rule, mnist, tmp_path):
    kw = {"hidden_sizes": [128, 128, 128]} if rule == "dtp" else {}
    if rule == "dtp":
        kw.update(lr=1e-3, inverse_lr=1e-3, rule_options={"target_step": 0.2})
    s = train(quick(rule, **kw), out=tmp_path / rule, data=mnist)
    assert s["status"] == "completed" and s["epochs"] == 2
    assert s["test_error"] < 0.15, s  # chance is 0.90
    rows = read_metrics(tmp_path / rule)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    for key in ("train_loss", "train_error", "test_error", "seconds", "angle_1"):
        assert key in rows[0]
    if rule == "bp":
        assert rows[0]["angle_1"] < 1e-2
    else:
        assert 0 < rows[-1]["angle_1"] < 90  # descends, without being the gradient
    if rule in ("fa", "dfa", "ifa"):
        assert "feedback_angle_1" in rows[0]


@needs_mnist
def test_same_seed_same_numbers_different_seed_different(mnist):
    a = train(quick("dfa", epochs=1), data=mnist)
    b = train(quick("dfa", epochs=1), data=mnist)
    c = train(quick("dfa", epochs=1, seed=1), data=mnist)
    assert a["test_error"] == b["test_error"] and a["train_loss"] == b["train_loss"]
    assert a["train_loss"] != c["train_loss"]


@needs_mnist
def test_stopping_rule_and_paper_preset(mnist):
    cfg = resolve(preset="paper", rule="bp", train_subset=2000, test_subset=500, threads=1, stop_delta=0.5)
    assert (cfg.hidden_sizes, cfg.output, cfg.loss, cfg.reduction, cfg.lr, cfg.batch_size, cfg.epochs) == (
        [800], "sigmoid", "mse", "sum", 5e-4, 200, 100)
    s = train(cfg, data=mnist)
    assert s["status"] == "converged" and s["epochs"] == 2  # |Δ objective| < 0.5 after the 2nd epoch


@needs_mnist
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    """Kill a real training process mid-run, resume it, and get bit-identical results."""
    args = [
        "--dataset", "mnist", "--rule", "dtp", "--hidden-sizes", "64x3", "--epochs", "5", "--train-subset", "3000",
        "--test-subset", "500", "--optimizer", "adam", "--lr", "1e-3", "--schedule", "cosine", "--augment-shift", "1",
        "--output", "softmax", "--loss", "ce", "--reduction", "mean", "--batch-size", "50", "--threads", "1",
        "--no-early-stop", "--quiet", "--json",
    ]
    cmd = [sys.executable, "-m", "bioplausible.cli", "train", *args]
    ref = json.loads(subprocess.run(cmd + ["--out", str(tmp_path / "ref")], check=True, capture_output=True,
                                    text=True).stdout)
    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if len(read_metrics(run)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_metrics(run))
    assert 2 <= done < 5, "the kill should land mid-run"
    res = json.loads(subprocess.run(cmd + ["--out", str(run), "--resume"], check=True, capture_output=True,
                                    text=True).stdout)
    for k in ("test_error", "train_loss", "train_error", "epochs", "test_loss"):
        assert res[k] == ref[k], k
    assert read_metrics(run)[-1]["train_loss"] == read_metrics(tmp_path / "ref")[-1]["train_loss"]
    a, _ = read_checkpoint(run / "checkpoint.safetensors")
    b, _ = read_checkpoint(tmp_path / "ref" / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights, feedback, inverses, optimizer, RNG states
    # a finished run resumes to its summary without training again
    again = json.loads(subprocess.run(cmd + ["--out", str(run), "--resume"], check=True, capture_output=True,
                                      text=True).stdout)
    assert again["test_error"] == ref["test_error"]


@needs_mnist
def test_checkpoint_holds_feedback_and_refuses_other_architecture(mnist, tmp_path):
    train(quick("dfa", epochs=1), out=tmp_path / "r", data=mnist)
    tensors, meta = read_checkpoint(tmp_path / "r" / "checkpoint.safetensors")
    assert "rule.B1" in tensors and tensors["rule.B1"].shape == (128, 10)
    assert meta["architecture"]["sizes"] == [784, 128, 10]
    from bioplausible import MLP, make_rule
    from bioplausible.checkpoint import load_checkpoint
    from bioplausible.training import make_optimizer

    cfg = quick("dfa", hidden_sizes=[64])
    net = MLP([784, 64, 10], output="softmax", loss="ce", reduction="mean")
    rule = make_rule("dfa", net)
    with pytest.raises(UserError, match=r"architecture mismatch in 'sizes'.*\[784, 128, 10\].*\[784, 64, 10\]"):
        load_checkpoint(tmp_path / "r" / "checkpoint.safetensors", net=net, rule=rule,
                        optimizer=make_optimizer(cfg, net, rule))


@needs_mnist
def test_existing_run_dir_needs_resume_and_same_config(mnist, tmp_path):
    train(quick("bp", epochs=1), out=tmp_path / "r", data=mnist)
    with pytest.raises(UserError, match="already holds a run"):
        train(quick("bp", epochs=1), out=tmp_path / "r", data=mnist)
    with pytest.raises(UserError, match="different config"):
        train(quick("bp", epochs=1, lr=0.1), out=tmp_path / "r", resume=True, data=mnist)


def test_unwritable_out_is_reported_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        train(quick("bp"), out=blocker / "sub")


def test_two_processes_cannot_train_in_one_run_dir(tmp_path):
    import fcntl

    out = tmp_path / "r"
    out.mkdir()
    with open(out / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a concurrent trainer would hold it
        with pytest.raises(UserError, match="another process is training in"):
            train(quick("bp"), out=out)


def test_diverged_metrics_are_strict_json_and_presets_are_not_shared(tmp_path):
    from bioplausible.checkpoint import finite_json
    from bioplausible.presets import preset_values

    assert finite_json({"a": float("nan"), "b": [1.0, float("inf")], "c": "inf"}) == {"a": None, "b": [1.0, None], "c": "inf"}
    v = preset_values("tuned", "dtp", "mnist")
    v["rule_options"]["target_step"] = 99.0
    assert preset_values("tuned", "dtp", "mnist")["rule_options"]["target_step"] != 99.0
