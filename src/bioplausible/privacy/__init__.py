"""Privacy mechanisms: the paper's update noise, DP-SGD for every rule, Laplace input perturbation,
accounting and audits (see ``docs/privacy.md``).

* :func:`make_pipeline` builds the gradient pipeline a run's config asks for (validated up front);
* :func:`make_private` makes any rule private in one call from Python;
* :mod:`.clipping` (closed-form per-example norms), :mod:`.mechanisms` (noise), :mod:`.accounting`
  (dp-accounting events, RDP and PLD), :mod:`.audit` (membership inference, noise robustness).
"""

from __future__ import annotations

from ..errors import UserError
from . import accounting
from .noise import check_sampler
from .pipeline import Plain, Private


def make_pipeline(cfg, n_train: int, device):
    """The gradient pipeline a run's config asks for; every check that needs ``n`` happens here."""
    uses = (
        cfg.update_noise > 0
        or cfg.clip_norm is not None
        or cfg.noise_multiplier is not None
        or cfg.target_epsilon is not None
        or cfg.input_epsilon is not None
        or cfg.sampling == "poisson"
        or cfg.per_layer_clipping
    )
    if not uses:
        return Plain()
    epochs = cfg.epochs
    pipe = build(
        n=n_train, batch_size=cfg.batch_size, epochs=epochs, sampling=cfg.sampling, clip_norm=cfg.clip_norm,
        noise_multiplier=cfg.noise_multiplier, target_epsilon=cfg.target_epsilon, delta=cfg.delta,
        per_layer_clipping=cfg.per_layer_clipping, update_noise=cfg.update_noise, noise_site=cfg.noise_site,
        input_epsilon=cfg.input_epsilon, input_noise_fresh=cfg.input_noise_fresh, standardize=cfg.standardize,
        seed=cfg.seed, device=device, noise_sampler=cfg.noise_sampler, multiplicity=cfg.augment_multiplicity,
    )
    if pipe.private:
        # what the run releases beyond the trained weights that the accountant does not cover
        if cfg.stop_delta is not None:
            pipe.caveats.append("early stopping (stop_delta) reads the non-private training loss, so the number "
                                "of epochs is not covered; use --no-early-stop")
        if cfg.standardize:
            pipe.caveats.append("standardize uses the training set's per-channel mean and std without noise")
    return pipe


def build(*, n, batch_size, epochs, sampling=None, clip_norm=None, noise_multiplier=None, target_epsilon=None,
          delta=None, per_layer_clipping=False, update_noise=0.0, noise_site="gradient", input_epsilon=None,
          input_noise_fresh=False, standardize=False, accountant="pld", seed=0, device="cpu",
          noise_sampler="auto", multiplicity=1) -> Private:
    """Validate a privacy setting for ``n`` training examples and build its :class:`Private` pipeline."""
    if batch_size > n:
        raise UserError(f"batch_size: invalid value {batch_size}; accepted: at most the {n} training examples")
    check_sampler(noise_sampler)
    if accountant not in accounting.ACCOUNTANTS:
        raise UserError(f"accountant: invalid value {accountant!r}; accepted: {', '.join(accounting.ACCOUNTANTS)}")
    dp_asked = clip_norm is not None or noise_multiplier is not None or target_epsilon is not None
    if update_noise > 0 and dp_asked:
        raise UserError(
            f"update_noise: invalid value {update_noise!r} together with DP-SGD (clip_norm/noise_multiplier/"
            "target_epsilon); accepted: 0 (use either the paper's update noise or DP-SGD)"
        )
    if per_layer_clipping and clip_norm is None and target_epsilon is None:
        raise UserError("per_layer_clipping: needs clip_norm (or target_epsilon); accepted: with --clip-norm C")
    if input_epsilon is not None and standardize:
        raise UserError(
            "input_epsilon: Laplace input perturbation needs features in [0, 1]; accepted: without standardize"
        )
    if target_epsilon is not None and clip_norm is None:
        clip_norm = 1.0
    if sampling is None:
        sampling = "poisson" if dp_asked else "shuffle"
    if delta is None:
        delta = accounting.default_delta(n)
    accounting.check_delta(delta, n)
    reasons = []
    if update_noise > 0:
        reasons.append(f"update noise sigma={update_noise:g} at site {noise_site!r} is added without per-example "
                       "clipping, so it bounds no example's influence")
    if clip_norm is not None and noise_multiplier is None and target_epsilon is None:
        reasons.append("per-example clipping without noise (give --noise-multiplier or --target-epsilon)")
    if noise_multiplier is not None and clip_norm is None:
        reasons.append("noise without per-example clipping bounds nothing (give --clip-norm)")
    if noise_multiplier == 0 and clip_norm is not None:
        reasons.append("noise multiplier 0")
    pipe = Private(
        n=n, batch_size=batch_size, sampling=sampling, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
        per_layer_clipping=per_layer_clipping, delta=delta, update_noise=update_noise, noise_site=noise_site,
        input_epsilon=input_epsilon, input_noise_fresh=input_noise_fresh, accountant=accountant, seed=seed,
        device=device, target_epsilon=target_epsilon, reasons=reasons, noise_sampler=noise_sampler,
        multiplicity=multiplicity,
    )
    if target_epsilon is not None:
        releases = epochs if input_noise_fresh else 1
        lap = [accounting.laplace_event(input_epsilon, releases)] if input_epsilon is not None else []
        steps = epochs * pipe.steps_per_epoch
        if lap and accounting.epsilon(lap[0], delta, accountant) >= target_epsilon:
            raise UserError(
                f"target_epsilon: {target_epsilon!r} is already spent by the Laplace input perturbation "
                f"(input_epsilon={input_epsilon!r}); accepted: a larger target_epsilon or input_epsilon"
            )

        def make_event(sigma):
            return accounting.compose(
                [accounting.dpsgd_event(sigma, pipe.rate, steps, sampling, pipe.steps_per_epoch)] + lap
            )

        pipe.noise_multiplier = accounting.calibrate_noise(target_epsilon, delta, make_event, accountant)
        pipe.dpsgd = True
    return pipe


