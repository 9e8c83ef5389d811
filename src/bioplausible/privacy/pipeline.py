"""The gradient pipeline between a rule's teaching signals and the optimizer.

The training loop asks a pipeline for three things, so privacy mechanisms plug in without touching
the loop:

* ``batches(n, batch_size, gen)``: the index tensors of one epoch (shuffled fixed-size batches, or
  Poisson sampling for DP-SGD);
* ``apply(teaching, rule, batch_size)``: turn the teaching terms into ``.grad`` of every trained
  parameter (plain ``s·δᵀh``, or clipped and noised);
* ``epoch_metrics(epochs_done)`` / ``summary()``: what the mechanism spent (ε) for the run's records.

``state()``/``load_state()`` carry its random generator through checkpoints for exact resume.

:class:`Plain` is the non-private pipeline. :class:`Private` adds, each optional: Poisson sampling;
the paper's update noise (three sites, no guarantee); DP-SGD (per-example clipping in closed form,
Gaussian noise ``σC`` on the clipped sum); Laplace input perturbation; and the accounting.

DP-SGD gradient: ``g = (Σ_i clip_C(g_i) + N(0, σ²C² I)) · s`` where ``g_i`` is example i's unscaled
pseudo-gradient over every parameter the rule trains, and ``s`` is the loss reduction's scale with the
*expected* batch size under Poisson sampling: ``s = 1`` for ``reduction="sum"``, ``s = 1/(qn)`` (= 1/batch
size) for ``"mean"`` (the realised batch size is data-dependent and would leak; with shuffled
fixed-size batches the realised size is public and is used).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..rules.base import Teaching, Term, write_grad
from . import accounting
from .clipping import clipped_factors
from .mechanisms import perturb_inputs
from .noise import make_noise


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return list(torch.split(perm, batch_size))


def poisson_batches(n: int, rate: float, steps: int, gen: torch.Generator):
    """``steps`` batches, each holding every example independently with probability ``rate``.

    Drawn as a Bernoulli process: the gaps between consecutive members are i.i.d. Geometric(rate)
    (support 1, 2, …), so a batch costs O(rate·n) draws instead of one uniform per example per step
    (the same distribution; at n = 60000, batch 200: 0.009 s instead of ~0.1 s per epoch).
    """
    if rate >= 1.0:
        return [torch.arange(n) for _ in range(steps)]
    chunk = int(n * rate + 4.0 * math.sqrt(n * rate) + 16)  # rarely needs a second draw
    out = []
    for _ in range(steps):
        pos = torch.empty(chunk, dtype=torch.float64).geometric_(rate, generator=gen).cumsum_(0)
        while pos[-1] <= n:  # not past the last example yet: draw more gaps
            more = torch.empty(chunk, dtype=torch.float64).geometric_(rate, generator=gen).cumsum_(0)
            pos = torch.cat([pos, more.add_(pos[-1])])
        out.append(pos[pos <= n].long().sub_(1))  # 1-based positions -> indices
    return out


def trained_layers(rule) -> list[nn.Linear]:
    """Every linear layer a rule trains: the network's, then the rule's own (DTP's inverses)."""
    return list(rule.net.layers) + [m for m in rule.modules() if isinstance(m, nn.Linear)]


class Plain:
    """No privacy mechanism: exact pseudo-gradients, shuffled fixed-size batches."""

    private = False

    def batches(self, n, batch_size, gen):
        return shuffled_batches(n, batch_size, gen)

    def apply(self, teaching, rule, batch_size):
        rule.write_grads(teaching)

    fusable_sgd = True

    def apply_sgd(self, teaching, rule, batch_size, lr_of):
        """:meth:`apply` and a plain SGD step in one (see ``Rule.sgd_step``)."""
        rule.sgd_step(teaching, lr_of)

    def epoch_metrics(self, epochs_done: int) -> dict:
        return {}

    def summary(self) -> dict:
        return {"private": False}

    def state(self) -> dict:
        return {}

    def load_state(self, states: dict) -> None:
        pass


NO_GUARANTEE = "no formal privacy guarantee (epsilon = inf)"


class Private:
    """Sampling, update noise or DP-SGD, Laplace input perturbation and their accounting.

    Built by :func:`bioplausible.privacy.make_pipeline` (from a run config) or
    :func:`bioplausible.privacy.make_private` (from Python); every argument is validated there.
    """

    def __init__(
        self,
        *,
        n: int,
        batch_size: int,
        sampling: str = "shuffle",
        clip_norm: float | None = None,
        noise_multiplier: float | None = None,
        per_layer_clipping: bool = False,
        delta: float | None = None,
        update_noise: float = 0.0,
        noise_site: str = "gradient",
        input_epsilon: float | None = None,
        input_noise_fresh: bool = False,
        accountant: str = "pld",
        seed: int = 0,
        device="cpu",
        target_epsilon: float | None = None,
        reasons: list[str] | None = None,
        noise_sampler: str = "auto",
        multiplicity: int = 1,
    ):
        self.n, self.batch_size, self.sampling = int(n), int(batch_size), sampling
        self.rate = self.batch_size / self.n
        self.steps_per_epoch = max(1, round(self.n / self.batch_size)) if sampling == "poisson" else math.ceil(
            self.n / self.batch_size
        )
        self.clip_norm, self.noise_multiplier = clip_norm, noise_multiplier
        self.per_layer_clipping = bool(per_layer_clipping)
        # augmentation multiplicity: each example arrives as this many consecutive rows (its augmented
        # copies); its gradient is their average, clipped as one (clipping.py)
        self.multiplicity = int(multiplicity)
        self.delta = delta
        self.update_noise, self.noise_site = float(update_noise), noise_site
        self.input_epsilon, self.input_noise_fresh = input_epsilon, bool(input_noise_fresh)
        self.accountant = accountant
        self.target_epsilon = target_epsilon
        self.seed = int(seed)
        self.device = torch.device(device)
        # Gaussian draws (DP-SGD noise, update noise): see noise.py for the samplers
        self.noise = make_noise(noise_sampler, self.seed + 0x5EED, self.device)
        self.steps = 0  # gradient steps taken (every one spends privacy, empty batches included)
        self.releases = 0  # Laplace draws of the training inputs
        # Why the run carries no formal guarantee (empty = it does, or it has no mechanism at all).
        self.reasons = list(reasons or [])
        self.dpsgd = clip_norm is not None and noise_multiplier is not None
        self.caveats: list[str] = []  # releases outside the guarantee (set by make_pipeline)

    # -- what the loop calls ----------------------------------------------------------------------
    @property
    def private(self) -> bool:
        return not self.reasons and (self.dpsgd or self.input_epsilon is not None)

    def batches(self, n, batch_size, gen):
        if self.sampling == "poisson":
            return poisson_batches(n, self.rate, self.steps_per_epoch, gen)
        return shuffled_batches(n, batch_size, gen)

    @property
    def fusable_sgd(self) -> bool:
        """Whether :meth:`apply_sgd` may stand for ``apply`` + a plain SGD step (not with update noise,
        whose ``update`` site moves the weights itself)."""
        return self.update_noise == 0

    def apply_sgd(self, teaching, rule, batch_size, lr_of):
        """:meth:`apply` followed by plain SGD (``p ← p − η_p·grad_p``, ``η_p = lr_of[id(p)]``), fused:
        the private gradient is added to the weights without being written to ``.grad`` (the same
        noise draws, equal up to float rounding)."""
        self.steps += 1
        if self.clip_norm is not None or self.noise_multiplier is not None:
            self._dpsgd(teaching, rule, lr_of)
        else:
            rule.sgd_step(teaching, lr_of)

    def apply(self, teaching, rule, batch_size):
        self.steps += 1
        if self.clip_norm is not None or self.noise_multiplier is not None:
            self._dpsgd(teaching, rule)
            return
        if teaching is None:  # an empty Poisson batch: nothing to learn from
            for layer in trained_layers(rule):
                for p in (layer.weight, layer.bias):
                    write_grad(p, lambda g: g.zero_())
        elif self.update_noise > 0 and self.noise_site in ("error", "signal"):
            rule.write_grads(self._noisy_teaching(teaching, rule))
            return
        else:
            rule.write_grads(teaching)
        if self.update_noise > 0:  # site "gradient": on .grad; site "update": on the weights themselves
            with torch.no_grad():
                for layer in trained_layers(rule):
                    for p in (layer.weight, layer.bias):
                        if self.noise_site == "update":
                            # the step that follows moves W by the optimizer's update from the clean
                            # gradient: W ← W − lr·u(g) + σξ, the noise not scaled by the learning rate
                            p.add_(self.noise.like(p, self.update_noise))
                        else:
                            p.grad.add_(self.noise.like(p.grad, self.update_noise))

    def _noisy_teaching(self, teaching: Teaching, rule) -> Teaching:
        sigma = self.update_noise
        with torch.no_grad():
            if self.noise_site == "error":
                e = teaching.error + self.noise.like(teaching.error, sigma)
                deltas = rule.hidden_signals(teaching.record, e) + [e]
                fwd = [Term(t.layer, d, t.inp) for t, d in zip(teaching.forward_terms, deltas)]
                terms = fwd + teaching.terms[len(fwd):]
            else:
                terms = [Term(t.layer, t.delta + self.noise.like(t.delta, sigma), t.inp) for t in teaching.terms]
        return Teaching(terms=terms, record=teaching.record, loss=teaching.loss, error=teaching.error,
                        scale=teaching.scale)

    def _dpsgd(self, teaching, rule, lr_of=None):
        layers = trained_layers(rule)
        reduction = rule.net.reduction
        if reduction == "sum":
            scale = 1.0
        elif self.sampling == "poisson" or teaching is None:
            scale = 1.0 / self.batch_size  # expected batch size qn: the realised one is private
        else:  # shuffled fixed-size batches, mean: 1/rows, and rows = examples × copies
            scale = teaching.scale * self.multiplicity
        k = self.multiplicity
        std = (self.noise_multiplier or 0.0) * (self.clip_norm if self.clip_norm is not None else 1.0)
        with torch.no_grad():
            sums = {}
            if teaching is not None:
                terms = teaching.terms
                if self.clip_norm is not None:
                    factors = clipped_factors(terms, self.clip_norm, self.per_layer_clipping, group=k)
                else:
                    factors = [None] * len(terms)
                for term, c in zip(terms, factors):
                    if c is None:
                        cd = term.delta if k == 1 else term.delta / k
                    else:
                        cd = term.delta * c.unsqueeze(1)
                    sums[id(term.layer)] = (cd, term.inp)
            for layer in layers:
                cd, h = sums.get(id(layer), (None, None))
                W, b = layer.weight, layer.bias
                if lr_of is None:
                    # grad = scale·(Σ_i c_i δ_i h_iᵀ + σC·ξ), written in place: draw ξ into .grad, one addmm
                    for p in (W, b):
                        write_grad(p, lambda g: self.noise.fill_(g, std * scale) if std > 0 else g.zero_())
                    if cd is not None:
                        W.grad.addmm_(cd.t(), h, alpha=scale)
                        b.grad.add_(cd.sum(0), alpha=scale)
                else:  # plain SGD fused: p ← p − η·grad without materialising grad (same draws, same order)
                    if std > 0:
                        for p in (W, b):
                            self.noise.add_(p, -lr_of[id(p)] * std * scale)
                    if cd is not None:
                        W.addmm_(cd.t(), h, alpha=-lr_of[id(W)] * scale)
                        b.add_(cd.sum(0), alpha=-lr_of[id(b)] * scale)

    # -- Laplace input perturbation ---------------------------------------------------------------
    def _input_gen(self, epoch: int, device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed((self.seed * 1_000_003 + 7 * epoch + 12345) % 2**63)

    def prepare_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_epsilon is None:
            return x
        self.releases = max(self.releases, 1)
        return perturb_inputs(x, self.input_epsilon, self._input_gen(0, x.device))

    def epoch_inputs(self, x_clean: torch.Tensor, epoch: int):
        """Fresh Laplace noise for 0-based ``epoch`` (``None``: keep the inputs as they are)."""
        if self.input_epsilon is None or not self.input_noise_fresh or epoch == 0:
            return None
        self.releases = max(self.releases, epoch + 1)
        return perturb_inputs(x_clean, self.input_epsilon, self._input_gen(epoch, x_clean.device))

    # -- accounting -----------------------------------------------------------------------------
    def event(self, steps: int | None = None, releases: int | None = None):
        """The DP event of what the run did so far (or of ``steps``/``releases`` if given)."""
        from dp_accounting import dp_event

        steps = self.steps if steps is None else steps
        releases = self.releases if releases is None else releases
        events = []
        if self.dpsgd:
            events.append(accounting.dpsgd_event(self.noise_multiplier, self.rate, steps, self.sampling,
                                                 self.steps_per_epoch))
        if self.input_epsilon is not None:
            events.append(accounting.laplace_event(self.input_epsilon, releases))
        if self.reasons:
            events.append(dp_event.NonPrivateDpEvent())
        return accounting.compose(events)

    def epsilons(self) -> dict:
        if self.reasons:
            return {"epsilon_rdp": "inf", "epsilon_pld": "inf"}
        ev = self.event()
        return {f"epsilon_{a}": accounting.epsilon(ev, self.delta, a) for a in accounting.ACCOUNTANTS[::-1]}

    def epoch_metrics(self, epochs_done: int) -> dict:
        if self.reasons:
            return {"epsilon": "inf", "privacy": NO_GUARANTEE}
        if not self.private:
            return {}
        return self.epsilons()

    def epsilon(self) -> float | str:
        """ε spent so far with the run's accountant (``"inf"`` when there is no guarantee)."""
        if self.reasons:
            return "inf"
        return accounting.epsilon(self.event(), self.delta, self.accountant)

    def summary(self) -> dict:
        out = {
            "private": self.private,
            "sampling": self.sampling,
            "sampling_rate": self.rate,
            "steps": self.steps,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "per_layer_clipping": self.per_layer_clipping,
        }
        if self.update_noise > 0:
            out.update({"update_noise": self.update_noise, "noise_site": self.noise_site})
        if self.update_noise > 0 or self.noise_multiplier:
            out["noise_sampler"] = self.noise.kind
        if self.multiplicity > 1:
            out["augment_multiplicity"] = self.multiplicity
        if self.input_epsilon is not None:
            out.update({"input_epsilon": self.input_epsilon, "input_noise_fresh": self.input_noise_fresh,
                        "input_releases": self.releases})
        if self.target_epsilon is not None:
            out["target_epsilon"] = self.target_epsilon
        if self.reasons:
            out.update({"epsilon": "inf", "delta": self.delta, "accountant": None,
                        "privacy": f"{NO_GUARANTEE}: " + "; ".join(self.reasons)})
            return out
        if not self.private:  # Poisson sampling alone: no mechanism, so no ε to claim (not even 0)
            out["privacy"] = "no privacy mechanism (sampling alone): no epsilon is claimed"
            return out
        if self.caveats:
            out["privacy_caveats"] = list(self.caveats)
        eps = self.epsilons()
        out.update(eps)
        out.update({"epsilon": eps[f"epsilon_{self.accountant}"], "delta": self.delta, "accountant": self.accountant,
                    "dp_event": repr(self.event())})
        return out

    def state(self) -> dict:
        key = "noise" if self.noise.kind == "torch" else f"noise_{self.noise.kind}"
        return {key: self.noise.state(), "counters": torch.tensor([self.steps, self.releases], dtype=torch.int64)}

    def load_state(self, states: dict) -> None:
        # resume on the stream the run started with, also where this process would pick another sampler
        for kind, key in (("torch", "noise"), ("native", "noise_native")):
            if key in states:
                if self.noise.kind != kind:
                    self.noise = make_noise(kind, self.seed + 0x5EED, self.device)
                self.noise.load_state(states[key])
        if "counters" in states:
            self.steps, self.releases = (int(v) for v in states["counters"].tolist())
