"""Train the `tuned` preset for every (rule, dataset) of the foundation issue's table and print it.

    python scripts/reproduce_tuned.py --out runs/tuned [--threads 1] [--only mnist-dfa,...]

Each run is resumable (re-running skips finished runs and resumes interrupted ones). The table in
docs/tuning.md was produced by this script.
"""

import argparse
import json
from pathlib import Path

from bioplausible import resolve, train
from bioplausible.network import describe_sizes

JOBS = [  # (short name, dataset, rule)
    ("mnist-bp", "mnist", "bp"),
    ("mnist-dfa", "mnist", "dfa"),
    ("mnist-dtp", "mnist", "dtp"),
    ("fmnist-bp", "fashion-mnist", "bp"),
    ("fmnist-dfa", "fashion-mnist", "dfa"),
    ("cifar10-bp", "cifar10", "bp"),
    ("cifar10-dfa", "cifar10", "dfa"),
    ("mnist-fa", "mnist", "fa"),
    ("mnist-ifa", "mnist", "ifa"),
]
TARGETS = {"mnist-bp": 1.6, "mnist-fa": 1.8, "mnist-dfa": 1.8, "mnist-ifa": 1.9, "mnist-dtp": 2.5,
           "fmnist-bp": 10.5, "fmnist-dfa": 11.5, "cifar10-bp": 48.0, "cifar10-dfa": 52.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/tuned")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", help="comma-separated short names, e.g. mnist-bp,mnist-dfa")
    ap.add_argument("--table-only", action="store_true", help="print the table of finished runs")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for short, dataset, rule in JOBS:
        if only and short not in only:
            continue
        out = Path(args.out) / f"tuned-{short}"
        if args.table_only:
            if not (out / "summary.json").is_file():
                continue
            s = json.loads((out / "summary.json").read_text())
        else:
            cfg = resolve(preset="tuned", rule=rule, dataset=dataset, threads=args.threads)
            s = train(cfg, out=out, resume=True, progress=False)
            print(json.dumps({"name": short, **s}), flush=True)
        rows.append((short, s))
    print("\n| dataset | rule | network | test error | target | epochs | seed | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for short, s in rows:
        net = describe_sizes(s["sizes"])
        print(f"| {s['dataset']} | {s['rule']} | {net} | {100 * s['test_error']:.2f}% | ≤ {TARGETS[short]}% | "
              f"{s['epochs']} | {s['seed']} | {s['train_seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
