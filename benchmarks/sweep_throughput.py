"""Sweep throughput: the ``quick`` spec with 1 local worker vs N local workers (fresh stores each time).

    python benchmarks/sweep_throughput.py [--workers 2] [--spec quick] [--repeat 1] [--threads 1] [--cli]

Prints one JSON line per sweep and the speed-up (runs per second with N workers / with 1 worker).
``--threads T`` fixes the torch threads of every run (default 1), so both sweeps do the same work per
run and the ratio measures how the sweep scales over worker processes; ``--train-subset N`` overrides the spec's training-set size
(the shipped ``quick`` runs take ~0.25 s each, so its sweeps are dominated by starting the worker
processes: importing torch and loading the datasets). ``--threads auto`` keeps the
sweep's own choice (CPU cores / workers: one worker then runs each epoch on every core, so a second
worker has little left to add on a small machine).
Worker start-up (a fork from the local backend's fork server) and dataset loading are part of the
measured wall time, as in real use. The fork server itself (one per driver process: it imports torch and
the library once, ~2 s) is started before the first timed sweep: a long-lived driver (a notebook, a
script running several sweeps) pays it once; ``--cli`` instead times whole
``bioplausible sweep SPEC --workers N`` commands in fresh processes (the driver's imports, the fork
server and everything else included; threads per run: the sweep's own choice). The machine's load
average is printed too: on a shared machine other processes take cores and shrink the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bioplausible.errors import UserError
from bioplausible.experiments import Store, load_spec, sweep
from bioplausible.experiments.runner import start_worker_server


def one(spec_name: str, workers: int, threads: int | None = 1, **fixed) -> dict:
    spec = load_spec(spec_name, **({"threads": threads} if threads else {}), **fixed)
    with tempfile.TemporaryDirectory() as d, Store(d) as store:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = sweep(spec, store, workers=workers, progress=False)
        wall = time.perf_counter() - t0
    return {"spec": spec_name, **fixed, "workers": workers, "threads_per_run": threads or "auto",
            "runs": res["ran"], "failed": res["failed"], "wall_seconds": round(wall, 2), "runs_per_second": round(res["ran"] / wall, 4),
            "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0]}


def one_cli(spec_name: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bioplausible", "sweep", spec_name, "--workers", str(workers),
                               "--store", d, "--quiet"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bioplausible sweep failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        with Store(d) as store:
            ran = sum(1 for r in store.runs() if r["status"] in ("completed", "converged"))
    return {"spec": spec_name, "mode": "cli", "workers": workers, "threads_per_run": "auto", "runs": ran,
            "wall_seconds": round(wall, 2), "runs_per_second": round(ran / wall, 4),
            "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0]}


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; accepted: a positive integer")
    return v


def _threads(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; accepted: a positive integer or 'auto'") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="quick")
    ap.add_argument("--workers", type=_positive, default=2)
    ap.add_argument("--repeat", type=_positive, default=1)
    ap.add_argument("--threads", type=_threads, default=1, help="torch threads per run (default 1) or 'auto'")
    ap.add_argument("--train-subset", type=_positive, default=None,
                    help="override the spec's training examples per run (longer runs: less start-up share)")
    ap.add_argument("--cli", action="store_true",
                    help="time whole `bioplausible sweep` commands in fresh processes instead (threads: auto)")
    a = ap.parse_args()
    try:
        load_spec(a.spec)
    except UserError as exc:
        ap.error(str(exc))
    threads = a.threads
    fixed = {"train_subset": a.train_subset} if a.train_subset else {}
    if a.cli and (fixed or a.threads != 1):
        ap.error("--cli times the spec as shipped: it takes neither --train-subset nor --threads")
    if not a.cli:
        t0 = time.perf_counter()
        start_worker_server(wait=True)
        print(f"[INFO] fork server started and ready before timing ({time.perf_counter() - t0:.2f} s)", flush=True)
    rates = {1: [], a.workers: []}
    for _ in range(a.repeat):
        for w in (1, a.workers):
            r = one_cli(a.spec, w) if a.cli else one(a.spec, w, threads, **fixed)
            rates[w].append(r["runs_per_second"])
            print(json.dumps(r), flush=True)
    best = {w: max(v) for w, v in rates.items()}
    print(json.dumps({"speedup": round(best[a.workers] / best[1], 3), "workers": a.workers,
                      "threads_per_run": "auto" if a.cli or not threads else threads,
                      "mode": "cli" if a.cli else "in-process", "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
