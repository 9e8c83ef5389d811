"""Alignment diagnostics, the standard measures of the feedback-alignment literature.

* ``angle_l``: the angle (degrees) between a rule's weight update of hidden layer ``l`` and the true
  BP gradient on the same batch (0° = the rule follows the gradient, < 90° = it descends).
* ``feedback_angle_l``: the angle between each fixed feedback matrix and what it stands in for:
  FA: ``B_l`` vs ``W_lᵀ``; DFA and IFA: ``B_l`` vs ``(W_L ⋯ W_{l+1})ᵀ``, the linear path from layer ``l``
  to the output. BP and DTP have no feedback matrices.
"""

from __future__ import annotations

import math

import torch

from .rules.base import Rule, bp_hidden_signals


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.reshape(-1).double()
    b = b.reshape(-1).double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    c = float((a @ b) / (na * nb))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


@torch.no_grad()
def alignment(rule: Rule, x: torch.Tensor, t: torch.Tensor) -> dict:
    net = rule.net
    teaching = rule.teach(x, t)
    rec, e = teaching.record, teaching.error
    bp = bp_hidden_signals(net, rec, e)
    out = {}
    for l, (term, d_bp) in enumerate(zip(teaching.forward_terms[:-1], bp), start=1):
        out[f"angle_{l}"] = angle(term.delta.t() @ term.inp, d_bp.t() @ term.inp)
    for l, (B, W) in enumerate(rule.feedback_pairs(), start=1):
        out[f"feedback_angle_{l}"] = angle(B, W)
    return out