def make_private(rule, *, n_train: int, batch_size: int, epochs: int = 1, target_epsilon: float | None = None,
                 noise_multiplier: float | None = None, clip_norm: float | None = None, delta: float | None = None,
                 per_layer_clipping: bool = False, sampling: str | None = None, accountant: str = "pld",
                 seed: int = 0, noise_sampler: str = "auto", multiplicity: int = 1) -> "PrivateRule":
    """Make ``rule`` (any of BP, FA, DFA, IFA, DTP, bound to its network) train with DP-SGD.

    Returns a :class:`PrivateRule`: ``batches(gen)`` gives one epoch of (Poisson-sampled) index tensors;
    ``step_grads(x, t)`` writes the clipped, noised gradient of every parameter the rule trains into
    ``.grad`` (call ``optimizer.step()`` after it, also for empty batches: pass ``x`` with 0 rows or
    ``None``); ``epsilon()`` is the ε spent so far at ``delta``. ``noise_sampler`` picks the Gaussian
    sampler (:mod:`.noise`: ``auto``, ``torch`` or ``native``). With ``multiplicity`` = k > 1 (augmentation
    multiplicity), ``x`` holds k augmented copies of each sampled example as consecutive rows; each
    example's gradient is the average over its copies, clipped as one::

        priv = make_private(rule, n_train=60000, batch_size=256, epochs=40, target_epsilon=3.0, clip_norm=1.0)
        for idx in priv.batches(gen):
            priv.step_grads(x[idx], t[idx]); opt.step()
        print(priv.epsilon(), priv.noise_multiplier)
    """
    from ..errors import check_range

    n_train = check_range("n_train", n_train, 1, None, kind=int)
    batch_size = check_range("batch_size", batch_size, 1, None, kind=int)
    epochs = check_range("epochs", epochs, 1, None, kind=int)
    multiplicity = check_range("multiplicity", multiplicity, 1, None, kind=int)
    if target_epsilon is None and noise_multiplier is None:
        raise UserError("make_private: give target_epsilon or noise_multiplier; accepted: a positive float")
    if target_epsilon is not None and noise_multiplier is not None:
        raise UserError("target_epsilon: give either target_epsilon or noise_multiplier, not both")
    if clip_norm is None:
        raise UserError("clip_norm: invalid value None; accepted: a positive float (per-example clipping bound C)")
    clip_norm = check_range("clip_norm", clip_norm, 0, None, lo_open=True)
    if target_epsilon is not None:
        target_epsilon = check_range("target_epsilon", target_epsilon, 0, None, lo_open=True)
    if noise_multiplier is not None:
        noise_multiplier = check_range("noise_multiplier", noise_multiplier, 0, None)
    if sampling not in (None, "poisson", "shuffle"):
        raise UserError(f"sampling: invalid value {sampling!r}; accepted: poisson, shuffle")
    device = next(rule.net.parameters()).device
    pipe = build(n=n_train, batch_size=batch_size, epochs=epochs, sampling=sampling, clip_norm=clip_norm,
                 noise_multiplier=noise_multiplier, target_epsilon=target_epsilon, delta=delta,
                 per_layer_clipping=per_layer_clipping, accountant=accountant, seed=seed, device=device,
                 noise_sampler=noise_sampler, multiplicity=multiplicity)
    return PrivateRule(rule, pipe)


class PrivateRule:
    """A rule wrapped with a DP-SGD pipeline (see :func:`make_private`)."""

    def __init__(self, rule, pipeline: Private):
        self.rule, self.pipeline = rule, pipeline

    @property
    def noise_multiplier(self) -> float:
        return self.pipeline.noise_multiplier

    @property
    def clip_norm(self) -> float:
        return self.pipeline.clip_norm

    @property
    def delta(self) -> float:
        return self.pipeline.delta

    def batches(self, gen):
        return self.pipeline.batches(self.pipeline.n, self.pipeline.batch_size, gen)

    def step_grads(self, x, t):
        """Write the private gradient of the batch ``(x, t)`` into ``.grad``; returns the Teaching."""
        if x is None or x.shape[0] == 0:
            self.pipeline.apply(None, self.rule, self.pipeline.batch_size)
            return None
        k = self.pipeline.multiplicity
        if x.shape[0] % k:
            raise UserError(f"x: {x.shape[0]} rows are not whole groups of multiplicity={k} copies per example; "
                            f"accepted: a multiple of {k} rows (each example's copies consecutive)")
        teaching = self.rule.teach(x, t)
        self.pipeline.apply(teaching, self.rule, self.pipeline.batch_size)
        return teaching

    def epsilon(self):
        return self.pipeline.epsilon()

    def summary(self) -> dict:
        return self.pipeline.summary()


__all__ = ["Plain", "Private", "PrivateRule", "make_pipeline", "make_private", "build", "accounting"]
