"""Sweeps under faults (issue 6): two sweeps of one spec on one store at once, a sweep killed 5 times
at random moments and restarted, a diverging run among others, an unwritable store.

The spec is a tiny one written here (4 runs on 2,000 real MNIST images, 20 epochs each): one run
diverges on purpose (lr 100, linear outputs) and one clips without noise (ε = ∞), so the same sweeps
also show that a sweep carries on past a diverged run and that misused privacy reaches the store as
"epsilon = inf". The same procedure on the shipped ``quick`` spec (20 runs) is in docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from bioplausible.cli import main
from bioplausible.experiments.store import FINAL, Store
from bioplausible.training import read_metrics
from helpers import needs_mnist

SPEC = """
name = "faults"
[base]
preset = "paper"
dataset = "mnist"
hidden_sizes = [64]
epochs = 20
stop_delta = 0.0
train_subset = 2000
test_subset = 300
batch_size = 50
lr = 0.01
threads = 1

[[grid]]
rule = ["bp", "dfa"]

[[grid]]
rule = "bp"
hidden = "relu"
output = "linear"
lr = 100.0

[[grid]]
rule = "fa"
clip_norm = 1.0
"""
TIMING = ("seconds", "eval_seconds")


def sweep_cmd(spec, store):
    return [sys.executable, "-m", "bioplausible.cli", "sweep", str(spec), "--store", str(store), "--workers", "1"]


def results(store_dir) -> dict:
    """hash -> everything a sweep's result is made of (minus wall-clock times)."""
    with Store(store_dir, create=False) as st:
        out = {}
        for r in st.runs():
            summary = {k: v for k, v in r["summary"].items() if k not in ("seconds", "train_seconds")}
            metrics = [{k: v for k, v in m.items() if k not in TIMING} for m in st.metrics(r["hash"])]
            out[r["hash"]] = (r["status"], r["epochs"], r["test_error"], summary, metrics)
    return out


def check_store_integrity(store_dir, n_runs) -> None:
    con = sqlite3.connect(store_dir / "store.sqlite")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT hash, epoch FROM metrics GROUP BY hash, epoch HAVING COUNT(*) > 1").fetchall() == []
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == n_runs
        # every run's metrics are epochs 1..E with nothing missing or left over from an earlier try
        for h, n, lo, hi, epochs in con.execute(
            "SELECT m.hash, COUNT(*), MIN(m.epoch), MAX(m.epoch), r.epochs FROM metrics m JOIN runs r "
            "ON r.hash = m.hash GROUP BY m.hash"
        ):
            assert (n, lo, hi) == (epochs, 1, epochs), h
    finally:
        con.close()


