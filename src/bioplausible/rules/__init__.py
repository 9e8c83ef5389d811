"""Learning rules. Each computes per-layer teaching signals explicitly (see ``base``)."""

from .base import Rule, Teaching, Term, bp_hidden_signals
from .registry import RULES, make_rule, register
from . import bp, fa, dfa, ifa, dtp  # noqa: F401  (registration order = listing order)

__all__ = ["RULES", "Rule", "Teaching", "Term", "bp_hidden_signals", "make_rule", "register"]
