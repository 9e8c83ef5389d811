"""The common shape of every learning rule.

A rule turns a batch into *teaching terms*: for each linear layer it trains, a per-example signal
``δ`` at the layer's pre-activation (one row per example, before the batch reduction) and the
layer's input ``h``. The layer's pseudo-gradient is then ``∇W = s·δᵀh`` and ``∇b = s·Σ_i δ_i`` with
``s`` the loss reduction's scale (1 for ``sum``, 1/B for ``mean``) — paper eq. 10. Because the
terms are per example, privacy (per-example clipping) needs nothing rule-specific: one example's
gradient of a linear layer is the rank-1 matrix ``δ_i h_iᵀ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..network import MLP, Record, times_derivative


@dataclass
class Term:
    """One trained layer's teaching signal for a batch."""

    layer: nn.Linear
    delta: torch.Tensor  # (B, out): per-example ∂ℓ_i/∂a (or the rule's surrogate of it)
    inp: torch.Tensor  # (B, in): the layer's input


@dataclass
class Teaching:
    terms: list[Term]  # forward layers first (in order), then layers the rule owns (DTP inverses)
    record: Record
    loss: torch.Tensor  # reduced batch loss (scalar)
    error: torch.Tensor  # per-example output error e = ∂ℓ_i/∂a_L
    scale: float  # reduction scale s

    @property
    def forward_terms(self) -> list[Term]:
        return self.terms[: len(self.record.a)]


def feedback_matrix(rows: int, cols: int, scale: float, gen: torch.Generator, dtype) -> torch.Tensor:
    """A fixed random feedback matrix with entries U(-scale/√cols, +scale/√cols).

    ``cols`` is the fan-in of the feedback map (the width of the signal it carries), so the matrix
    is initialised like an ``nn.Linear(cols, rows)``.
    """
    bound = scale / math.sqrt(cols)
    return ((torch.rand(rows, cols, generator=gen, dtype=torch.float64) * 2 - 1) * bound).to(dtype)


def write_grad(param: torch.Tensor, value_fn) -> None:
    if param.grad is None or param.grad.shape != param.shape:
        param.grad = torch.empty_like(param)
    value_fn(param.grad)


class Rule(nn.Module):
    """Base class. Subclasses set ``name`` and ``options`` and implement :meth:`hidden_signals`."""

    name = "rule"
    options: dict = {}  # option name -> default

    def __init__(self, net: MLP, seed: int = 0, **opts):
        super().__init__()
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            accepted = ", ".join(sorted(self.options)) or "none"
            raise UserError(f"rule {self.name!r} has no option {unknown[0]!r}; its options: {accepted}")
        object.__setattr__(self, "net", net)  # not a submodule: the net's state stays the net's
        self.seed = int(seed)
        self.opts = {**self.options, **opts}
        self._gen = torch.Generator().manual_seed(self.seed)
        self._dtype = net.layers[0].weight.dtype

    # -- what rules provide ----------------------------------------------------------------------
    @property
    def feedback(self) -> list[torch.Tensor]:
        """The fixed random feedback matrices (empty for rules without any)."""
        return []

    def hidden_signals(self, rec: Record, e: torch.Tensor) -> list[torch.Tensor]:
        """Per-example δ for hidden layers 1..L-1 (pre-activation), given the output error ``e``."""
        raise NotImplementedError

    def feedback_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(B, what B stands in for) pairs for the weight-feedback alignment diagnostic."""
        return []

    def extra_terms(self, rec: Record) -> list[Term]:
        """Teaching terms for layers the rule owns (DTP's inverse maps)."""
        return []

    def config(self) -> dict:
        return {"name": self.name, "seed": self.seed, **self.opts}

    # -- shared machinery ----------------------------------------------------------------------
    def teach(self, x: torch.Tensor, t: torch.Tensor) -> Teaching:
        net = self.net
        with torch.no_grad():
            rec = net.record(x)
            e, loss = net.error_and_loss(rec, t)
            deltas = self.hidden_signals(rec, e) + [e]
            terms = [Term(layer, d, h) for layer, d, h in zip(net.layers, deltas, rec.h[:-1])]
            terms += self.extra_terms(rec)
        return Teaching(terms=terms, record=rec, loss=loss, error=e, scale=net.loss_scale(x.shape[0]))

    @staticmethod
    def write_grads(teaching: Teaching) -> None:
        """Write ``s·δᵀh`` and ``s·Σδ`` into each trained layer's ``.grad``."""
        s = teaching.scale
        with torch.no_grad():
            for term in teaching.terms:
                d, h = term.delta, term.inp
                write_grad(term.layer.weight, lambda g: torch.addmm(g, d.t(), h, beta=0, alpha=s, out=g))
                write_grad(term.layer.bias, lambda g: torch.sum(d, 0, out=g).mul_(s) if s != 1 else torch.sum(d, 0, out=g))

    @staticmethod
    def sgd_step(teaching: Teaching, lr_of: dict[int, float]) -> None:
        """Plain SGD fused into the weight-gradient product: ``W ← W − η·s·δᵀh`` (one in-place
        ``addmm_``) and ``b ← b − η·s·Σδ``, with ``η = lr_of[id(param)]``. Equal to writing
        :meth:`write_grads` and stepping ``torch.optim.SGD`` (no momentum, no weight decay) up to
        float rounding, without materialising ``.grad`` or reading it back."""
        s = teaching.scale
        with torch.no_grad():
            for term in teaching.terms:
                W, b = term.layer.weight, term.layer.bias
                W.addmm_(term.delta.t(), term.inp, alpha=-lr_of[id(W)] * s)
                b.add_(term.delta.sum(0), alpha=-lr_of[id(b)] * s)

    def step_grads(self, x: torch.Tensor, t: torch.Tensor) -> Teaching:
        """Compute the teaching terms of a batch and write every trained parameter's ``.grad``."""
        teaching = self.teach(x, t)
        self.write_grads(teaching)
        return teaching

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Pseudo-gradients of the batch loss, ordered and shaped like ``list(net.parameters())``."""
        teaching = self.teach(x, self.net.targets(y))
        s = teaching.scale
        out = []
        for term in teaching.forward_terms:
            out += [s * term.delta.t() @ term.inp, s * term.delta.sum(0)]
        return out


def forward_product(net: MLP, l: int) -> torch.Tensor:
    """W_L W_{L-1} … W_{l+1}: the linear path from hidden layer ``l`` (1-based) to the output."""
    P = net.layers[-1].weight
    for i in range(net.depth - 2, l - 1, -1):
        P = P @ net.layers[i].weight
    return P


def bp_hidden_signals(net: MLP, rec: Record, e: torch.Tensor) -> list[torch.Tensor]:
    """Backpropagation: δ_l = (δ_{l+1} W_{l+1}) ⊙ f'(a_l), from the top down."""
    deltas = []
    d = e
    for i in range(net.depth - 2, -1, -1):
        d = times_derivative(net.hidden, d @ net.layers[i + 1].weight, rec.a[i], rec.h[i + 1])
        deltas.append(d)
    return deltas[::-1]
