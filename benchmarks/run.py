"""The speed suite: ``python -m benchmarks.run`` (from the repository root).

In one process it

1. measures ``torch.mm``'s rate on every matrix shape the configurations use (per thread count),
2. computes each configuration's matrix-multiply floor (:mod:`benchmarks.flops`),
3. times, interleaved (a fresh random order in every repeat) and repeated, one training epoch of
   every configuration: our rules BP, FA, DFA, IFA, DTP through ``bioplausible.training.train`` (the
   code path users run), clean and under DP-SGD; the plain autograd loop; biotorch's DFA; Opacus'
   standard per-sample DP-SGD and its ghost clipping,
4. prints, per dataset and thread count, seconds per epoch (median, spread), % of floor, and the speed
   ratio to the plain autograd loop, checks the issue's targets, and writes JSON.

Peers that are not installed are reported as skipped with the reason. Opacus' standard mode is
roughly two orders of magnitude slower than the rest, so it is timed on ``--slow-batches`` batches and
scaled to an epoch (marked ``extrapolated``); everything else runs full epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch

from bioplausible.checkpoint import atomic_write_json
from bioplausible.cli import Parser
from bioplausible.errors import UserError

from . import common, flops
from .peers import PEERS, Unavailable, make_peer

DATASETS = ("mnist", "cifar10", "fashion-mnist")
SLOW_PEERS = ("opacus",)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="mnist,cifar10", help="comma-separated (default: mnist,cifar10)")
    p.add_argument("--threads", default="1,2", help="torch CPU thread counts (default: 1,2)")
    p.add_argument("--repeats", default="3", help="timed epochs per configuration (default: 3)")
    p.add_argument("--rules", default=",".join(flops.RULES), help="our rules (default: all)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"peers (default: {','.join(PEERS)}); 'none' for none")
    p.add_argument("--no-private", action="store_true", help="skip the DP-SGD rows")
    p.add_argument("--hidden-sizes", default="800", help="hidden widths (default: 800)")
    p.add_argument("--batch-size", default="200", help="default: 200")
    p.add_argument("--train-subset", default=None, help="time epochs over the first N examples only")
    p.add_argument("--slow-batches", default="4", help="batches timed for Opacus' standard mode (default: 4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--out", default=str(common.RESULTS / "suite.json"), help="JSON results file")
    p.add_argument("--seed", default="0", help="order of the interleaving (default: 0)")
    p.add_argument("--clock", default="wall", help="wall (default) or cpu: process CPU time, for 1-thread "
                   "rows on a shared, loaded machine (rows with more threads always use wall time)")
    p.set_defaults(func=main_args)
    return p


def _int(name, text, lo=1):
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise UserError(f"{name}: invalid value {text!r}; expected int") from None
    if v < lo:
        raise UserError(f"{name}: invalid value {text!r}; accepted: int >= {lo}")
    return v


def configurations(rules, peers, private: bool) -> list[dict]:
    cfgs = [{"name": r, "kind": "ours", "rule": r, "private": False} for r in rules]
    if private:
        cfgs += [{"name": f"{r}+dp", "kind": "ours", "rule": r, "private": True} for r in rules]
    for p in peers:
        from .peers import PEER_CLASSES

        c = PEER_CLASSES[p]
        cfgs.append({"name": p, "kind": "peer", "peer": p, "rule": c.floor_rule, "private": c.private})
    return cfgs


def time_ours(c, ds, dataset, threads, device, opts) -> tuple[float, int]:
    from bioplausible.training import train

    cfg = common.our_config(dataset, c["rule"], private=c["private"], threads=threads, device=str(device),
                            batch_size=opts["batch_size"], hidden_sizes=opts["hidden_sizes"],
                            train_subset=opts["train_subset"], data_dir=opts["data_dir"])
    with common.epoch_clock(opts["clock"] if threads == 1 else "wall"):
        summary = train(cfg, data=ds, progress=False)
    return float(summary["train_seconds"]), 0


def time_peer(c, ds, threads, device, opts, n, sizes) -> tuple[float, int]:
    torch.set_num_threads(threads)
    x = ds.x_train[:n].to(device)
    t = torch.zeros(n, sizes[-1], device=device)
    t.scatter_(1, ds.y_train[:n].view(-1, 1).to(device), 1.0)
    peer = make_peer(c["peer"], sizes, x, t, opts["batch_size"], device=device)
    batches = opts["slow_batches"] if c["peer"] in SLOW_PEERS else None
    seconds, done = peer.run(batches, clock=common.clock_fn(opts["clock"] if threads == 1 else "wall"))
    total = len(flops.epoch_batches(n, opts["batch_size"]))
    if done < total:
        return seconds * total / done, done
    return seconds, 0


def run_suite(args) -> dict:
    device = common.resolve_device(args.device)
    datasets = common.parse_list("--datasets", args.datasets, DATASETS)
    threads_list = common.parse_list("--threads", args.threads, kind=int)
    if device.type == "cuda":
        threads_list = threads_list[:1]
    repeats = _int("--repeats", args.repeats)
    rules = common.parse_list("--rules", args.rules, flops.RULES)
    peers = [] if args.peers == "none" else common.parse_list("--peers", args.peers, PEERS)
    hidden = common.parse_list("--hidden-sizes", args.hidden_sizes, kind=int)
    opts = {
        "batch_size": _int("--batch-size", args.batch_size),
        "hidden_sizes": hidden,
        "train_subset": _int("--train-subset", args.train_subset) if args.train_subset is not None else None,
        "slow_batches": _int("--slow-batches", args.slow_batches),
        "data_dir": args.data_dir,
        "clock": args.clock,
    }
    if args.clock not in ("wall", "cpu") or (args.clock == "cpu" and device.type == "cuda"):
        raise UserError(f"--clock: invalid value {args.clock!r}; accepted: wall, cpu (cpu only with --device cpu)")
    seed = _int("--seed", args.seed, lo=0)
    skipped = {}
    private = not args.no_private
    if private:
        why = common.dp_available()
        if why:
            skipped["our DP-SGD rows"] = why
            private = False
    available = []
    for p in peers:
        try:
            make_peer(p, [4, 3, 2], torch.zeros(4, 4), torch.zeros(4, 2), 2)
            available.append(p)
        except Unavailable as exc:
            skipped[p] = str(exc)
    cfgs = configurations(rules, available, private)
    result = {"machine": common.machine(device), "options": {**opts, "repeats": repeats, "threads": threads_list},
              "skipped": skipped, "datasets": {}}
    from bioplausible.training import keep_freed_memory

    result["machine"]["keep_freed_memory"] = keep_freed_memory()  # before any timing: peers get it too
    data = {d: common.load(d, args.data_dir) for d in datasets}
    order_rng = random.Random(seed)
    for d in datasets:
        ds = data[d]
        n = opts["train_subset"] or ds.x_train.shape[0]
        n = min(n, ds.x_train.shape[0])
        sizes = [ds.x_train.shape[1], *hidden, ds.n_classes]
        shape_counts = {c["name"]: flops.epoch_shapes(c["rule"], sizes, n, opts["batch_size"]) for c in cfgs}
        all_shapes = sorted({s for sc in shape_counts.values() for s in sc})
        entry = {"sizes": sizes, "n": n, "batch_size": opts["batch_size"], "threads": {}}
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        dp_steps = max(1, round(n / opts["batch_size"]))  # Poisson sampling: expected batches per epoch
        for th in threads_list:
            times = {c["name"]: [] for c in cfgs}
            floors = {c["name"]: [] for c in cfgs}
            extrapolated = {}
            rate_samples = {s: [] for s in all_shapes}
            noise_samples = []  # Gaussians per second of the DP-SGD noise sampler (auto: as training uses it)
            warm = {**opts, "train_subset": min(n, 10 * opts["batch_size"]), "slow_batches": 1}
            for c in cfgs:  # untimed warm-up: first-touch of memory, library caches, lazy imports
                if c["kind"] == "ours":
                    time_ours(c, ds, d, th, device, warm)
                else:
                    time_peer(c, ds, th, device, warm, warm["train_subset"], sizes)
            for rep in range(repeats):
                torch.set_num_threads(th)
                clk = common.clock_fn(opts["clock"] if th == 1 else "wall")
                rates = {s: flops.matmul_rate(*s, device=device, min_seconds=0.02, samples=3, clock=clk)
                         for s in all_shapes}
                for s, r in rates.items():
                    rate_samples[s].append(r)
                noise_samples.append(flops.normal_rate(n_params, device=device, clock=clk))
                for c in cfgs:
                    floors[c["name"]].append(flops.floor_seconds(shape_counts[c["name"]], rates))
                order = list(cfgs)
                order_rng.shuffle(order)
                for c in order:
                    if c["kind"] == "ours":
                        sec, ex = time_ours(c, ds, d, th, device, opts)
                    else:
                        sec, ex = time_peer(c, ds, th, device, opts, n, sizes)
                    times[c["name"]].append(sec)
                    if ex:
                        extrapolated[c["name"]] = ex
                    print(f"  {d} threads={th} rep {rep + 1}/{repeats} {c['name']:<14} {sec:8.3f} s", file=sys.stderr)
            rows = {}
            auto = common.summarize(times["autograd"])["median"] if "autograd" in times else None
            for c in cfgs:
                t = common.summarize(times[c["name"]])
                fl = common.summarize(floors[c["name"]])["median"]
                rows[c["name"]] = {
                    "kind": c["kind"], "rule": c["rule"], "private": c["private"],
                    "seconds": t, "floor_seconds": fl, "gflop": flops.epoch_flops(c["rule"], sizes, n,
                                                                                 opts["batch_size"]) / 1e9,
                    "pct_of_floor": 100 * fl / t["median"],
                    "speedup_vs_autograd": auto / t["median"] if auto else None,
                    "extrapolated_from_batches": extrapolated.get(c["name"]),
                }
                if c["private"]:
                    # the one cost DP-SGD cannot avoid: a fresh N(0, σ²C²) draw for every parameter, every step
                    rows[c["name"]]["noise_draw_seconds"] = dp_steps * n_params / statistics.median(noise_samples)
            entry["threads"][str(th)] = {
                "clock": opts["clock"] if th == 1 else "wall",
                "rows": rows,
                "matmul_gflops": {"x".join(map(str, s)): common.summarize([r / 1e9 for r in v])["median"]
                                  for s, v in rate_samples.items()},
            }
        result["datasets"][d] = entry
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    result["checks"] = checks(result)
    return result


def checks(result: dict) -> list[dict]:
    """The issue's targets, on 1 thread, per dataset (a target whose rows are missing is not listed)."""
    out = []
    for d, entry in result["datasets"].items():
        rows = entry["threads"].get("1", {}).get("rows")
        if not rows:
            continue

        def med(name):
            return rows[name]["seconds"]["median"] if name in rows else None

        def add(what, value, target, ok):
            out.append({"dataset": d, "check": what, "value": round(value, 3), "target": target,
                        "pass": None if ok is None else bool(ok)})

        for r in ("bp", "fa", "dfa", "ifa", "dtp"):
            if r in rows:
                add(f"{r} % of floor", rows[r]["pct_of_floor"], ">= 85", rows[r]["pct_of_floor"] >= 85)
            if r in rows and "autograd" in rows and r != "dtp":
                add(f"{r} speed-up vs autograd", med("autograd") / med(r), ">= 1.1", med("autograd") / med(r) >= 1.1)
        if "dfa" in rows and "biotorch-dfa" in rows:
            v = med("biotorch-dfa") / med("dfa")
            add("dfa speed-up vs biotorch DFA", v, ">= 1.1", v >= 1.1)
        for r in ("bp", "fa", "dfa", "ifa", "dtp"):
            if f"{r}+dp" not in rows or r not in rows:
                continue
            v = med(f"{r}+dp") / med(r)
            add(f"{r}+dp / {r} time", v, "<= 1.25", v <= 1.25)
            noise = rows[f"{r}+dp"].get("noise_draw_seconds")
            if noise:
                add(f"{r}+dp / ({r} + its noise draw, {noise:.3f} s)", med(f"{r}+dp") / (med(r) + noise), "info", None)
            if "opacus-ghost" in rows:
                v = med("opacus-ghost") / med(f"{r}+dp")
                add(f"{r}+dp speed-up vs opacus ghost", v, ">= 2", v >= 2)
            if "opacus" in rows:
                v = med("opacus") / med(f"{r}+dp")
                add(f"{r}+dp speed-up vs opacus per-sample", v, ">= 40", v >= 40)
        if "dtp" in rows and "bp" in rows:
            pred = rows["dtp"]["floor_seconds"] / rows["bp"]["floor_seconds"]
            obs = med("dtp") / med("bp")
            add("dtp/bp time (observed)", obs, f"~ floor ratio {pred:.3f}", obs <= pred / 0.85)
    return out


