"""How cost grows: ``python -m benchmarks.scaling``.

Seconds per epoch (through ``bioplausible.training.train``, one thread) against hidden width, depth
(number of hidden layers), batch size and number of training examples, for BP, DFA and DTP, clean and
under DP-SGD, on MNIST; each point also gets its matrix-multiply floor (:mod:`benchmarks.flops`) so
the growth can be read against the FLOP count. Writes JSON and a four-panel log-log plot.

Defaults (one axis varies, the others stay at the base point: width 800, 1 hidden layer, batch 200,
``--examples`` examples): widths 200…3200, depths 1…8 (width 800), batches 32…1024, examples
2000…16000.
"""

from __future__ import annotations

import sys
import time

import torch

from bioplausible.checkpoint import atomic_write_json
from bioplausible.cli import Parser
from bioplausible.errors import UserError

from . import common, flops

AXES = {
    "width": [200, 400, 800, 1600, 3200],
    "depth": [1, 2, 4, 8],
    "batch": [32, 64, 128, 256, 512, 1024],
    "examples": [2000, 4000, 8000, 16000],
}


def point(axis, value, base_n):
    width, depth, batch, n = 800, 1, 200, base_n
    if axis == "width":
        width = value
    elif axis == "depth":
        depth = value
    elif axis == "batch":
        batch = value
    else:
        n = value
    return [width] * depth, batch, n


def run(args) -> dict:
    from bioplausible.training import keep_freed_memory, train

    keep_freed_memory()
    rules = common.parse_list("--rules", args.rules, flops.RULES)
    axes = common.parse_list("--axes", args.axes, tuple(AXES))
    base_n = common.parse_list("--examples", args.examples, kind=int)[0]
    repeats = common.parse_list("--repeats", args.repeats, kind=int)[0]
    privs = [False] if args.no_private else [False, True]
    if True in privs and common.dp_available():
        raise UserError(f"--no-private: needed here because {common.dp_available()}")
    torch.set_num_threads(1)
    ds = common.load("mnist", args.data_dir)
    if args.clock not in ("wall", "cpu"):
        raise UserError(f"--clock: invalid value {args.clock!r}; accepted: wall, cpu")
    result = {"machine": common.machine(torch.device("cpu")), "base_examples": base_n, "repeats": repeats,
              "clock": args.clock,
              "axes": {}}
    rates: dict = {}
    for axis in axes:
        rows = []
        for value in AXES[axis]:
            hidden, batch, n = point(axis, value, base_n)
            sizes = [784, *hidden, 10]
            for rule in rules:
                for private in privs:
                    cfg = common.our_config("mnist", rule, private=private, threads=1, device="cpu",
                                            batch_size=batch, hidden_sizes=hidden, train_subset=n,
                                            data_dir=args.data_dir)
                    with common.epoch_clock(args.clock):
                        times = [float(train(cfg, data=ds, progress=False)["train_seconds"])
                                 for _ in range(repeats + 1)]
                    shapes = flops.epoch_shapes(rule, sizes, n, batch)
                    for s in shapes:
                        if s not in rates:
                            rates[s] = flops.matmul_rate(*s, min_seconds=0.02, samples=3,
                                                         clock=common.clock_fn(args.clock))
                    fl = flops.floor_seconds(shapes, rates)
                    sec = common.summarize(times[1:])["median"]  # the first call is a warm-up
                    rows.append({"value": value, "rule": rule, "private": private, "seconds": sec,
                                 "floor_seconds": fl, "gflop": flops.epoch_flops(rule, sizes, n, batch) / 1e9,
                                 "pct_of_floor": 100 * fl / sec, "sizes": sizes, "batch": batch, "n": n})
                    print(f"  {axis}={value:<6} {rule}{'+dp' if private else '':<4} {sec:7.3f} s "
                          f"(floor {fl:.3f} s, {100 * fl / sec:5.1f}%)", file=sys.stderr)
        result["axes"][axis] = rows
    return result


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = list(result["axes"])
    fig, axs = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.8), squeeze=False)
    labels = {"width": "hidden width", "depth": "hidden layers (width 800)", "batch": "batch size",
              "examples": "training examples"}
    for ax, axis in zip(axs[0], axes):
        rows = result["axes"][axis]
        for rule in sorted({r["rule"] for r in rows}, key=flops.RULES.index):
            for private in (False, True):
                pts = [r for r in rows if r["rule"] == rule and r["private"] == private]
                if pts:
                    ax.plot([r["value"] for r in pts], [r["seconds"] for r in pts], marker="o",
                            linestyle="--" if private else "-", label=f"{rule}{' +DP' if private else ''}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(labels[axis])
        ax.set_ylabel("seconds per epoch")
        ax.grid(True, which="both", alpha=0.3)
    axs[0][0].legend(fontsize=7)
    fig.suptitle(f"cost growth, MNIST, 1 thread, {result.get('clock', 'wall')} clock "
                 f"({result['machine']['cpu']}, {result['machine']['date'][:10]})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = Parser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    p.add_argument("--rules", default="bp,dfa,dtp")
    p.add_argument("--axes", default=",".join(AXES))
    p.add_argument("--examples", default="4000", help="examples per epoch at the base point (default: 4000)")
    p.add_argument("--repeats", default="1", help="timed epochs per point after one warm-up (default: 1)")
    p.add_argument("--no-private", action="store_true")
    p.add_argument("--clock", default="cpu", help="cpu (default: process CPU time, one thread) or wall")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(common.RESULTS / "scaling.json"))
    p.add_argument("--plot", default=str(common.RESULTS.parent.parent / "docs" / "scaling.png"))
    args = p.parse_args(argv)
    try:
        t0 = time.perf_counter()
        result = run(args)
        result["wall_seconds"] = time.perf_counter() - t0
        atomic_write_json(args.out, result)
        plot(result, args.plot)
        print(f"wrote {args.out} and {args.plot} ({result['wall_seconds']:.0f} s)")
        return 0
    except UserError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
