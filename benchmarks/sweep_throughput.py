"""Sweep throughput: the ``quick`` spec with 1 local worker vs N local workers (fresh stores each time).

    python benchmarks/sweep_throughput.py [--workers 2] [--spec quick] [--repeat 1]

Prints one JSON line per sweep and the speed-up (runs per second with N workers / with 1 worker).
Worker start-up and dataset loading are part of the measured wall time, as in real use. The machine's
load average is printed too: on a shared machine other processes take cores and shrink the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from bioplausible.experiments import Store, load_spec, sweep


def one(spec_name: str, workers: int) -> dict:
    spec = load_spec(spec_name)
    with tempfile.TemporaryDirectory() as d, Store(d) as store:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = sweep(spec, store, workers=workers, progress=False)
        wall = time.perf_counter() - t0
    return {"spec": spec_name, "workers": workers, "runs": res["ran"], "failed": res["failed"],
            "wall_seconds": round(wall, 2), "runs_per_second": round(res["ran"] / wall, 4),
            "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="quick")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    rates = {1: [], a.workers: []}
    for _ in range(a.repeat):
        for w in (1, a.workers):
            r = one(a.spec, w)
            rates[w].append(r["runs_per_second"])
            print(json.dumps(r), flush=True)
    best = {w: max(v) for w, v in rates.items()}
    print(json.dumps({"speedup": round(best[a.workers] / best[1], 3), "workers": a.workers,
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
