"""Indirect feedback alignment (Nøkland 2016), paper eq. 9.

δa_1 = (B_1 e) ⊙ f'(a_1); later hidden layers get δa_l = (W_l δa_{l-1}) ⊙ f'(a_l), i.e. the signal
travels *forward* through the forward weights from the first hidden layer.
"""

from ..network import times_derivative
from .base import Rule, feedback_matrix, forward_product
from .registry import register


@register
class IFA(Rule):
    name = "ifa"
    options = {"feedback_scale": 1.0}

    def __init__(self, net, seed=0, **opts):
        super().__init__(net, seed, **opts)
        if net.depth >= 2:
            B = feedback_matrix(net.sizes[1], net.sizes[-1], self.opts["feedback_scale"], self._gen, self._dtype)
            self.register_buffer("B1", B)

    @property
    def feedback(self):
        return [self.B1] if self.net.depth >= 2 else []

    def feedback_pairs(self):
        return [(B, forward_product(self.net, l).t()) for l, B in enumerate(self.feedback, start=1)]

    def hidden_signals(self, rec, e):
        net = self.net
        if net.depth < 2:
            return []
        d = times_derivative(net.hidden, e @ self.B1.t(), rec.a[0], rec.h[1])
        deltas = [d]
        for i in range(1, net.depth - 1):
            d = times_derivative(net.hidden, d @ net.layers[i].weight.t(), rec.a[i], rec.h[i + 1])
            deltas.append(d)
        return deltas
