"""Run configuration: one flat, validated dataclass shared by the CLI, the Python API and spec files.

``resolve(preset=..., **overrides)`` starts from the dataclass defaults, applies the preset (which
may depend on rule and dataset) and then the explicit overrides, and validates everything before any
work starts. Every invalid value raises a :class:`~bioplausible.errors.UserError` naming the option,
the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields

from .errors import UserError, check_choice, check_range
from .network import HIDDEN, INITS, LOSSES, OUTPUTS, REDUCTIONS

DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")
OPTIMIZERS = ("sgd", "sgd+momentum", "adam", "rmsprop")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
NOISE_SITES = ("gradient", "error", "signal", "update")
SAMPLINGS = ("poisson", "shuffle")
NOISE_SAMPLERS = ("auto", "torch", "native")  # see bioplausible.privacy.noise
PRESETS = ("paper", "tuned")
FLOAT32_MAX = 3.4e38  # learning rates are applied in float32
# Official training-set sizes, so options that depend on n (batch_size, validation, delta) are checked
# before any data is loaded; training checks again against the data it actually got.
TRAIN_SIZES = {"mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000, "cifar100": 50000, "cifar100-coarse": 50000}
BOOL_FIELDS = ("standardize", "augment_flip", "per_layer_clipping", "input_noise_fresh", "deterministic")


@dataclass
class TrainConfig:
    # what
    dataset: str = "mnist"
    rule: str = "bp"
    preset: str = "paper"
    # network (input and output widths come from the dataset)
    hidden_sizes: list = field(default_factory=lambda: [800])
    hidden: str = "tanh"
    output: str = "sigmoid"
    loss: str = "mse"
    reduction: str = "sum"
    init: str = "uniform"
    rule_options: dict = field(default_factory=dict)
    # optimisation
    epochs: int = 100
    batch_size: int = 200
    optimizer: str = "sgd"
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    inverse_lr: float | None = None  # DTP inverse maps; None = same as lr
    stop_delta: float | None = 1e-4  # stop when |Δ epoch objective| < stop_delta; None = off
    # data
    data_dir: str | None = None
    standardize: bool = False
    validation: float = 0  # count (>= 1) or fraction (< 1) of the training set held out
    train_subset: int | None = None
    test_subset: int | None = None
    augment_shift: int = 0  # random translations of up to this many pixels (training only)
    augment_flip: bool = False  # random horizontal flips (training only)
    augment_multiplicity: int = 1  # K augmented copies per example, their gradients averaged (before clipping)
    # privacy (see bioplausible.privacy)
    update_noise: float = 0.0  # the paper's N(0, σ²) update noise (no formal guarantee)
    noise_site: str = "gradient"
    clip_norm: float | None = None  # DP-SGD per-example clipping bound C
    noise_multiplier: float | None = None  # DP-SGD σ (noise std = σ·C)
    target_epsilon: float | None = None
    delta: float | None = None
    per_layer_clipping: bool = False
    sampling: str | None = None  # None: poisson under DP-SGD, shuffle otherwise
    input_epsilon: float | None = None  # Laplace input perturbation, ε per example
    input_noise_fresh: bool = False  # redraw the Laplace input noise every epoch
    noise_sampler: str = "auto"  # Gaussian sampler: auto (native on CPU where it builds), torch, native
    # execution
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    deterministic: bool = True
    eval_batch_size: int = 10000

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_hash(self) -> str:
        """Identity of a run: hash of everything that changes its numbers (not where data lives)."""
        d = self.to_dict()
        # how, not what: the sampler draws the same distribution (like the device does)
        for k in ("data_dir", "device", "threads", "eval_batch_size", "noise_sampler"):
            d.pop(k)
        if d.get("augment_multiplicity") == 1:
            d.pop("augment_multiplicity")  # the default: runs from before the option keep their hashes
        if not d.get("update_noise"):
            d["noise_site"] = "gradient"  # where no noise goes changes nothing: clean runs share one hash
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def is_private(self) -> bool:
        return self.noise_multiplier is not None or self.target_epsilon is not None


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


def _preset_values(preset: str, rule: str, dataset: str) -> dict:
    from .presets import preset_values

    return preset_values(preset, rule, dataset)


def resolve(preset: str | None = None, **overrides) -> TrainConfig:
    """Defaults, then the preset for (rule, dataset), then ``overrides``; validated."""
    unknown = sorted(set(overrides) - set(FIELD_NAMES))
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r}; accepted: {', '.join(FIELD_NAMES)}")
    preset = preset or overrides.pop("preset", None) or "paper"
    overrides.pop("preset", None)
    check_choice("preset", preset, PRESETS)
    rule = overrides.get("rule", TrainConfig.rule)
    dataset = overrides.get("dataset", TrainConfig.dataset)
    check_choice("dataset", dataset, DATASET_NAMES)  # the preset depends on both: check them first
    _check_rule(rule)
    values = {"preset": preset, **_preset_values(preset, rule, dataset), **overrides}
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def from_dict(d: dict) -> TrainConfig:
    unknown = sorted(set(d) - set(FIELD_NAMES))
    if unknown:
        raise UserError(f"unknown config key {unknown[0]!r}; accepted: {', '.join(FIELD_NAMES)}")
    cfg = TrainConfig(**d)
    validate(cfg)
    return cfg


def validate(c: TrainConfig) -> None:  # noqa: C901 - a flat list of checks reads best
    from .rules import RULES

    check_choice("dataset", c.dataset, DATASET_NAMES)
    _check_rule(c.rule)
    check_choice("preset", c.preset, PRESETS)
    for name in BOOL_FIELDS:
        if not isinstance(getattr(c, name), bool):
            raise UserError(f"{name}: invalid value {getattr(c, name)!r}; accepted: true or false")
    if c.data_dir is not None:
        if not isinstance(c.data_dir, (str, os.PathLike)):
            raise UserError(f"data_dir: invalid value {c.data_dir!r}; accepted: a directory path")
        c.data_dir = os.fspath(c.data_dir)
    if not isinstance(c.hidden_sizes, (list, tuple)) or not c.hidden_sizes:
        raise UserError(f"hidden_sizes: invalid value {c.hidden_sizes!r}; accepted: a non-empty list of positive ints")
    c.hidden_sizes = [check_range("hidden_sizes", h, 1, 1_000_000, kind=int) for h in c.hidden_sizes]
    check_choice("hidden", c.hidden, HIDDEN)
    check_choice("output", c.output, OUTPUTS)
    check_choice("loss", c.loss, LOSSES)
    check_choice("reduction", c.reduction, REDUCTIONS)
    check_choice("init", c.init, INITS)
    if c.loss == "bce" and c.output != "sigmoid":
        raise UserError(f"loss: 'bce' needs output 'sigmoid', got output {c.output!r}")
    if c.loss == "ce" and c.output != "softmax":
        raise UserError(f"loss: 'ce' needs output 'softmax', got output {c.output!r}")
    if not isinstance(c.rule_options, dict):
        raise UserError(f"rule_options: invalid value {c.rule_options!r}; accepted: a table of options")
    accepted = RULES[c.rule].options
    for k, v in c.rule_options.items():
        if k not in accepted:
            raise UserError(
                f"rule option {k!r} does not apply to rule {c.rule!r}; its options: {', '.join(accepted) or 'none'}"
            )
        if isinstance(accepted[k], bool):
            if not isinstance(v, bool):
                raise UserError(f"{k}: invalid value {v!r}; accepted: true or false")
        else:
            c.rule_options[k] = check_range(k, v, 0, None, kind=float)
    c.epochs = check_range("epochs", c.epochs, 1, 100_000, kind=int)
    c.batch_size = check_range("batch_size", c.batch_size, 1, 10_000_000, kind=int)
    check_choice("optimizer", c.optimizer, OPTIMIZERS)
    c.lr = check_range("lr", c.lr, 0, FLOAT32_MAX, lo_open=True)
    c.momentum = check_range("momentum", c.momentum, 0, 1, hi_open=True)
    c.weight_decay = check_range("weight_decay", c.weight_decay, 0, None)
    check_choice("schedule", c.schedule, SCHEDULES)
    if c.inverse_lr is not None:
        c.inverse_lr = check_range("inverse_lr", c.inverse_lr, 0, FLOAT32_MAX, lo_open=True)
        if c.rule != "dtp":
            raise UserError(f"inverse_lr: only rule 'dtp' has inverse maps, got rule {c.rule!r}")
    if c.stop_delta is not None:
        c.stop_delta = check_range("stop_delta", c.stop_delta, 0, None)
    c.validation = check_range("validation", c.validation, 0, None)
    if c.validation >= 1:  # a count of examples (a fraction is < 1)
        c.validation = check_range("validation", c.validation, 1, None, kind=int)
    for name in ("train_subset", "test_subset"):
        if getattr(c, name) is not None:
            setattr(c, name, check_range(name, getattr(c, name), 1, None, kind=int))
    c.augment_shift = check_range("augment_shift", c.augment_shift, 0, 8, kind=int)
    c.augment_multiplicity = check_range("augment_multiplicity", c.augment_multiplicity, 1, 256, kind=int)
    if c.augment_multiplicity > 1 and not (c.augment_shift or c.augment_flip):
        raise UserError(f"augment_multiplicity: {c.augment_multiplicity} copies of each example need augmentation "
                        "to differ; accepted: 1, or K > 1 with augment_shift > 0 or augment_flip")
    c.update_noise = check_range("update_noise", c.update_noise, 0, None)
    check_choice("noise_site", c.noise_site, NOISE_SITES)
    check_choice("noise_sampler", c.noise_sampler, NOISE_SAMPLERS)
    if c.clip_norm is not None:
        c.clip_norm = check_range("clip_norm", c.clip_norm, 0, None, lo_open=True)
    if c.noise_multiplier is not None:
        c.noise_multiplier = check_range("noise_multiplier", c.noise_multiplier, 0, None)
    if c.target_epsilon is not None:
        c.target_epsilon = check_range("target_epsilon", c.target_epsilon, 0, None, lo_open=True)
        if c.noise_multiplier is not None:
            raise UserError("target_epsilon: give either target_epsilon or noise_multiplier, not both")
    if c.delta is not None:
        c.delta = check_range("delta", c.delta, 0, 1, lo_open=True, hi_open=True)
    if c.sampling is not None:
        check_choice("sampling", c.sampling, SAMPLINGS)
    if c.input_epsilon is not None:
        c.input_epsilon = check_range("input_epsilon", c.input_epsilon, 0, None, lo_open=True)
    c.seed = check_range("seed", c.seed, 0, 2**63 - 1, kind=int)
    check_choice("device", c.device, DEVICES)
    if c.threads is not None:
        c.threads = check_range("threads", c.threads, 1, 1024, kind=int)
    c.eval_batch_size = check_range("eval_batch_size", c.eval_batch_size, 1, None, kind=int)
    if not math.isfinite(c.lr):
        raise UserError(f"lr: invalid value {c.lr!r}; accepted: a finite positive float")
    _check_against_dataset_size(c)


def _check_rule(rule) -> None:
    from .rules import RULES

    if not isinstance(rule, str) or rule not in RULES:
        raise UserError(f"rule: unknown rule {rule!r}; valid rules: {', '.join(RULES)}")


def _check_against_dataset_size(c: TrainConfig) -> None:
    """batch_size, validation and delta against the dataset's official training-set size."""
    total = TRAIN_SIZES[c.dataset]
    held = c.validation if c.validation >= 1 else round(c.validation * total)
    if held >= total or (c.validation > 0 and held == 0):
        raise UserError(
            f"validation: invalid value {c.validation!r}; accepted: a count in [1, {total - 1}] or a fraction "
            f"in (0, 1) that holds out at least one of the {total} {c.dataset} training examples"
        )
    n = total - held
    if c.train_subset is not None:
        n = min(n, c.train_subset)
    if c.batch_size > n:
        raise UserError(
            f"batch_size: invalid value {c.batch_size}; accepted: at most the {n} training examples "
            f"({c.dataset}, after train_subset and validation)"
        )
    if c.delta is not None and not c.delta < 1.0 / n:
        raise UserError(
            f"delta: invalid value {c.delta!r}; accepted: 0 < delta < 1/n = {1.0 / n:.3g} for n = {n} training "
            "examples (a delta of at least 1/n allows releasing an example outright)"
        )
