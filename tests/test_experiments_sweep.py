"""Sweeps end to end on real MNIST subsets: results equal a direct ``train``, failures are recorded and the
sweep goes on, a second sweep runs nothing, and a SIGKILLed sweep resumes to identical numbers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bioplausible.cli import main
from bioplausible.experiments import Store, load_spec, sweep
from bioplausible.training import read_metrics, train
from helpers import needs_mnist

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name = "tiny"
[base]
hidden_sizes = [32]
epochs = 2
lr = 0.01
stop_delta = 0.0
train_subset = 600
test_subset = 300
batch_size = 100
[[grid]]
dataset = "mnist"
rule = ["bp", "dfa"]
[[grid]]                       # fails inside the run on a machine without CUDA
dataset = "mnist"
rule = "fa"
device = "cuda"
[[grid]]                       # diverges: a huge learning rate with summed MSE
dataset = "mnist"
rule = "bp"
lr = 1e38
[[grid]]                       # fails: CIFAR-100 is not available on this machine
dataset = "cifar100"
rule = "bp"
data_dir = "{empty}"
"""


pytestmark = needs_mnist


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "empty").mkdir()
    spec_path = d / "tiny.toml"
    spec_path.write_text(TINY.replace("{empty}", str(d / "empty")))
    store = Store(d / "store")
    res = sweep(load_spec(spec_path), store, workers=2, progress=False)
    return spec_path, store, res


def test_sweep_records_results_failures_and_divergence_and_goes_on(tiny, monkeypatch):
    spec_path, store, res = tiny
    assert (res["total"], res["ran"], res["skipped"], res["failed"], res["diverged"]) == (5, 5, 0, 2, 1)
    rows = {(r["rule"], r["dataset"], r["config"]["lr"], r["config"]["batch_size"]): r for r in store.runs()}
    fa = rows[("fa", "mnist", 0.01, 100)]
    if not torch.cuda.is_available():
        assert fa["status"] == "failed" and fa["error"].startswith("UserError: device: 'cuda' requested")
    c100 = rows[("bp", "cifar100", 0.01, 100)]
    if c100["status"] == "failed":  # a machine that has CIFAR-100 in its system paths would train it
        assert c100["error"].startswith("dataset not available: cifar100")
    div = rows[("bp", "mnist", 1e38, 100)]
    assert div["status"] == "diverged" and "non-finite" in div["error"]
    # the finished runs equal a direct train() of the same config, epoch by epoch
    for rule in ("bp", "dfa"):
        r = rows[(rule, "mnist", 0.01, 100)]
        assert r["status"] == "completed" and r["epochs"] == 2
        spec_run = next(x for x in load_spec(spec_path).runs if x.hash == r["hash"])
        cfg = spec_run.config
        cfg.threads = 1
        direct = train(cfg, progress=False)
        assert r["test_error"] == direct["test_error"]
        stored = store.metrics(r["hash"])
        assert [m["train_loss"] for m in stored] == [m["train_loss"] for m in read_metrics(store.run_dir(r["hash"]))]
        assert stored[-1]["test_error"] == direct["test_error"]
        assert r["summary"]["train_loss"] == direct["train_loss"]
        assert r["host"] and r["seconds"] > 0


def test_second_sweep_runs_nothing_in_seconds(tiny):
    spec_path, store, _ = tiny
    t0 = time.time()
    res = sweep(load_spec(spec_path), store, workers=2, progress=False)
    assert (res["ran"], res["skipped"]) == (0, 5)
    assert time.time() - t0 < 10


