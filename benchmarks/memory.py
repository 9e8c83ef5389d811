"""Peak resident memory per configuration: ``python -m benchmarks.memory``.

Each configuration runs in a fresh child process that imports everything, loads the data, resets the
kernel's peak-RSS mark (``/proc/self/clear_refs``), trains ``--batches`` batches and reads the peak
(``VmHWM``). Reported: the process peak and the *training increment* (peak minus the resident memory
just before training, i.e. what training needs beyond the loaded data set). Our rules run through
``bioplausible.training.train`` (clean and DP-SGD); peers through :mod:`benchmarks.peers`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import torch

from bioplausible.checkpoint import atomic_write_json
from bioplausible.cli import Parser
from bioplausible.errors import UserError

from . import common, flops
from .peers import PEERS, Unavailable, make_peer


def child(args) -> dict:
    from bioplausible.training import keep_freed_memory, train

    keep_freed_memory()
    torch.set_num_threads(1)
    for mod in ("opacus", "biotorch.module.biomodule"):  # import cost is not training memory
        try:
            __import__(mod)
        except Exception:  # noqa: BLE001 - the peer reports it below
            pass
    ds = common.load(args.dataset, args.data_dir)
    B = int(args.batch_size)
    n = min(int(args.batches) * B, ds.x_train.shape[0])
    sizes = [ds.x_train.shape[1], *common.parse_list("--hidden-sizes", args.hidden_sizes, kind=int), ds.n_classes]
    name = args.child
    if name in PEERS:
        x = ds.x_train[:n].clone()
        t = torch.zeros(n, sizes[-1])
        t.scatter_(1, ds.y_train[:n].view(-1, 1), 1.0)
    gc.collect()
    if not common.reset_peak():
        raise SystemExit("cannot reset the peak-RSS mark on this system")
    base = common.rss_now()
    t0 = time.perf_counter()
    if name in PEERS:
        try:
            make_peer(name, sizes, x, t, B).run(None)
        except Unavailable as exc:
            return {"skipped": str(exc)}
    else:
        rule, _, dp = name.partition("+")
        cfg = common.our_config(args.dataset, rule, private=bool(dp), threads=1, device="cpu", batch_size=B,
                                hidden_sizes=sizes[1:-1], train_subset=n, data_dir=args.data_dir)
        train(cfg, data=ds, progress=False)
    peak = common.peak_rss()
    return {"peak_mb": peak / 2**20, "base_mb": base / 2**20, "increment_mb": (peak - base) / 2**20,
            "batches": len(flops.epoch_batches(n, B)), "seconds": time.perf_counter() - t0}


def build_parser():
    p = Parser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--configs", default="bp,dfa,dtp,bp+dp,dfa+dp,dtp+dp,autograd,opacus,opacus-ghost",
                   help="our rules (NAME or NAME+dp) and peers")
    p.add_argument("--batches", default="20", help="batches trained per configuration (default: 20)")
    p.add_argument("--batch-size", default="200")
    p.add_argument("--hidden-sizes", default="800")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(common.RESULTS / "memory.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dataset", default="mnist", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.child:
            print(json.dumps(child(args)))
            return 0
        datasets = common.parse_list("--datasets", args.datasets, ("mnist", "cifar10", "fashion-mnist"))
        accepted = [*flops.RULES, *(f"{r}+dp" for r in flops.RULES), *PEERS]
        configs = common.parse_list("--configs", args.configs, accepted)
        for opt in ("batches", "batch_size"):
            common.parse_list(f"--{opt.replace('_', '-')}", getattr(args, opt), kind=int)
        if any(c.endswith("+dp") for c in configs):
            why = common.dp_available()
            if why:
                raise UserError(f"--configs: DP rows asked for but {why}")
        result = {"machine": common.machine(torch.device("cpu")), "batches": int(args.batches),
                  "batch_size": int(args.batch_size), "datasets": {}}
        for d in datasets:
            rows = {}
            for c in configs:
                cmd = [sys.executable, "-m", "benchmarks.memory", "--child", c, "--dataset", d, "--batches",
                       args.batches, "--batch-size", args.batch_size, "--hidden-sizes", args.hidden_sizes]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                if proc.returncode != 0:
                    rows[c] = {"error": proc.stderr.strip().splitlines()[-1:] or ["exit %d" % proc.returncode]}
                else:
                    rows[c] = json.loads(proc.stdout.strip().splitlines()[-1])
                r = rows[c]
                if "increment_mb" in r:
                    print(f"  {d} {c:<14} peak {r['peak_mb']:8.1f} MB  training +{r['increment_mb']:7.1f} MB",
                          file=sys.stderr)
                else:
                    print(f"  {d} {c:<14} {r}", file=sys.stderr)
            result["datasets"][d] = rows
        atomic_write_json(args.out, result)
        print(table(result))
        return 0
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


def table(result) -> str:
    lines = []
    for d, rows in result["datasets"].items():
        lines += [f"\n{d}, {result['batches']} batches of {result['batch_size']}",
                  "| configuration | process peak MB | training increment MB | vs same rule clean |", "|---|---|---|---|"]
        for c, r in rows.items():
            if "increment_mb" not in r:
                lines.append(f"| {c} | – | – | {r.get('skipped') or r.get('error')} |")
                continue
            base = rows.get(c.split("+")[0], {}) if c.endswith("+dp") else (rows.get("autograd", {}) if c in PEERS
                                                                           and c != "autograd" else {})
            ratio = f"{r['increment_mb'] / base['increment_mb']:.2f}" if base.get("increment_mb") else "–"
            lines.append(f"| {c} | {r['peak_mb']:.1f} | {r['increment_mb']:.1f} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
