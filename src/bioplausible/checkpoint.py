"""Checkpoints in ``safetensors`` (never pickle) and atomic file writes.

A checkpoint holds the network's weights (``net.*``), the rule's state (feedback matrices and DTP
inverses, ``rule.*``), the optimizer's per-parameter state (``opt.<i>.<key>``), the random generators'
states (``rng.<name>``) and, as JSON metadata, the architecture, the optimizer's hyper-parameters and
the epoch. Loading checks the architecture first and refuses a mismatch with a message naming it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``
    (readers see the old file or the new one, never a torn one); on failure remove it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def finite_json(obj):
    """``obj`` with NaN and ±inf floats replaced by None, so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(finite_json(obj), indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, float):
        return None
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path, *, net, rule, optimizer, rngs: dict, meta: dict) -> None:
    tensors = {}
    for k, v in net.state_dict().items():
        tensors[f"net.{k}"] = v.detach().cpu().contiguous()
    for k, v in rule.state_dict().items():
        tensors[f"rule.{k}"] = v.detach().cpu().contiguous()
    opt_state = optimizer.state_dict()
    scalars = {}
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = v
    for name, state in rngs.items():
        if state is not None:
            tensors[f"rng.{name}"] = state.cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    metadata = {
        "architecture": json.dumps(net.config(), sort_keys=True),
        "rule": json.dumps(rule.config(), sort_keys=True),
        "optimizer": json.dumps({"groups": groups, "scalars": scalars}),
        "meta": json.dumps(meta, sort_keys=True, default=_json_default),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def read_checkpoint(path):
    """Return (tensors, metadata) or raise a UserError naming the file and the problem."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"checkpoint {path}: not a readable safetensors file ({exc})") from None
    for key in ("architecture", "rule", "optimizer", "meta"):
        if key not in metadata:
            raise UserError(f"checkpoint {path}: missing metadata {key!r}; not a bioplausible checkpoint")
    return tensors, {k: json.loads(v) for k, v in metadata.items()}


def load_checkpoint(path, *, net, rule, optimizer) -> tuple[dict, dict]:
    """Restore state in place; returns (rng_states, meta)."""
    tensors, md = read_checkpoint(path)
    want = net.config()
    have = md["architecture"]
    for key in want:
        if key != "seed" and have.get(key) != want[key]:
            raise UserError(
                f"checkpoint {path}: architecture mismatch in {key!r}: checkpoint has {have.get(key)!r}, "
                f"this run has {want[key]!r}"
            )
    if md["rule"].get("name") != rule.name:
        raise UserError(f"checkpoint {path}: rule mismatch: checkpoint has {md['rule'].get('name')!r}, this run has {rule.name!r}")
    net_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    rule_sd = {k[5:]: v for k, v in tensors.items() if k.startswith("rule.")}
    try:
        net.load_state_dict(net_sd)
        rule.load_state_dict(rule_sd)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path}: tensors do not fit this network ({str(exc).splitlines()[0]})") from None
    opt = md["optimizer"]
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v
    for k, v in opt["scalars"].items():
        i, key = k.split(".", 1)
        state.setdefault(int(i), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": opt["groups"]})
    rngs = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    return rngs, md["meta"]
