"""What a user would run instead of bioplausible: the peers the suite times against.

* ``autograd``: the plain PyTorch loop for BP (``nn.Sequential`` of ``nn.Linear`` + activations,
  ``loss.backward()``, ``torch.optim.SGD``);
* ``biotorch-dfa``: biotorch's DFA layers (``biotorch.layers.dfa.Linear`` wired by its
  ``BioModule``), trained by the same autograd loop;
* ``opacus``: DP-SGD with Opacus' standard per-sample gradients (``GradSampleModule`` hooks +
  ``DPOptimizer``);
* ``opacus-ghost``: Opacus' ghost clipping (``GradSampleModuleFastGradientClipping`` +
  ``DPOptimizerFastGradientClipping`` + ``DPLossFastGradientClipping``), which needs a per-example
  loss, given here by :class:`HalfSquaredError` (``nn.MSELoss`` has the wrong shape for it).

Each trains the same network (tanh hidden layers, sigmoid output, ``½‖t − o‖²`` summed over the
batch), on the same tensors in memory, with the same shuffled fixed-size batches. A peer that cannot
be imported raises :class:`Unavailable`; the suite reports it as skipped with the reason.
"""

from __future__ import annotations

import contextlib
import io
import time

import torch
from torch import nn

PEERS = ("autograd", "biotorch-dfa", "opacus", "opacus-ghost")


class Unavailable(RuntimeError):
    """The peer's package is missing or does not work in this environment."""


class HalfSquaredError(nn.Module):
    """``½ Σ_k (t_k − o_k)²`` per example, reduced by ``reduction`` (``none``, ``sum`` or ``mean``)."""

    def __init__(self, reduction: str = "sum"):
        super().__init__()
        self.reduction = reduction

    def forward(self, o, t):
        per = 0.5 * ((o - t) ** 2).sum(1)
        if self.reduction == "none":
            return per
        return per.sum() if self.reduction == "sum" else per.mean()


def sequential(sizes, linear=nn.Linear) -> nn.Sequential:
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(linear(a, b))
        mods.append(nn.Tanh() if i < len(sizes) - 2 else nn.Sigmoid())
    return nn.Sequential(*mods)


class Peer:
    """One peer on one configuration; :meth:`run` trains ``batches`` batches and returns seconds."""

    name = "peer"
    floor_rule = "bp"  # whose matrix-multiply floor applies
    private = False

    def __init__(self, sizes, x, t, batch_size: int, lr: float = 5e-4, device="cpu", clip_norm=1.0,
                 noise_multiplier=1.0, seed: int = 0):
        self.sizes = list(sizes)
        self.x, self.t = x, t
        self.B = int(batch_size)
        self.lr = lr
        self.device = torch.device(device)
        self.clip_norm, self.noise_multiplier = clip_norm, noise_multiplier
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.setup()

    def setup(self):
        raise NotImplementedError

    def step(self, xb, tb):
        raise NotImplementedError

    def run(self, batches: int | None = None, clock=time.perf_counter) -> tuple[float, int]:
        """Train ``batches`` batches (default: one epoch); return (seconds by ``clock``, batches done)."""
        n = self.x.shape[0]
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        splits = list(torch.split(perm, self.B))
        if batches is not None:
            splits = splits[:batches]
        _sync(self.device)
        t0 = clock()
        for idx in splits:
            self.step(self.x.index_select(0, idx), self.t.index_select(0, idx))
        _sync(self.device)
        return clock() - t0, len(splits)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Autograd(Peer):
    name = "autograd"

    def setup(self):
        self.model = sequential(self.sizes).to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        self.loss = HalfSquaredError("sum")

    def step(self, xb, tb):
        loss = self.loss(self.model(xb), tb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class BiotorchDFA(Peer):
    name = "biotorch-dfa"
    floor_rule = "dfa"

    def setup(self):
        try:
            from biotorch.module.biomodule import BioModule
        except Exception as exc:  # ImportError, or a broken install
            raise Unavailable(f"biotorch not importable ({type(exc).__name__}: {exc}); "
                              "install with: pip install --no-deps biotorch==0.0.16") from None
        with contextlib.redirect_stdout(io.StringIO()):  # its converter prints a report
            self.model = BioModule(sequential(self.sizes), mode="dfa", output_dim=self.sizes[-1]).to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        self.loss = HalfSquaredError("sum")

    def step(self, xb, tb):
        out = self.model(xb, targets=tb, loss_function=self.loss)
        loss = self.loss(out, tb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def _opacus():
    try:
        import opacus  # noqa: F401
        from opacus import GradSampleModule
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
    except Exception as exc:
        raise Unavailable(f"opacus not importable ({type(exc).__name__}: {exc}); "
                          "install with: pip install opacus==1.6.0") from None
    return GradSampleModule, GradSampleModuleFastGradientClipping, DPOptimizer, DPOptimizerFastGradientClipping, \
        DPLossFastGradientClipping


class Opacus(Peer):
    """DP-SGD with per-example clipping to ``clip_norm`` and Gaussian noise ``σ·clip_norm``."""

    name = "opacus"
    private = True

    def setup(self):
        GSM, _, DPOptimizer, _, _ = _opacus()
        self.model = GSM(sequential(self.sizes).to(self.device), loss_reduction="sum")
        self.opt = DPOptimizer(
            torch.optim.SGD(self.model.parameters(), lr=self.lr), noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.clip_norm, expected_batch_size=self.B, loss_reduction="sum",
        )
        self.loss = HalfSquaredError("sum")

    def step(self, xb, tb):
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(xb), tb).backward()
        self.opt.step()


class OpacusGhost(Peer):
    name = "opacus-ghost"
    private = True

    def setup(self):
        _, GSMFast, _, DPOptFast, DPLoss = _opacus()
        self.model = GSMFast(sequential(self.sizes).to(self.device), loss_reduction="sum",
                             max_grad_norm=self.clip_norm, use_ghost_clipping=True)
        self.opt = DPOptFast(
            torch.optim.SGD(self.model.parameters(), lr=self.lr), noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.clip_norm, expected_batch_size=self.B, loss_reduction="sum",
        )
        self.loss = DPLoss(self.model, self.opt, HalfSquaredError("sum"), loss_reduction="sum")

    def step(self, xb, tb):
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(xb), tb).backward()
        self.opt.step()


PEER_CLASSES = {c.name: c for c in (Autograd, BiotorchDFA, Opacus, OpacusGhost)}


def make_peer(name: str, *args, **kw) -> Peer:
    return PEER_CLASSES[name](*args, **kw)