def table(result: dict) -> str:
    lines = []
    for d, entry in result["datasets"].items():
        for th, block in entry["threads"].items():
            sizes = "-".join(map(str, entry["sizes"]))
            lines.append(f"\n{d} {sizes}, batch {entry['batch_size']}, {entry['n']} examples, {th} thread(s), "
                         f"{block.get('clock', 'wall')} clock")
            lines.append(f"| configuration | s/epoch (median) | spread | floor s | % of floor | × vs autograd |")
            lines.append("|---|---|---|---|---|---|")
            for name, r in block["rows"].items():
                s = r["seconds"]
                sp = f"{s['min']:.3f}–{s['max']:.3f}"
                ex = f" (from {r['extrapolated_from_batches']} batches)" if r["extrapolated_from_batches"] else ""
                ratio = f"{r['speedup_vs_autograd']:.2f}" if r["speedup_vs_autograd"] else "–"
                lines.append(f"| {name}{ex} | {s['median']:.3f} | {sp} | {r['floor_seconds']:.3f} | "
                             f"{r['pct_of_floor']:.1f} | {ratio} |")
    if result["skipped"]:
        lines.append("\nskipped:")
        lines += [f"  {k}: {v}" for k, v in result["skipped"].items()]
    if result.get("checks"):
        lines.append("\ntargets (1 thread):")
        for c in result["checks"]:
            mark = "INFO" if c["pass"] is None else "PASS" if c["pass"] else "FAIL"
            tail = "" if c["pass"] is None else f" (target {c['target']})"
            lines.append(f"  [{mark}] {c['dataset']}: {c['check']} = {c['value']}{tail}")
    return "\n".join(lines)


def main_args(args) -> int:
    t0 = time.perf_counter()
    result = run_suite(args)
    result["wall_seconds"] = time.perf_counter() - t0
    out = args.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_write_json(out, result)
    print(table(result))
    print(f"\nwrote {out} ({result['wall_seconds']:.0f} s)")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
