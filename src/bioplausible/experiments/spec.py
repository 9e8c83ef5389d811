"""Experiment specs: a TOML file with a base config and grid axes, expanded into runs.

A spec is plain data::

    name = "paper"                       # optional; defaults to the file name
    description = "..."
    [base]                               # TrainConfig fields shared by every run
    preset = "paper"
    [[grid]]                             # one block = one Cartesian product of its axes
    dataset = ["mnist", "cifar10"]       # a list is an axis; a scalar is a fixed value
    rule = ["bp", "dfa"]
    update_noise = [0.1, 0.4]
    [[grid]]                             # blocks are unioned (duplicates dropped)
    ...

Keys are exactly :class:`~bioplausible.config.TrainConfig` field names (``rule_options`` is an inline
table). ``target_epsilon = inf`` means "no DP" (the non-private baseline of a privacy curve). Every run
is resolved and validated with :func:`bioplausible.config.resolve` before anything trains; errors name
the file, the key and the reason. A run is identified by ``TrainConfig.run_hash()``.
"""

from __future__ import annotations

import copy
import itertools
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..config import FIELD_NAMES, TrainConfig, resolve
from ..errors import UserError

SPEC_KEYS = ("name", "description", "base", "grid")


@dataclass
class Run:
    """One expanded run: its resolved config and the grid values that produced it."""

    config: TrainConfig
    axes: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return self.config.run_hash()


@dataclass
class Spec:
    name: str
    path: str
    description: str
    base: dict
    grid: list[dict]
    runs: list[Run]


def shipped_specs() -> dict[str, Path]:
    """Names and paths of the specs shipped in ``bioplausible/specs``."""
    root = resources.files("bioplausible") / "specs"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def find_spec(name_or_path) -> Path:
    """A path to an existing file, or the name of a shipped spec (``paper``, ``quick``, ...)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_specs()
    key = p.stem if p.suffix == ".toml" else str(name_or_path)
    if key in shipped:
        return shipped[key]
    raise UserError(
        f"spec: {str(name_or_path)!r} is neither a file nor a shipped spec; shipped: {', '.join(sorted(shipped))}"
    )


def load_spec(name_or_path, **fixed) -> Spec:
    """Read, expand and validate a spec. ``fixed`` overrides fields in every run (e.g. ``data_dir``)."""
    path = find_spec(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    return parse_spec(data, str(path), **fixed)


def parse_spec(data: dict, path: str = "<spec>", **fixed) -> Spec:
    def fail(key, reason):
        raise UserError(f"{path}: key {key!r}: {reason}")

    for k in data:
        if k not in SPEC_KEYS:
            fail(k, f"unknown key; accepted at the top level: {', '.join(SPEC_KEYS)}")
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        fail("name", f"invalid value {name!r}; accepted: a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        fail("description", f"invalid value {description!r}; accepted: a string")
    base = data.get("base", {})
    if not isinstance(base, dict):
        fail("base", "must be a table of TrainConfig fields")
    grid = data.get("grid", [{}])
    if isinstance(grid, dict):
        grid = [grid]
    if not isinstance(grid, list) or not grid or not all(isinstance(g, dict) for g in grid):
        fail("grid", "must be a table or an array of tables ([[grid]]) of axes")
    for k in base:
        _check_key(k, "base", fail)
    blocks = []
    for i, block in enumerate(grid):
        where = f"grid[{i}]" if len(grid) > 1 else "grid"
        axes = {}
        for k, v in block.items():
            _check_key(k, where, fail)
            values = v if isinstance(v, list) and k != "hidden_sizes" else [v]
            if k == "hidden_sizes" and isinstance(v, list) and v and all(isinstance(x, list) for x in v):
                values = v  # an axis of architectures: [[800], [240, 240]]
            if not values:
                fail(f"{where}.{k}", "an axis needs at least one value")
            axes[k] = values
        blocks.append(axes)

    runs: list[Run] = []
    seen = set()
    for i, axes in enumerate(blocks):
        keys = list(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            point = dict(zip(keys, combo))
            values = copy.deepcopy({**base, **point, **fixed})
            cfg = _resolve(values, point, path)
            h = cfg.run_hash()
            if h not in seen:
                seen.add(h)
                runs.append(Run(cfg, point))
    return Spec(name, path, description, base, blocks, runs)


def _check_key(k, where, fail):
    if k not in FIELD_NAMES:
        fail(f"{where}.{k}" if where != "base" else k,
             f"unknown key; accepted: TrainConfig fields ({', '.join(FIELD_NAMES)})")


def _resolve(values: dict, point: dict, path: str) -> TrainConfig:
    values = dict(values)
    eps = values.get("target_epsilon")
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isinf(eps) and eps > 0:
        values["target_epsilon"] = None  # ε = ∞: the non-private baseline
    preset = values.pop("preset", None)
    try:
        return resolve(preset=preset, **values)
    except UserError as exc:
        msg = str(exc)
        head, sep, rest = msg.partition(":")
        where = ", ".join(f"{k}={v!r}" for k, v in point.items())
        suffix = f" (in the run {where})" if where else ""
        if sep and head in FIELD_NAMES:
            raise UserError(f"{path}: key {head!r}:{rest}{suffix}") from None
        if msg.startswith("rule option"):
            raise UserError(f"{path}: key 'rule_options': {msg}{suffix}") from None
        raise UserError(f"{path}: {msg}{suffix}") from None
