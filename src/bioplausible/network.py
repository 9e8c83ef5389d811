"""Fully connected networks with an explicit forward record.

``MLP(sizes)`` is a stack of ``torch.nn.Linear`` layers: ``a_l = h_{l-1} W_lᵀ + b_l``,
``h_l = f(a_l)`` for hidden layers and ``ŷ = f_y(a_L)`` at the output. ``list(net.parameters())``
is ``[W1, b1, W2, b2, ...]``.

Initialisation (seeded by ``seed`` through a private ``torch.Generator``, so it does not touch the
global RNG): ``init="uniform"`` (default) draws W and b from U(-1/√fan_in, 1/√fan_in), which is
PyTorch's ``nn.Linear`` default; ``init="xavier"`` draws W from U(-√(6/(fan_in+fan_out)), +…) with
b = 0. The same seed gives the same weights on every machine.

Losses are per example and then reduced over the batch by ``reduction`` (``sum`` as in the paper's
derivation, or ``mean``):

* ``mse``: ``½ Σ_k (t_k − o_k)²``
* ``bce``: ``−Σ_k t_k log o_k + (1 − t_k) log(1 − o_k)`` (requires a sigmoid output)
* ``ce``: ``−Σ_k t_k log o_k`` (requires a softmax output)

``output_error`` returns ``e = ∂L/∂a_L``, the error at the output *pre-activation*, per example
(before the batch reduction's scale), in closed form, so the output non-linearity's derivative is
never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import UserError, check_choice

HIDDEN = ("tanh", "relu", "sigmoid", "leaky-relu")
OUTPUTS = ("sigmoid", "softmax", "linear")
LOSSES = ("mse", "bce", "ce")
REDUCTIONS = ("sum", "mean")
INITS = ("uniform", "xavier")
LEAKY_SLOPE = 0.01


def _tanh(a: torch.Tensor) -> torch.Tensor:
    """``tanh``; on CPU outside autograd through NumPy's vectorised kernel, which is several times
    faster than ``torch.tanh``'s on this hardware (the two agree to a float rounding: at most 1 ulp)."""
    if a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64) and not a.requires_grad \
            and a.is_contiguous():
        out = torch.empty_like(a)
        np.tanh(a.numpy(), out=out.numpy())
        return out
    return torch.tanh(a)


