"""Side-by-side epoch time of DP-SGD versus the same rule's non-private training.

    python -m bioplausible.privacy.bench --rules bp,fa,dfa,ifa --train-subset 20000

Trains 784-800-10 (paper preset, batch 200, one thread) for ``--epochs`` epochs without privacy and
with DP-SGD (C = 1, σ = 1, Poisson sampling), alternating ``--repeats`` times, and prints the best
training seconds per epoch of each and their ratio (best-of-n damps the noise of a shared machine).
"""

from __future__ import annotations

import argparse

import torch


def main(argv=None) -> int:
    from ..config import resolve
    from ..training import load_data, train

    p = argparse.ArgumentParser(prog="python -m bioplausible.privacy.bench")
    p.add_argument("--rules", default="bp,fa,dfa,ifa")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=200)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    base = dict(dataset=a.dataset, epochs=a.epochs, train_subset=a.train_subset, stop_delta=None, threads=1,
                batch_size=a.batch_size, device="cpu", test_subset=1000)
    ds = load_data(resolve(preset="paper", **base))
    for rule in a.rules.split(","):
        best = {}
        for _ in range(a.repeats):
            for mode, extra in (("plain", {}), ("dp", {"clip_norm": 1.0, "noise_multiplier": 1.0})):
                s = train(resolve(preset="paper", rule=rule, **base, **extra), data=ds, progress=False)
                best[mode] = min(best.get(mode, float("inf")), s["train_seconds"] / s["epochs"])
        print(f"{rule}: non-private {best['plain']:.3f} s/epoch, DP-SGD {best['dp']:.3f} s/epoch, "
              f"ratio {best['dp'] / best['plain']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