def epochs_done(store_dir) -> int:
    """Epochs recorded in the run directories of a store (progress, seen from outside)."""
    return sum(len(p.read_text().splitlines()) for p in store_dir.glob("runs/*/metrics.jsonl"))


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory):
    """Two sweeps of the same spec started together on one store (the uninterrupted reference)."""
    root = tmp_path_factory.mktemp("sweeps")
    spec = root / "faults.toml"
    spec.write_text(SPEC)
    store = root / "together"
    procs = [subprocess.Popen(sweep_cmd(spec, store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    return spec, store, procs, outs


@needs_mnist
def test_two_sweeps_at_once_run_each_run_exactly_once(concurrent):
    spec, store, procs, outs = concurrent
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    ran = [int(re.search(r"(\d+) ran", out).group(1)) for out, _ in outs]
    assert sum(ran) == 4, outs  # between them, each of the 4 runs trained once
    finished = [h for _, err in outs for h in re.findall(r"^(?:done|DIVERGED|FAIL) .*\[([0-9a-f]{8})\]", err, re.M)]
    assert sorted(finished) == sorted(set(finished)) and len(finished) == 4, outs
    check_store_integrity(store, 4)
    res = results(store)
    statuses = sorted(s for s, *_ in res.values())
    assert statuses == ["completed", "completed", "completed", "diverged"]


@needs_mnist
def test_a_diverged_run_is_recorded_and_the_sweep_carries_on(concurrent):
    _, store, _, _ = concurrent
    with Store(store, create=False) as st:
        rows = {(r["rule"], r["config"]["output"], r["config"]["clip_norm"]): r for r in st.runs()}
    bad = rows[("bp", "linear", None)]
    assert bad["status"] == "diverged" and bad["error"] == "non-finite loss or weights in epoch 1"
    assert bad["summary"]["diverged_epoch"] == 1
    for key in (("bp", "sigmoid", None), ("dfa", "sigmoid", None), ("fa", "sigmoid", 1.0)):
        assert rows[key]["status"] == "completed" and rows[key]["epochs"] == 20
    clipped = rows[("fa", "sigmoid", 1.0)]["summary"]
    assert clipped["epsilon"] == "inf" and clipped["private"] is False
    assert "per-example clipping without noise" in clipped["privacy"]


def kill_and_restart(cmd, store, rng, kills=5, max_delay=0.2) -> list:
    """Start ``cmd`` (a sweep on ``store``) and SIGKILL it, ``kills`` times. Each kill lands, by a draw
    of ``rng``, either at a random moment of the start-up (imports, spec, store, spawning the worker)
    or at a random moment (up to ``max_delay`` s) after the next epoch is recorded (training,
    checkpoint, metrics or store writes). Returns, per kill, the store's statuses and epochs recorded."""
    seen = []
    for _ in range(kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            start = epochs_done(store)
            deadline = time.time() + 300
            while epochs_done(store) == start and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, max_delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(1.5)  # let the orphaned worker notice its parent is gone and exit
        statuses = []
        if (store / "store.sqlite").exists():
            with Store(store, create=False) as st:
                statuses = [r["status"] for r in st.runs()]
        seen.append((statuses, epochs_done(store)))
    return seen


def unfinished(seen) -> int:
    """How many kills landed before the sweep was done (no runs registered yet, or some unfinished)."""
    return sum(not statuses or any(s not in FINAL for s in statuses) for statuses, _ in seen)


@needs_mnist
@pytest.mark.slow
def test_sweep_killed_5_times_at_random_moments_ends_with_the_uninterrupted_results(concurrent, tmp_path, capsys):
    """SIGKILL the sweep driver 5 times at seeded random moments (its workers stop within a second as
    they see their parent gone), restart it each time; the store then holds exactly the results of the
    uninterrupted sweeps: same runs, statuses, epochs, summaries and per-epoch metrics."""
    spec, reference, _, _ = concurrent
    store = tmp_path / "killed"
    seen = kill_and_restart(sweep_cmd(spec, store), store, random.Random(5))
    assert unfinished(seen) >= 3, f"most kills should land while runs are unfinished: {seen}"
    # the last restart runs to the end (in this process, to spare a start-up; its workers are processes)
    assert main(["sweep", str(spec), "--store", str(store), "--workers", "1", "--quiet"]) == 0
    check_store_integrity(store, 4)
    assert results(store) == results(reference)
    capsys.readouterr()
    assert main(["sweep", str(spec), "--store", str(store), "--workers", "1"]) == 0
    assert "all 4 runs already finished; nothing to do" in capsys.readouterr().err


@needs_mnist
@pytest.mark.skipif(not os.environ.get("BIOPLAUSIBLE_QUICK_KILLS"),
                    reason="the shipped quick spec killed 5 times takes minutes; opt in: BIOPLAUSIBLE_QUICK_KILLS=1")
def test_quick_spec_killed_5_times_ends_with_the_uninterrupted_results(tmp_path):
    """The issue's acceptance check on the shipped ``quick`` spec (20 runs): an uninterrupted sweep,
    then a sweep killed 5 times at seeded random moments and restarted; same set of results."""
    t0 = time.time()
    ref = tmp_path / "uninterrupted"
    cmd = [sys.executable, "-m", "bioplausible.cli", "sweep", "quick", "--workers", "2", "--quiet", "--store"]
    subprocess.run([*cmd, str(ref)], check=True, timeout=3600)
    t1 = time.time()
    store = tmp_path / "killed"
    seen = kill_and_restart([*cmd, str(store)], store, random.Random(int(os.environ["BIOPLAUSIBLE_QUICK_KILLS"])),
                            max_delay=3.0)
    subprocess.run([*cmd, str(store)], check=True, timeout=3600)
    t2 = time.time()
    print(f"\nuninterrupted {t1 - t0:.0f}s; killed+restarted {t2 - t1:.0f}s; at each kill (statuses, epochs):")
    for statuses, epochs in seen:
        print(f"  {epochs:3d} epochs recorded; " + ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))))
    assert unfinished(seen) == 5, seen
    check_store_integrity(store, 20)
    assert results(store) == results(ref)
    print(f"identical: {len(results(ref))} runs, statuses {sorted(set(r[0] for r in results(ref).values()))}")


class _FullDisk:
    """A SQLite connection on a full disk: reads work, every write fails as SQLite reports it."""

    def __init__(self, con):
        object.__setattr__(self, "_con", con)

    def _check(self, sql):
        if sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql, *args):
        self._check(sql)
        return self._con.execute(sql, *args)

    def executemany(self, sql, *args):
        self._check(sql)
        return self._con.executemany(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)

    def __setattr__(self, name, value):
        setattr(self._con, name, value)


def test_full_disk_under_the_store_is_one_line(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    real = sqlite3.connect
    monkeypatch.setattr("bioplausible.experiments.store.sqlite3.connect", lambda *a, **k: _FullDisk(real(*a, **k)))
    try:
        code = main(["sweep", str(spec), "--store", str(tmp_path / "store"), "--quiet"])
    except sqlite3.OperationalError:
        code = "traceback"
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "disk is full" in err, (code, err)


def test_unwritable_store_is_reported_before_anything_runs(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["sweep", str(spec), "--store", str(blocker / "store")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"store: cannot open {str(blocker / 'store' / 'store.sqlite')!r}" in err and "choose a writable" in err


@needs_mnist
def test_sigterm_to_the_sweep_driver_checkpoints_and_resumes(tmp_path):
    """SIGTERM to the driver alone: the training worker finishes its epoch and checkpoints, and the run
    is recorded as interrupted (not lost, not left 'running'); the next sweep resumes it from there."""
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace("epochs = 20", "epochs = 5000").replace('rule = ["bp", "dfa"]', 'rule = ["bp"]')
                    .split("[[grid]]\nrule = \"bp\"\nhidden")[0])
    store = tmp_path / "store"
    proc = subprocess.Popen(sweep_cmd(spec, store) + ["--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.2)
        if (store / "store.sqlite").is_file():
            with Store(store, create=False) as st:
                if any(st.metrics(r["hash"]) for r in st.runs()):
                    break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert "Traceback" not in err, err
    with Store(store, create=False) as st:
        (row,) = st.runs()
        assert row["status"] == "interrupted", row
        done = len(st.metrics(row["hash"]))
        assert 1 <= done < 5000
    run_dir = store / "runs" / row["hash"]
    assert len(read_metrics(run_dir)) == done and (run_dir / "checkpoint.safetensors").is_file()
    # the next sweep picks the run up from its checkpoint (stopped again after it made progress)
    proc = subprocess.Popen(sweep_cmd(spec, store) + ["--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(read_metrics(run_dir)) <= done:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=240)
    rows = read_metrics(run_dir)
    assert len(rows) > done and [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
