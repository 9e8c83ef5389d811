"""Difference target propagation (Lee et al. 2015), paper Algorithm 1.

Layers are numbered 1..M (M = output). With forward maps f_i(h) = act(W_i h + b_i):

* first target: ĥ_{M-1} = h_{M-1} − η̂ ∂ℓ/∂h_{M-1} (ℓ the per-example global loss; ``target_step`` = η̂);
* lower targets, i = M-1 … 2: ĥ_{i-1} = h_{i-1} − g_i(h_i) + g_i(ĥ_i), with learned inverses
  g_i(h) = act(V_i h + c_i) mapping layer i back to layer i-1;
* forward layer i < M learns from L_i = ‖f_i(h_{i-1}) − ĥ_i‖², so δ_i = 2 (h_i − ĥ_i) ⊙ f'(a_i);
  the output layer learns from the global loss (δ_M = e);
* inverse g_i learns from L_i^inv = ‖g_i(f_i(h_{i-1} + ε)) − (h_{i-1} + ε)‖², ε ~ N(0, σ²)
  (``inverse_noise`` = σ), so δ^g_i = 2 (g_i(·) − (h_{i-1} + ε)) ⊙ act'(·) with input f_i(h_{i-1} + ε).

All local losses are reduced over the batch like the global loss (``sum`` or ``mean``).

On a single-hidden-layer net (the paper's 784-800-10) there are no inverses: the hidden layer's
target is a plain gradient step, δ_1 = 2η̂ (e W_2) ⊙ f'(a_1), i.e. exactly BP's hidden signal scaled by
2η̂. DTP only differs from BP on deeper nets (e.g. the DTP paper's 784-(240×7)-10).
"""

import torch
from torch import nn

from ..network import activate, times_derivative
from .base import Rule, Term
from .registry import register


@register
class DTP(Rule):
    name = "dtp"
    options = {"target_step": 0.5, "inverse_noise": 0.1}

    def __init__(self, net, seed=0, **opts):
        super().__init__(net, seed, **opts)
        sizes = net.sizes
        # g_i for i = 2..M-1 maps width_i -> width_{i-1}; inverses[k] is g_{k+2}
        self.inverses = nn.ModuleList()
        for i in range(2, net.depth):
            g = nn.Linear(sizes[i], sizes[i - 1], dtype=self._dtype)
            bound = 1.0 / sizes[i] ** 0.5
            with torch.no_grad():
                g.weight.copy_((torch.rand(g.weight.shape, generator=self._gen, dtype=torch.float64) * 2 - 1) * bound)
                g.bias.copy_((torch.rand(g.bias.shape, generator=self._gen, dtype=torch.float64) * 2 - 1) * bound)
            self.inverses.append(g)
        self._noise_gen = None

    def _g(self, i, h):
        """Inverse g_i applied to h (i = 2..M-1), returns (pre-activation, activation)."""
        g = self.inverses[i - 2]
        b = torch.addmm(g.bias, h, g.weight.t())
        return b, activate(self.net.hidden, b)

    def targets(self, rec, e, dh=None):
        """ĥ_1 … ĥ_{M-1} (index i-1 holds ĥ_i); ``dh``: ∂ℓ/∂h_{M-1} if already computed."""
        net = self.net
        M = net.depth
        if M < 2:
            return []
        hat = [None] * (M - 1)
        if dh is None:
            dh = e @ net.layers[M - 1].weight  # ∂ℓ/∂h_{M-1}
        hat[M - 2] = rec.h[M - 1] - self.opts["target_step"] * dh
        for i in range(M - 1, 1, -1):
            hat[i - 2] = rec.h[i - 1] - self._g(i, rec.h[i])[1] + self._g(i, hat[i - 1])[1]
        return hat

    def hidden_signals(self, rec, e):
        net = self.net
        M = net.depth
        if M < 2:
            return []
        # top hidden layer: h − ĥ = η̂ ∂ℓ/∂h exactly, so its signal needs neither the target nor the
        # difference (two (B, width) passes fewer per batch); lower layers go through the targets
        dh = e @ net.layers[M - 1].weight  # ∂ℓ/∂h_{M-1}
        hat = self.targets(rec, e, dh) if M > 2 else None  # before dh is scaled in place below
        lower = [
            times_derivative(net.hidden, (rec.h[i + 1] - hat[i]).mul_(2.0), rec.a[i], rec.h[i + 1])
            for i in range(M - 2)
        ]
        top = dh.mul_(2.0 * self.opts["target_step"])
        return lower + [times_derivative(net.hidden, top, rec.a[M - 2], rec.h[M - 1])]

    def noise(self, like):
        if self._noise_gen is None or self._noise_gen.device != like.device:
            self._noise_gen = torch.Generator(device=like.device).manual_seed(self.seed + 7919)
        return torch.randn(like.shape, generator=self._noise_gen, dtype=like.dtype, device=like.device)

    def extra_terms(self, rec):
        net = self.net
        sigma = self.opts["inverse_noise"]
        terms = []
        for i in range(2, net.depth):
            src = rec.h[i - 1]
            noisy = src + sigma * self.noise(src) if sigma > 0 else src
            layer = net.layers[i - 1]
            z = activate(net.hidden, torch.addmm(layer.bias, noisy, layer.weight.t()))
            b, r = self._g(i, z)
            d = times_derivative(net.hidden, (r - noisy).mul_(2.0), b, r)
            terms.append(Term(self.inverses[i - 2], d, z))
        return terms

    def get_noise_state(self):
        return None if self._noise_gen is None else self._noise_gen.get_state()

    def set_noise_state(self, state):
        if state is not None:
            self._noise_gen = torch.Generator().manual_seed(self.seed + 7919)
            self._noise_gen.set_state(state)
