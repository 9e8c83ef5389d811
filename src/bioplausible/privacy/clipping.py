"""Per-example clipping in closed form, for every rule.

A rule hands over, for each linear layer it trains, per-example teaching signals ``δ`` (B, out) and the
layer inputs ``h`` (B, in). Example ``i``'s (unscaled) contribution to that layer's gradient is the
rank-one matrix ``δ_i h_iᵀ`` and the bias vector ``δ_i``, so its squared Frobenius norm is

    ‖δ_i h_iᵀ‖² + ‖δ_i‖² = ‖δ_i‖² (‖h_i‖² + 1).

Summed over all layers the rule trains (forward layers *and* DTP's inverse maps), that is the
squared norm of example ``i``'s whole pseudo-gradient: O(B·width) work, no per-example gradient is
ever materialised. With clip factors ``c_i = min(1, C / ‖g_i‖)`` the clipped sums are

    Σ_i c_i δ_i h_iᵀ = (c ⊙ δ)ᵀ h,      Σ_i c_i δ_i.

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


def per_example_norms(terms, per_layer: bool = False) -> torch.Tensor:
    """Per-example gradient norms: (B,) over all terms, or (K, B) per term if ``per_layer``."""
    sq = torch.stack([layer_sq_norms(t.delta, t.inp) for t in terms])
    return sq.sqrt() if per_layer else sq.sum(0).sqrt()


def clip_factors(norms: torch.Tensor, bound: float) -> torch.Tensor:
    """``min(1, bound / norm)`` elementwise (1 for zero norms)."""
    return (bound / norms.clamp_min(1e-30)).clamp_max(1.0)


def clipped_factors(terms, clip_norm: float, per_layer: bool = False) -> list[torch.Tensor]:
    """One (B,) factor vector per term: shared across terms (flat) or per term (per-layer)."""
    if per_layer:
        bound = clip_norm / math.sqrt(len(terms))
        f = clip_factors(per_example_norms(terms, per_layer=True), bound)
        return list(f.unbind(0))
    f = clip_factors(per_example_norms(terms), clip_norm)
    return [f] * len(terms)


def clipped_sums(terms, factors) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(Σ_i c_i δ_i h_iᵀ, Σ_i c_i δ_i) for each term."""
    out = []
    for term, c in zip(terms, factors):
        cd = term.delta * c.unsqueeze(1)
        out.append((cd.t() @ term.inp, cd.sum(0)))
    return out
