"""The matrix-multiply floor of one training epoch.

Every rule's cost is dominated by matrix products. Per batch of ``B`` examples and per linear
layer ``in → out`` a rule needs the forward product ``(B×in)(in×out)`` and the weight gradient
``(out×B)(B×in)``; the teaching signal of the layer below costs one more product (BP/FA: through
``W_l``/``B_l``; DFA: ``e`` through each hidden layer's own ``B_l``; IFA: ``e`` into the first layer,
then forward through ``W_l``). The first layer needs no signal below it. DTP adds its inverse maps:
per inverse ``g_i`` (layers i = 2..L-1) the two target products ``g_i(h_i)`` and ``g_i(ĥ_i)``, the
noisy forward ``f_i(h_{i-1}+ε)``, the reconstruction ``g_i(·)`` and the inverse's weight gradient.

A product ``(m×k)(k×n)`` costs ``2mkn`` FLOP. The floor of a configuration is the sum over its
products of ``2mkn / rate(m, k, n)``, with ``rate`` the measured speed of ``torch.mm`` on that very
shape (the fastest of the four operand layouts), so the floor is what the hardware allows for the
products alone, with nothing else (activations, optimizer, data movement) counted.
"""

from __future__ import annotations

import statistics
import time

import torch

RULES = ("bp", "fa", "dfa", "ifa", "dtp")


def matmul_shapes(rule: str, sizes, batch: int) -> list[tuple[int, int, int]]:
    """The (m, k, n) products of one training step of ``rule`` on an MLP with layer widths ``sizes``."""
    s = [int(v) for v in sizes]
    L = len(s) - 1
    B = int(batch)
    shapes = []
    for l in range(1, L + 1):
        shapes.append((B, s[l - 1], s[l]))  # forward a_l = h_{l-1} W_lᵀ
        shapes.append((s[l], B, s[l - 1]))  # weight gradient δ_lᵀ h_{l-1}
    if rule in ("bp", "fa"):
        shapes += [(B, s[l], s[l - 1]) for l in range(2, L + 1)]  # δ_l W_l (or B_l)
    elif rule == "dfa":
        shapes += [(B, s[L], s[l]) for l in range(1, L)]  # e B_lᵀ for every hidden layer
    elif rule == "ifa":
        if L >= 2:
            shapes.append((B, s[L], s[1]))  # e B_1ᵀ
            shapes += [(B, s[l - 1], s[l]) for l in range(2, L)]  # δ_{l-1} W_lᵀ
    elif rule == "dtp":
        if L >= 2:
            shapes.append((B, s[L], s[L - 1]))  # ∂ℓ/∂h_{L-1} = e W_L (first target)
        for i in range(2, L):  # inverse g_i: width s[i] -> s[i-1]
            shapes += [(B, s[i], s[i - 1])] * 2  # g_i(h_i), g_i(ĥ_i)
            shapes.append((B, s[i - 1], s[i]))  # f_i(h_{i-1} + ε)
            shapes.append((B, s[i], s[i - 1]))  # g_i(f_i(·))
            shapes.append((s[i - 1], B, s[i]))  # inverse weight gradient
    else:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    return shapes


def flops(shapes) -> int:
    return sum(2 * m * k * n for m, k, n in shapes)


def epoch_batches(n: int, batch: int) -> list[int]:
    """Batch sizes of one epoch over ``n`` examples (the last one may be smaller)."""
    full, rest = divmod(int(n), int(batch))
    return [int(batch)] * full + ([rest] if rest else [])


def epoch_shapes(rule: str, sizes, n: int, batch: int) -> dict[tuple[int, int, int], int]:
    """Distinct products of one epoch and how often each occurs."""
    count: dict[tuple[int, int, int], int] = {}
    for b in epoch_batches(n, batch):
        for shp in matmul_shapes(rule, sizes, b):
            count[shp] = count.get(shp, 0) + 1
    return count


def epoch_flops(rule: str, sizes, n: int, batch: int) -> int:
    return sum(2 * m * k * nn * c for (m, k, nn), c in epoch_shapes(rule, sizes, n, batch).items())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(m: int, k: int, n: int, device="cpu", dtype=torch.float32, min_seconds: float = 0.05,
                samples: int = 5, clock=time.perf_counter) -> float:
    """FLOP/s of ``torch.mm`` for an (m×k)(k×n) product: the best of the four operand layouts,
    each the median of ``samples`` timings of at least ``min_seconds`` by ``clock``."""
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(m * 1_000_003 + k * 1009 + n)
    a = torch.randn(m, k, generator=gen, dtype=dtype).to(device)
    b = torch.randn(k, n, generator=gen, dtype=dtype).to(device)
    out = torch.empty(m, n, dtype=dtype, device=device)
    layouts = {
        "nn": (a, b),
        "nt": (a, b.t().contiguous().t()),
        "tn": (a.t().contiguous().t(), b),
        "tt": (a.t().contiguous().t(), b.t().contiguous().t()),
    }
    best = 0.0
    for x, y in layouts.values():
        torch.mm(x, y, out=out)
        _sync(device)
        t0 = clock()
        reps = 0
        while clock() - t0 < min_seconds / 4 or reps < 2:
            torch.mm(x, y, out=out)
            reps += 1
        _sync(device)
        per = (clock() - t0) / reps
        reps = max(2, int(min_seconds / max(per, 1e-9)))
        times = []
        for _ in range(samples):
            t0 = clock()
            for _ in range(reps):
                torch.mm(x, y, out=out)
            _sync(device)
            times.append((clock() - t0) / reps)
        best = max(best, 2 * m * k * n / statistics.median(times))
    return best


def floor_seconds(shape_counts: dict, rates: dict) -> float:
    """Seconds the products of one epoch take at the measured ``rates`` (FLOP/s per shape)."""
    return sum(2 * m * k * n * c / rates[(m, k, n)] for (m, k, n), c in shape_counts.items())


def normal_rate(count: int, device="cpu", dtype=torch.float32, min_seconds: float = 0.02, samples: int = 3,
                clock=time.perf_counter, sampler: str = "auto") -> float:
    """Gaussians per second that DP-SGD's noise sampler (``bioplausible.privacy.noise``: ``auto``, ``torch``
    or ``native``) draws into a tensor of ``count`` elements (median of ``samples`` timings)."""
    from bioplausible.privacy.noise import make_noise

    device = torch.device(device)
    gen = make_noise(sampler, 0, device)
    buf = torch.empty(int(count), dtype=dtype, device=device)
    gen.fill_(buf, 1.0)
    _sync(device)
    times = []
    for _ in range(samples):
        reps = 0
        t0 = clock()
        while True:
            gen.fill_(buf, 1.0)
            reps += 1
            _sync(device)
            if clock() - t0 >= min_seconds and reps >= 2:
                break
        times.append((clock() - t0) / reps)
    return count / statistics.median(times)
