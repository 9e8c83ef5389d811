"""Backpropagation: the exact gradient, computed explicitly (no autograd)."""

from .base import Rule, bp_hidden_signals
from .registry import register


@register
class BP(Rule):
    """δ_L = e,  δ_l = (δ_{l+1} W_{l+1}) ⊙ f'(a_l)."""

    name = "bp"
    options = {}

    def hidden_signals(self, rec, e):
        return bp_hidden_signals(self.net, rec, e)
