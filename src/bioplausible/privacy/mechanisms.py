"""Noise mechanisms: the paper's update noise (three sites), the DP-SGD Gaussian mechanism on clipped
sums, and Laplace input perturbation.

Update noise (paper section 5, "noise is added during every step of the backwards update pass",
N(0, σ²)); the paper does not say where, so three readings are offered (``noise_site``):

* ``gradient`` (default): every parameter's pseudo-gradient, before the learning rate:
  ``∇W_l ← s·δ_lᵀh_{l-1} + σ ξ``, ``∇b_l ← s·Σ_i δ_{l,i} + σ ξ``, ξ ~ N(0, I) of the parameter's shape;
* ``error``: the per-example output error before it is sent back: ``e ← e + σ ξ`` (ξ of shape (B, n_out));
  every hidden signal is recomputed from the noisy error (BP/FA propagate it, DFA/IFA project it,
  DTP's first target uses it), and the output layer learns from it too;
* ``signal``: each layer's per-example teaching signal independently: ``δ_l ← δ_l + σ ξ_l`` (ξ_l of
  shape (B, width_l)), for every layer the rule trains;
* ``update``: the weights themselves, after the learning rate: ``W ← W − lr·u(∇W) + σ ξ`` (the noise
  is added to every trained parameter just before the optimizer applies its update ``u``, so it is
  not scaled by the learning rate; exact for any optimizer without weight decay).

None of these bounds any example's influence (nothing is clipped): a run with update noise has no
formal privacy guarantee, ε = ∞, and says so in its metrics and summary.

Laplace input perturbation (paper section 3, local DP): features are clipped to [0, 1]; two examples
then differ by at most ``d`` in L1 norm (``d`` = number of features), so adding i.i.d.
``Laplace(d/ε_in)`` noise to every feature makes each example's released vector ε_in-DP.
"""

from __future__ import annotations

import torch


def laplace_(x: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Add i.i.d. Laplace(0, scale) noise to ``x`` in place (inverse CDF of a uniform draw)."""
    u = torch.rand(x.shape, generator=gen, dtype=torch.float64, device=x.device) - 0.5
    # u in [-0.5, 0.5): -scale·sign(u)·log(1 − 2|u|); 1 − 2|u| > 0 except at u = -0.5 exactly
    noise = -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs()).clamp_min(-745.0)
    x.add_(noise.to(x.dtype))
    return x


def perturb_inputs(x: torch.Tensor, input_epsilon: float, gen: torch.Generator) -> torch.Tensor:
    """Local-DP copy of ``x``: clip features to [0, 1], add Laplace(d/ε_in) to each of the d features."""
    d = x.shape[1]
    out = x.clamp(0.0, 1.0)
    return laplace_(out, d / input_epsilon, gen)

