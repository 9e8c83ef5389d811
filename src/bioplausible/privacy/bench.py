"""Side-by-side epoch time of DP-SGD versus the same rule's non-private training.

    python -m bioplausible.privacy.bench --rules bp,fa,dfa,ifa [--samplers native,torch]

Trains 784-800-10 (paper preset: tanh/sigmoid, summed MSE, SGD, batch 200, one thread) on full MNIST,
alternating a non-private epoch and a DP-SGD epoch (C = 1, σ = 1, Poisson sampling with expected batch
200) per noise sampler (``--samplers``, default ``auto``: what training uses) ``--repeats`` times in one
process, and prints the best seconds per epoch of each and their ratios to the non-private epoch.

An "epoch" is exactly what the training loop times (``bioplausible.training.train``): drawing the
epoch's batches, gathering each batch, the rule's teaching signals, the gradient pipeline (plain or
clipped + noised) and ``optimizer.step()``; evaluation and accounting are outside it in both.
``--clock thread`` (default) reads this thread's CPU time, which a shared, loaded machine disturbs far
less than the wall clock (``--clock wall``); best-of-n damps what noise remains.
"""

from __future__ import annotations

import argparse
import time

import torch


def epoch_seconds(cfg, x, t, rule, optimizer, pipeline, gen, clock) -> float:
    """One training epoch as the loop runs it (see ``training.train``); returns its duration."""
    from ..training import plain_sgd_rates

    n = x.shape[0]
    t0 = clock()
    fused = plain_sgd_rates(optimizer, pipeline)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for idx in pipeline.batches(n, cfg.batch_size, gen):
        if idx.numel() == 0:
            pipeline.apply(None, rule, cfg.batch_size)
            optimizer.step()
            continue
        teaching = rule.teach(x.index_select(0, idx), t.index_select(0, idx))
        if fused is not None:  # plain SGD: the update fused into the products, as the loop does
            pipeline.apply_sgd(teaching, rule, cfg.batch_size, fused)
        else:
            pipeline.apply(teaching, rule, cfg.batch_size)
            optimizer.step()
        loss_sum += teaching.loss.double() / teaching.scale
    return clock() - t0


def main(argv=None) -> int:
    from ..config import resolve
    from ..errors import UserError
    from ..network import MLP
    from ..rules import make_rule
    from ..training import keep_freed_memory, load_data, make_optimizer
    from . import make_pipeline
    from .noise import check_sampler

    p = argparse.ArgumentParser(prog="python -m bioplausible.privacy.bench")
    p.add_argument("--rules", default="bp,fa,dfa,ifa")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--train-subset", type=int, default=None, help="first N training examples (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="epochs of each mode, interleaved")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--samplers", default="auto", help="DP noise samplers to time: auto, torch, native (comma list)")
    a = p.parse_args(argv)
    samplers = a.samplers.split(",")
    for s in samplers:
        try:
            check_sampler(s)
        except UserError as e:
            p.error(f"--samplers: {e}")  # one line and exit status 2, like any bad option
    torch.set_num_threads(1)
    keep_freed_memory()
    clock = time.thread_time if a.clock == "thread" else time.perf_counter
    base = dict(dataset=a.dataset, batch_size=a.batch_size, threads=1, device="cpu")
    ds = load_data(resolve(preset="paper", **base))
    x, y = ds.x_train, ds.y_train
    if a.train_subset:
        x, y = x[: a.train_subset], y[: a.train_subset]
    n = x.shape[0]
    print(f"{a.dataset} n={n}, batch {a.batch_size}, 1 thread, clock={a.clock}, best of {a.repeats}", flush=True)
    for rule_name in a.rules.split(","):
        runs = {}
        modes = [("plain", {})] + [(f"dp-{s}", {"clip_norm": 1.0, "noise_multiplier": 1.0, "noise_sampler": s})
                                   for s in samplers]
        for mode, extra in modes:
            cfg = resolve(preset="paper", rule=rule_name, **base, **extra)
            net = MLP([x.shape[1], *cfg.hidden_sizes, ds.n_classes], cfg.hidden, cfg.output, cfg.loss,
                      cfg.reduction, seed=cfg.seed, init=cfg.init)
            rule = make_rule(rule_name, net, seed=cfg.seed + 1, **cfg.rule_options)
            runs[mode] = (cfg, net.targets(y), rule, make_optimizer(cfg, net, rule), make_pipeline(cfg, n, "cpu"),
                          torch.Generator().manual_seed(cfg.seed))
        best = {}
        for _ in range(a.repeats):
            for mode, (cfg, t, rule, opt, pipe, gen) in runs.items():
                best[mode] = min(best.get(mode, float("inf")), epoch_seconds(cfg, x, t, rule, opt, pipe, gen, clock))
        dp = ", ".join(f"DP-SGD ({runs[m][4].noise.kind} sampler) {best[m]:.3f} s/epoch, ratio {best[m] / best['plain']:.3f}"
                       for m, _ in modes[1:])
        print(f"{rule_name}: non-private {best['plain']:.3f} s/epoch, {dp}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