def activate(name: str, a: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return _tanh(a)
    if name == "relu":
        return torch.relu(a)
    if name == "sigmoid":
        return torch.sigmoid(a)
    if name == "leaky-relu":
        return torch.nn.functional.leaky_relu(a, LEAKY_SLOPE)
    if name == "linear":
        return a
    if name == "softmax":
        return torch.softmax(a, dim=1)
    raise UserError(f"activation: invalid value {name!r}; accepted: {', '.join(HIDDEN + OUTPUTS)}")


def derivative(name: str, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Elementwise f'(a), computed from the pre-activation ``a`` or the activation ``h = f(a)``."""
    if name == "tanh":
        return 1.0 - h * h
    if name == "sigmoid":
        return h * (1.0 - h)
    if name == "relu":
        return (a > 0).to(a.dtype)
    if name == "leaky-relu":
        return (a > 0).to(a.dtype) * (1.0 - LEAKY_SLOPE) + LEAKY_SLOPE
    if name == "linear":
        return torch.ones_like(a)
    raise ValueError(f"no elementwise derivative for {name!r}")


def times_derivative(name: str, g: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``g ⊙ f'(a)``, overwriting ``g`` (pass a temporary): for tanh ``g − g·h²`` in two kernels
    instead of three; equal to ``g * derivative(name, a, h)`` up to float rounding."""
    if name == "tanh":
        return g.addcmul_(g, h * h, value=-1.0)
    if name == "relu":
        return g.masked_fill_(a <= 0, 0.0)
    return g.mul_(derivative(name, a, h))


def describe_sizes(sizes) -> str:
    """``[784, 800, 10]`` → ``784-800-10``; equal hidden widths compress: ``784-(240×7)-10``."""
    hidden = list(sizes[1:-1])
    if len(hidden) > 1 and len(set(hidden)) == 1:
        return f"{sizes[0]}-({hidden[0]}×{len(hidden)})-{sizes[-1]}"
    return "-".join(map(str, sizes))


@dataclass
class Record:
    """What a forward pass saw: ``h[0]`` is the input, ``a[l-1]``/``h[l]`` belong to layer ``l``."""

    h: list[torch.Tensor]
    a: list[torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.h[-1]


class MLP(nn.Module):
    """A fully connected network of any depth and width.

    >>> net = MLP([784, 800, 10], hidden="tanh", output="sigmoid", loss="mse", seed=0)
    """

    def __init__(
        self,
        sizes,
        hidden: str = "tanh",
        output: str = "sigmoid",
        loss: str = "mse",
        reduction: str = "sum",
        seed: int = 0,
        init: str = "uniform",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise UserError(f"sizes: invalid value {sizes!r}; accepted: at least two positive layer widths")
        check_choice("hidden", hidden, HIDDEN)
        check_choice("output", output, OUTPUTS)
        check_choice("loss", loss, LOSSES)
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("init", init, INITS)
        if loss == "bce" and output != "sigmoid":
            raise UserError(f"loss: 'bce' needs output 'sigmoid', got output {output!r}")
        if loss == "ce" and output != "softmax":
            raise UserError(f"loss: 'ce' needs output 'softmax', got output {output!r}")
        self.sizes = sizes
        self.hidden = hidden
        self.output = output
        self.loss_name = loss
        self.reduction = reduction
        self.seed = int(seed)
        self.init = init
        self.layers = nn.ModuleList(nn.Linear(i, o, dtype=dtype) for i, o in zip(sizes[:-1], sizes[1:]))
        self.reset_parameters()

    # -- construction -----------------------------------------------------------------------
    def reset_parameters(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for layer in self.layers:
                fan_out, fan_in = layer.weight.shape
                if self.init == "uniform":
                    bound = 1.0 / math.sqrt(fan_in)
                    layer.weight.copy_(_uniform(layer.weight.shape, bound, gen, layer.weight.dtype))
                    layer.bias.copy_(_uniform(layer.bias.shape, bound, gen, layer.bias.dtype))
                else:
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    layer.weight.copy_(_uniform(layer.weight.shape, bound, gen, layer.weight.dtype))
                    layer.bias.zero_()

    def config(self) -> dict:
        return {
            "sizes": list(self.sizes),
            "hidden": self.hidden,
            "output": self.output,
            "loss": self.loss_name,
            "reduction": self.reduction,
            "seed": self.seed,
            "init": self.init,
        }

    @property
    def depth(self) -> int:
        return len(self.layers)

    def act(self, layer_index: int) -> str:
        """Activation name of layer ``layer_index`` (0-based)."""
        return self.output if layer_index == self.depth - 1 else self.hidden

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.record(x).output

    def record(self, x: torch.Tensor) -> Record:
        h = [x]
        a = []
        for i, layer in enumerate(self.layers):
            ai = torch.addmm(layer.bias, h[-1], layer.weight.t())
            a.append(ai)
            h.append(activate(self.act(i), ai))
        return Record(h=h, a=a)

    # -- loss and output error ---------------------------------------------------------------
    def targets(self, y: torch.Tensor, dtype=None) -> torch.Tensor:
        """One-hot targets from integer labels (pass-through for float targets)."""
        if y.dtype.is_floating_point:
            return y
        t = torch.zeros(y.shape[0], self.sizes[-1], dtype=dtype or self.layers[0].weight.dtype, device=y.device)
        t.scatter_(1, y.view(-1, 1), 1.0)
        return t

    def per_example_loss(self, rec: Record, t: torch.Tensor) -> torch.Tensor:
        o = rec.output
        if self.loss_name == "mse":
            return 0.5 * ((t - o) ** 2).sum(1)
        if self.loss_name == "bce":
            z = rec.a[-1]  # stable form from the logits
            return torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none").sum(1)
        z = rec.a[-1]
        return -(t * torch.log_softmax(z, dim=1)).sum(1)

    def loss_scale(self, batch_size: int) -> float:
        """Factor that turns a sum over the batch into the configured reduction."""
        return 1.0 if self.reduction == "sum" else 1.0 / batch_size

    def batch_loss(self, rec: Record, t: torch.Tensor) -> torch.Tensor:
        return self.per_example_loss(rec, t).sum() * self.loss_scale(t.shape[0])

    def output_error(self, rec: Record, t: torch.Tensor) -> torch.Tensor:
        """Per-example ``e = ∂ℓ_i/∂a_L`` (unreduced), closed form for every output/loss pair."""
        return self.error_and_loss(rec, t)[0]

    def error_and_loss(self, rec: Record, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output_error(rec, t), batch_loss(rec, t))`` with the work they share done once."""
        o = rec.output
        if self.loss_name in ("bce", "ce"):
            # sigmoid+BCE and softmax+CE both give o - t at the pre-activation
            return o - t, self.batch_loss(rec, t)
        d = o - t  # ∂ℓ/∂o for ½‖t − o‖²
        flat = d.reshape(-1)
        loss = torch.dot(flat, flat) * (0.5 * self.loss_scale(t.shape[0]))
        if self.output == "softmax":
            return o * (d - (o * d).sum(1, keepdim=True)), loss
        if self.output == "sigmoid":
            return d.mul_(torch.addcmul(o, o, o, value=-1.0)), loss  # (o − t)·o(1 − o)
        return d, loss


def _uniform(shape, bound, gen, dtype):
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0).mul_(bound).to(dtype)
