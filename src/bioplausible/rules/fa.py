"""Feedback alignment (Lillicrap et al. 2016): BP's chain with fixed random B_l in place of W_lᵀ."""

import torch

from ..network import times_derivative
from .base import Rule, feedback_matrix
from .registry import register


@register
class FA(Rule):
    """δ_L = e,  δ_l = (δ_{l+1} B_{l+1}ᵀ) ⊙ f'(a_l), with B_l of shape (in_l, out_l) like W_lᵀ (l ≥ 2)."""

    name = "fa"
    options = {"feedback_scale": 1.0}

    def __init__(self, net, seed=0, **opts):
        super().__init__(net, seed, **opts)
        sizes = net.sizes
        for l in range(2, net.depth + 1):  # layers l = 2..L get a feedback matrix
            B = feedback_matrix(sizes[l - 1], sizes[l], self.opts["feedback_scale"], self._gen, self._dtype)
            self.register_buffer(f"B{l}", B)

    @property
    def feedback(self):
        return [getattr(self, f"B{l}") for l in range(2, self.net.depth + 1)]

    def feedback_pairs(self):
        return [(B, self.net.layers[l - 1].weight.t()) for l, B in zip(range(2, self.net.depth + 1), self.feedback)]

    def hidden_signals(self, rec, e):
        net, fb = self.net, self.feedback
        deltas = []
        d = e
        for i in range(net.depth - 2, -1, -1):
            d = times_derivative(net.hidden, d @ fb[i].t(), rec.a[i], rec.h[i + 1])
            deltas.append(d)
        return deltas[::-1]
