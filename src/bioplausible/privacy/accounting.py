"""(ε, δ) accounting with Google's ``dp-accounting``: a run is described as DP events.

* DP-SGD with Poisson sampling (rate ``q``, noise multiplier ``σ``, ``T`` steps):
  ``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)`` under add/remove-one adjacency.
* DP-SGD with shuffled fixed-size batches: no amplification by sampling is claimed. Every example
  lands in exactly one batch per epoch, and under replace-one adjacency (the natural one for a fixed
  partition into batches) its clipped contribution can change the batch sum by up to ``2C``; with
  noise of standard deviation ``σC`` an epoch is a Gaussian mechanism of noise multiplier ``σ/2``
  (sensitivity 1), so ``SelfComposed(Gaussian(σ/2), epochs)``. This is exact for the Gaussian
  mechanism and conservative for shuffling (shuffling's amplification is not used).
* Laplace input perturbation (ε_in per example, local DP): ``Laplace(1/ε_in)`` once, or
  ``SelfComposed(Laplace(1/ε_in), epochs)`` if the noise is drawn fresh every epoch.
* Several mechanisms on one run: ``Composed([...])``.

Both accountants of the library are used: RDP (``RdpAccountant``, with the library's modern
RDP→(ε, δ) conversion) and PLD (``PLDAccountant``, numerically tight). ``--target-epsilon`` is
calibrated with ``dp_accounting.calibrate_dp_mechanism`` against the run's accountant (PLD by default).
"""

from __future__ import annotations

import importlib
import logging
import math

from ..errors import UserError


class _Lazy:
    """A module imported on first attribute access: ``dp_accounting`` pulls in SciPy (~1 s), which
    every worker and CLI call would otherwise pay even when nothing is private."""

    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attr):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


dp_accounting = _Lazy("dp_accounting")
dp_event = _Lazy("dp_accounting.dp_event")
pld_privacy_accountant = _Lazy("dp_accounting.pld.pld_privacy_accountant")
rdp_privacy_accountant = _Lazy("dp_accounting.rdp.rdp_privacy_accountant")

ACCOUNTANTS = ("pld", "rdp")
MAX_SIGMA = 1e4


def dpsgd_event(noise_multiplier: float, sampling_rate: float, steps: int, sampling: str = "poisson",
                steps_per_epoch: int = 1) -> dp_event.DpEvent:
    """The DP event of ``steps`` DP-SGD steps."""
    if steps <= 0:
        return dp_event.NoOpDpEvent()
    if noise_multiplier <= 0:
        return dp_event.NonPrivateDpEvent()
    if sampling == "poisson":
        one = dp_event.PoissonSampledDpEvent(sampling_rate, dp_event.GaussianDpEvent(noise_multiplier))
        return dp_event.SelfComposedDpEvent(one, steps)
    epochs = math.ceil(steps / steps_per_epoch)  # a partial epoch still touches its examples once
    return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(noise_multiplier / 2.0), epochs)


def laplace_event(input_epsilon: float, releases: int) -> dp_event.DpEvent:
    """``releases`` independent Laplace perturbations of one example at ε_in each (sensitivity 1)."""
    if releases <= 0:
        return dp_event.NoOpDpEvent()
    return dp_event.SelfComposedDpEvent(dp_event.LaplaceDpEvent(1.0 / input_epsilon), releases)


def compose(events) -> dp_event.DpEvent:
    events = [e for e in events if not isinstance(e, dp_event.NoOpDpEvent)]
    if not events:
        return dp_event.NoOpDpEvent()
    return events[0] if len(events) == 1 else dp_event.ComposedDpEvent(events)


class _QuietAbsl(logging.Filter):
    """dp-accounting's RDP code logs a warning each time a fractional order fails to converge and is
    excluded (it stays correct: the order is simply not used); keep that out of our users' output."""

    def filter(self, record):
        return "failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietAbsl())


def make_accountant(name: str):
    if name == "rdp":
        return rdp_privacy_accountant.RdpAccountant()
    if name == "pld":
        return pld_privacy_accountant.PLDAccountant()
    raise UserError(f"accountant: invalid value {name!r}; accepted: {', '.join(ACCOUNTANTS)}")


def epsilon(event: dp_event.DpEvent, delta: float, accountant: str = "pld") -> float:
    """ε at ``delta`` for ``event`` with a fresh accountant (``inf`` for non-private events)."""
    if isinstance(event, dp_event.NoOpDpEvent):
        return 0.0
    acc = make_accountant(accountant)
    acc.compose(event)
    eps = float(acc.get_epsilon(delta))
    return eps if math.isfinite(eps) else math.inf


def classic_rdp_epsilon(event: dp_event.DpEvent, delta: float) -> float:
    """ε from the RDP curve with the classic conversion ε = min_α RDP(α) + log(1/δ)/(α−1)
    (Abadi et al. / Mironov 2017; what TF Privacy's tutorials print). Looser than :func:`epsilon`."""
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(event)
    orders, rdp = acc._orders, acc._rdp  # the library's own RDP curve
    return float(min(r + math.log(1 / delta) / (a - 1) for a, r in zip(orders, rdp) if a > 1))


def calibrate_noise(target_epsilon: float, delta: float, make_event, accountant: str = "pld") -> float:
    """Smallest noise multiplier σ with ε(make_event(σ)) ≤ target_epsilon (tolerance 1e-3 on σ)."""
    if epsilon(make_event(MAX_SIGMA), delta, accountant) > target_epsilon:
        raise UserError(
            f"target_epsilon: {target_epsilon!r} is unreachable at delta={delta:g} even with noise multiplier "
            f"{MAX_SIGMA:g}; accepted: a larger target_epsilon or delta, fewer epochs or a smaller batch"
        )
    sigma = _calibrate(target_epsilon, delta, make_event, "rdp", 1e-2)
    if accountant == "pld":
        # PLD is tighter than RDP, so its σ lies below RDP's; PLD at tiny σ needs huge grids, so the
        # search starts at max(0.25, σ_rdp/2) (returned as is when that already meets the budget).
        lo = max(0.25, sigma / 2)
        if lo < sigma and epsilon(make_event(lo), delta, "pld") > target_epsilon:
            sigma = _calibrate(target_epsilon, delta, make_event, "pld", lo, sigma)
        elif lo < sigma:
            sigma = lo
    # Brent's answer lies within tol of the optimum: step up until the budget is certainly met.
    while epsilon(make_event(sigma), delta, accountant) > target_epsilon:
        sigma += 1e-3
    return sigma


def _calibrate(target_epsilon, delta, make_event, accountant, lo, hi=MAX_SIGMA) -> float:
    return float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: make_accountant(accountant),
            make_event,
            target_epsilon,
            delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(lo, hi),
            tol=1e-3,
        )
    )


def default_delta(n: int) -> float:
    """The largest power of ten strictly below 1/n (1e-5 for n = 60000)."""
    k = math.floor(math.log10(1.0 / n))
    return 10.0 ** (k - 1) if 10.0**k >= 1.0 / n else 10.0**k


def check_delta(delta: float, n: int) -> float:
    if not (0 < delta < 1.0 / n):
        raise UserError(
            f"delta: invalid value {delta!r}; accepted: 0 < delta < 1/n = {1.0 / n:.3g} for n = {n} training "
            "examples (a δ ≥ 1/n allows releasing an example outright)"
        )
    return delta
