"""Direct feedback alignment (Nøkland 2016), paper eq. 8: δa_l = (B_l e) ⊙ f'(a_l)."""

from ..errors import UserError
from ..network import times_derivative
from .base import Rule, feedback_matrix, forward_product
from .registry import register


@register
class DFA(Rule):
    """Every hidden layer gets the output error through its own fixed B_l of shape (width_l, n_out).

    ``shared_feedback=True`` uses one B for all hidden layers (they must have equal widths).
    """

    name = "dfa"
    options = {"feedback_scale": 1.0, "shared_feedback": False}

    def __init__(self, net, seed=0, **opts):
        super().__init__(net, seed, **opts)
        widths = net.sizes[1:-1]
        n_out = net.sizes[-1]
        if self.opts["shared_feedback"] and len(set(widths)) > 1:
            raise UserError(f"shared_feedback: needs equal hidden widths, got {widths}")
        shared = None
        for l, w in enumerate(widths, start=1):
            if self.opts["shared_feedback"] and shared is not None:
                B = shared
            else:
                B = feedback_matrix(w, n_out, self.opts["feedback_scale"], self._gen, self._dtype)
                shared = B
            self.register_buffer(f"B{l}", B)

    @property
    def feedback(self):
        return [getattr(self, f"B{l}") for l in range(1, self.net.depth)]

    def feedback_pairs(self):
        return [(B, forward_product(self.net, l).t()) for l, B in enumerate(self.feedback, start=1)]

    def hidden_signals(self, rec, e):
        net = self.net
        return [
            times_derivative(net.hidden, e @ B.t(), rec.a[i], rec.h[i + 1])
            for i, B in enumerate(self.feedback)
        ]
