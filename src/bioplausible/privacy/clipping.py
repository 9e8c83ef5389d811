"""Per-example clipping in closed form, for every rule.

A rule hands over, for each linear layer it trains, per-example teaching signals ``δ`` (B, out) and the
layer inputs ``h`` (B, in). Example ``i``'s (unscaled) contribution to that layer's gradient is the
rank-one matrix ``δ_i h_iᵀ`` and the bias vector ``δ_i``, so its squared Frobenius norm is

    ‖δ_i h_iᵀ‖² + ‖δ_i‖² = ‖δ_i‖² (‖h_i‖² + 1).

Summed over all layers the rule trains (forward layers *and* DTP's inverse maps), that is the
squared norm of example ``i``'s whole pseudo-gradient: O(B·width) work, no per-example gradient is
ever materialised. With clip factors ``c_i = min(1, C / ‖g_i‖)`` the clipped sums are

    Σ_i c_i δ_i h_iᵀ = (c ⊙ δ)ᵀ h,      Σ_i c_i δ_i.

With augmentation multiplicity (De et al. 2022) example ``i`` arrives as ``k`` consecutive rows (its
augmented copies ``r = 1..k``) and its gradient is their average ``G_i = (1/k) Σ_r δ_{ir} h̃_{ir}ᵀ``
(``h̃ = [h, 1]``: weight and bias together), a rank-``k`` matrix whose squared norm comes from two
``k × k`` Gram matrices, still without materialising it:

    ‖G_i‖² = (1/k²) Σ_{r,s} (δ_{ir}·δ_{is}) (h_{ir}·h_{is} + 1).

The clipped sums then weight every row of example ``i`` by ``c_i / k``.

Per-layer clipping gives each of the K trained layers its own bound ``C_k = C / √K`` (so the clipped
contribution of one example over all layers still has norm ≤ C) and its own factors ``c_{k,i}``.
"""

from __future__ import annotations

import math

import torch


def layer_sq_norms(delta: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """(B,) squared norms of the per-example gradients (weight and bias) of one linear layer."""
    dn = torch.linalg.vector_norm(delta, dim=1)  # one pass each, no (B, width) temporary
    hn = torch.linalg.vector_norm(inp, dim=1)
    return dn.square_().mul_(hn.square_().add_(1.0))


def group_sq_norms(delta: torch.Tensor, inp: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) squared norms of ``(1/k) Σ_r δ_r h̃_rᵀ`` over each example's ``k`` consecutive rows."""
    if k == 1:
        return layer_sq_norms(delta, inp)
    d = delta.reshape(-1, k, delta.shape[1])
    h = inp.reshape(-1, k, inp.shape[1])
    gram = torch.bmm(d, d.transpose(1, 2)).mul_(torch.bmm(h, h.transpose(1, 2)).add_(1.0))
    return gram.sum((1, 2)).div_(k * k)


def per_example_norms(terms, per_layer: bool = False, group: int = 1) -> torch.Tensor:
    """Per-example gradient norms: (B,) over all terms, or (K, B) per term if ``per_layer``; with
    ``group`` = k > 1, examples are groups of k consecutive rows whose gradients are averaged."""
    sq = torch.stack([group_sq_norms(t.delta, t.inp, group) for t in terms])
    return sq.sqrt() if per_layer else sq.sum(0).sqrt()


def clip_factors(norms: torch.Tensor, bound: float) -> torch.Tensor:
    """``min(1, bound / norm)`` elementwise (1 for zero norms)."""
    return (bound / norms.clamp_min(1e-30)).clamp_max(1.0)


def clipped_factors(terms, clip_norm: float, per_layer: bool = False, group: int = 1) -> list[torch.Tensor]:
    """One per-row factor vector per term: shared across terms (flat) or per term (per-layer). With
    ``group`` = k > 1 every row of example i gets ``c_i / k`` (the average over its copies, clipped)."""
    if per_layer:
        bound = clip_norm / math.sqrt(len(terms))
        f = clip_factors(per_example_norms(terms, per_layer=True, group=group), bound)
        return [_rows(c, group) for c in f.unbind(0)]
    f = _rows(clip_factors(per_example_norms(terms, group=group), clip_norm), group)
    return [f] * len(terms)


def _rows(factors: torch.Tensor, group: int) -> torch.Tensor:
    """Per-example factors spread over each example's ``group`` rows, divided by ``group``."""
    return factors if group == 1 else factors.repeat_interleave(group).div_(group)


def clipped_sums(terms, factors) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(Σ_i c_i δ_i h_iᵀ, Σ_i c_i δ_i) for each term."""
    out = []
    for term, c in zip(terms, factors):
        cd = term.delta * c.unsqueeze(1)
        out.append((cd.t() @ term.inp, cd.sum(0)))
    return out
