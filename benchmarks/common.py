"""Shared pieces of the benchmark commands: machine description, data, our configs, timing helpers."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from bioplausible.errors import UserError

RESULTS = Path(__file__).resolve().parent / "results"


def parse_list(name: str, text: str, accepted=None, kind=str) -> list:
    """``a,b,c`` → list, each item checked against ``accepted`` (one-line UserError naming ``name``)."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise UserError(f"{name}: invalid value {text!r}; accepted: a comma-separated list")
    out = []
    for s in items:
        try:
            v = kind(s)
        except ValueError:
            raise UserError(f"{name}: invalid value {s!r}; expected {kind.__name__}") from None
        if accepted is not None and v not in accepted:
            raise UserError(f"{name}: invalid value {s!r}; accepted: {', '.join(map(str, accepted))}")
        if kind is int and v < 1:
            raise UserError(f"{name}: invalid value {s!r}; accepted: positive integers")
        out.append(v)
    return out


def resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device: invalid value {name!r}; accepted: cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: 'cuda' requested but no CUDA device is available; accepted here: cpu")
    return torch.device(name)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _noise_sampler(device) -> str:
    """The Gaussian sampler DP-SGD runs use here (``auto`` resolved)."""
    from bioplausible.privacy.noise import make_noise

    return make_noise("auto", 0, device).kind


def machine(device: torch.device) -> dict:
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]]) if sys.argv else "",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "device": str(device),
        "loadavg_start": list(os.getloadavg()),
        "noise_sampler": _noise_sampler(device),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda,
        }
    return info


def load(dataset: str, data_dir=None):
    from bioplausible.config import resolve
    from bioplausible.training import load_data

    return load_data(resolve(dataset=dataset, data_dir=data_dir))


def our_config(dataset: str, rule: str, *, private: bool, threads: int, device: str, batch_size: int = 200,
               hidden_sizes=(800,), train_subset=None, data_dir=None, clip_norm: float = 1.0,
               noise_multiplier: float = 1.0, epochs: int = 1):
    """The TrainConfig a user would run (paper preset), one epoch, no early stop, small eval."""
    from bioplausible.config import resolve

    extra = {"clip_norm": clip_norm, "noise_multiplier": noise_multiplier} if private else {}
    return resolve(
        dataset=dataset, rule=rule, epochs=epochs, batch_size=batch_size, hidden_sizes=list(hidden_sizes),
        threads=threads, device=device, stop_delta=None, test_subset=500, train_subset=train_subset,
        data_dir=data_dir, **extra,
    )


def dp_available() -> str | None:
    """None when ``make_pipeline`` builds a DP-SGD pipeline; otherwise why not."""
    from bioplausible.config import resolve
    from bioplausible.privacy import make_pipeline

    try:
        cfg = resolve(clip_norm=1.0, noise_multiplier=1.0)
        pipe = make_pipeline(cfg, 60000, torch.device("cpu"))
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        return f"DP-SGD pipeline failed to build: {type(exc).__name__}: {exc}"
    if not getattr(pipe, "private", False):
        return f"make_pipeline returns {type(pipe).__name__} (not private) for clip_norm/noise_multiplier"
    return None


class _CpuTime:
    """Stands in for the ``time`` module inside ``bioplausible.training`` so that the epoch timer
    (``time.perf_counter`` around the per-batch loop) reads this process's CPU time instead."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def perf_counter():
        return time.process_time()


@contextlib.contextmanager
def epoch_clock(clock: str):
    """``wall``: train()'s own wall-clock epoch timer; ``cpu``: the same timer reading process CPU time
    (one thread: the time the epoch really ran, not the time other processes held the core)."""
    if clock == "wall":
        yield
        return
    from bioplausible import training

    saved = training.time
    training.time = _CpuTime()
    try:
        yield
    finally:
        training.time = saved


def clock_fn(clock: str):
    return time.process_time if clock == "cpu" else time.perf_counter


def summarize(values: list[float]) -> dict:
    v = sorted(values)
    return {
        "median": statistics.median(v), "min": v[0], "max": v[-1], "n": len(v),
        "spread": (v[-1] - v[0]) / statistics.median(v) if statistics.median(v) > 0 else 0.0,
        "values": values,
    }


def rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not supported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident memory (bytes) since the last :func:`reset_peak` (or process start)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