def test_runs_command_lists_filters_exports_and_shows(tiny, capsys, tmp_path):
    spec_path, store, _ = tiny
    root = str(store.root)
    assert main(["runs", "--store", root, "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert out.count("failed") == 2 and "completed" not in out
    assert main(["runs", "--store", root, "--where", "rule=dfa", "--csv", str(tmp_path / "r.csv")]) == 0
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert len(lines) == 2 and ",dfa," in lines[1]
    h = next(r["hash"] for r in store.runs(rule="dfa"))
    assert main(["runs", "show", h[:7], "--store", root, "--metrics"]) == 0
    out = capsys.readouterr().out
    assert f'"hash": "{h}"' in out and '"epoch": 2' in out
    assert main(["runs", "--store", root, "--status", "bogus"]) == 2
    assert "--status: invalid value 'bogus'" in capsys.readouterr().err
    assert main(["runs", "--store", root, "--where", "colour=red"]) == 2
    assert "--where: unknown key 'colour'" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.toml"), "--store", root]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bioplausible: error: spec:") and "\n" not in err


KILL_SPEC = """
name = "kill"
[base]
hidden_sizes = [128]
epochs = 6
lr = 0.005
stop_delta = 0.0
train_subset = 2000
test_subset = 500
batch_size = 50
[[grid]]
dataset = "mnist"
rule = ["dfa"]
"""


def _sweep_cmd(spec, store):
    return [sys.executable, "-m", "bioplausible.cli", "sweep", str(spec), "--store", str(store), "--workers", "1",
            "--quiet"]


def test_sigkill_mid_sweep_then_restart_gives_the_same_numbers(tmp_path):
    spec = tmp_path / "kill.toml"
    spec.write_text(KILL_SPEC)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = load_spec(spec).runs[0]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_sweep_cmd(spec, killed), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = killed / "runs" / run.hash / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, mid-epoch
    proc.wait()
    done_before = len(metrics.read_text().splitlines())
    assert 2 <= done_before < 6
    with Store(killed) as st:
        assert st.get(run.hash)["status"] == "running"  # its owner is dead: the next sweep takes over
    r = subprocess.run(_sweep_cmd(spec, killed), env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr
    clean = tmp_path / "clean"
    r = subprocess.run(_sweep_cmd(spec, clean), env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr
    with Store(killed) as a, Store(clean) as b:
        ra, rb = a.get(run.hash), b.get(run.hash)
        assert ra["status"] == rb["status"] == "completed"
        ma, mb = a.metrics(run.hash), b.metrics(run.hash)
    keys = ("epoch", "train_loss", "train_error", "test_error", "test_loss", "angle_1")
    assert [[m[k] for k in keys] for m in ma] == [[m[k] for k in keys] for m in mb]
    assert len(ma) == 6 and ra["test_error"] == rb["test_error"]
    # the epochs finished before the kill were kept, not retrained
    lines = (killed / "runs" / run.hash / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[done_before - 1])["epoch"] == done_before


def test_workers_use_the_drivers_environment_and_directory_of_the_moment(tmp_path, monkeypatch):
    """Local workers are forked from a fork server started earlier, with the environment and working
    directory of that moment; each run still sees the driver's own at submission (as a spawned worker
    would): a dataset path removed from the environment after the server started is not used, and a
    relative store path is the driver's current one."""
    from bioplausible.experiments.runner import start_worker_server

    start_worker_server(wait=True)  # the server keeps the environment with a working BIOPLAUSIBLE_DATA
    spec_path = tmp_path / "one.toml"
    spec_path.write_text(TINY.split("[[grid]]")[0] + '[[grid]]\ndataset = "mnist"\nrule = "bp"\n')
    monkeypatch.setenv("BIOPLAUSIBLE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr("bioplausible.data.store.SYSTEM_DIRS", ())  # (workers are forked: no effect there)
    monkeypatch.setenv("BIOPLAUSIBLE_CACHE", str(tmp_path / "empty-cache"))
    with Store(tmp_path / "s1") as store:
        res = sweep(load_spec(spec_path), store, workers=1, progress=False)
        (run,) = store.runs()
    assert res["failed"] == 1 and "dataset not available" in run["error"]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    with Store("relative-store") as store:
        res = sweep(load_spec(spec_path), store, workers=1, progress=False)
        (run,) = store.runs()
    assert res["failed"] == 0 and run["status"] == "completed"
    assert (tmp_path / "relative-store" / "runs" / run["hash"] / "summary.json").is_file()


def test_spawned_workers_where_there_is_no_fork_server(tmp_path, monkeypatch):
    """On a platform without ``forkserver`` (Windows) the local backend spawns its workers instead."""
    import multiprocessing

    from bioplausible.experiments import runner

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert runner._context().get_start_method() == "spawn"
    spec_path = tmp_path / "one.toml"
    spec_path.write_text(TINY.split("[[grid]]")[0] + '[[grid]]\ndataset = "mnist"\nrule = "dfa"\n')
    with Store(tmp_path / "s") as store:
        res = sweep(load_spec(spec_path), store, workers=1, progress=False)
        (run,) = store.runs()
    assert res["failed"] == 0 and run["status"] == "completed"
