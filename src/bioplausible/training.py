"""The training loop: batches → rule → gradient pipeline (privacy) → ``torch.optim`` → metrics.

``train(cfg, out=DIR)`` writes a run directory:

* ``config.json``: the resolved configuration;
* ``metrics.jsonl``: one JSON line per epoch (train loss/error, test error, alignment angles, seconds,
  and ε spent for private runs), rewritten atomically every epoch;
* ``checkpoint.safetensors``: weights, feedback matrices, optimizer state and RNG states after the last
  finished epoch, written atomically, so ``resume=True`` continues exactly where it stopped;
* ``summary.json``: the final summary (``status`` is ``completed``, ``converged``, ``diverged`` or
  ``interrupted``).

Runs are deterministic by default: the same config and seed give the same numbers on the same machine,
and an interrupted run resumed from its checkpoint ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .augment import augment
from .config import TrainConfig, validate
from .diagnostics import alignment
from .errors import UserError
from .network import MLP
from .privacy import make_pipeline
from .rules import make_rule

CHECKPOINT = "checkpoint.safetensors"
FINAL_STATUSES = ("completed", "converged", "diverged")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' requested but no CUDA device is available; accepted here: auto, cpu")
    return torch.device(name)


def make_optimizer(cfg: TrainConfig, net: MLP, rule) -> torch.optim.Optimizer:
    groups = [{"params": list(net.parameters()), "lr": cfg.lr}]
    extra = list(rule.parameters())
    if extra:
        groups.append({"params": extra, "lr": cfg.inverse_lr or cfg.lr})
    wd = cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "sgd+momentum":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=wd)
    return torch.optim.RMSprop(groups, lr=cfg.lr, weight_decay=wd)


def plain_sgd_rates(optimizer: torch.optim.Optimizer, pipeline) -> dict[int, float] | None:
    """``{id(param): lr}`` when a step is exactly plain SGD on the pipeline's gradient (no momentum or
    weight decay; a pipeline that can fuse, i.e. anything but the paper's update noise), so the update
    can be fused into the weight-gradient product (``pipeline.apply_sgd``, :meth:`Rule.sgd_step`);
    ``None`` otherwise."""
    if type(optimizer) is not torch.optim.SGD or not getattr(pipeline, "fusable_sgd", False):
        return None
    rates = {}
    for g in optimizer.param_groups:
        if g.get("momentum", 0) or g.get("weight_decay", 0) or g.get("maximize", False):
            return None
        rates.update({id(p): float(g["lr"]) for p in g["params"]})
    return rates


def schedule_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``."""
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    return 1.0


def load_data(cfg: TrainConfig, used_rows_only: bool = False, download: bool = True):
    """The run's dataset; ``used_rows_only``: just the rows training reads (its ``train_subset`` and
    ``test_subset``; see ``load_dataset(rows=...)``), not the examples past them that audits use."""
    from .data import load_dataset

    return load_dataset(
        cfg.dataset, data_dir=cfg.data_dir, standardize=cfg.standardize, validation=cfg.validation, seed=cfg.seed,
        download=download, rows=(cfg.train_subset, cfg.test_subset) if used_rows_only else None,
    )


class _Stop:
    """SIGINT/SIGTERM: the first asks for a stop at the end of the epoch, the second aborts."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"bioplausible: {signal.Signals(signum).name} received, stopping after this epoch "
            "(send again to abort now)",
            file=sys.stderr,
        )

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _deterministic() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of the
    TorchInductor compiler (seconds of start-up in every run and sweep worker; nothing here compiles).
    Falls back to the public call where the private setter is missing or the compiler is loaded."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed blocks below 32 MiB for reuse instead of handing them back
    to the kernel (``mallopt``: fixed mmap and trim thresholds). Each batch allocates the same few
    (B × width) tensors again; glibc's adaptive default may return and re-fault their pages every batch
    (measured: ~30 000 minor faults and ~0.9 s of CPU per MNIST epoch on a 2-core EPYC). Numbers are
    unchanged; freed memory stays in the process for reuse. A no-op where ``mallopt`` is missing
    (non-glibc systems) or when ``BIOPLAUSIBLE_KEEP_FREED_MEMORY=0``. Returns whether it is in force.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        if os.environ.get("BIOPLAUSIBLE_KEEP_FREED_MEMORY", "1") != "0" and sys.platform.startswith("linux"):
            try:
                import ctypes

                mallopt = ctypes.CDLL(None).mallopt
                # M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3 (32 MiB is glibc's largest on 64-bit)
                _MALLOC_TUNED = bool(mallopt(-1, 64 << 20)) and bool(mallopt(-3, 32 << 20))
            except (OSError, AttributeError):
                pass
    return _MALLOC_TUNED


_MALLOC_TUNED = None


def train(cfg: TrainConfig, out=None, resume: bool = False, data=None, progress: bool | None = None) -> dict:
    """Train according to ``cfg``; write a run directory to ``out`` if given; return the summary.

    Only one process at a time may train in a run directory (an advisory ``flock`` on ``out/.lock``).
    """
    if out is None:
        return _train(cfg, None, resume, data, progress)
    with _run_lock(Path(out)):
        return _train(cfg, out, resume, data, progress)


@contextlib.contextmanager
def _run_lock(out: Path):
    import fcntl

    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"out: cannot write to {str(out)!r} ({exc.strerror or exc}); choose a writable directory") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(
                f"out: another process is training in {str(out)!r}; wait for it to finish or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)


def _train(cfg: TrainConfig, out, resume: bool, data, progress) -> dict:
    validate(cfg)
    keep_freed_memory()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        _deterministic()
    out = Path(out) if out is not None else None
    if out is not None:
        _prepare_out(out, cfg, resume)
        if resume and (out / "summary.json").is_file():
            summary = json.loads((out / "summary.json").read_text())
            if summary.get("status") in FINAL_STATUSES:
                return summary
    torch.manual_seed(cfg.seed)
    ds = data if data is not None else load_data(cfg, used_rows_only=True)
    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    if cfg.train_subset:
        x_train, y_train = x_train[: cfg.train_subset], y_train[: cfg.train_subset]
    if cfg.test_subset:
        x_test, y_test = x_test[: cfg.test_subset], y_test[: cfg.test_subset]
    n = x_train.shape[0]
    if cfg.batch_size > n:
        raise UserError(f"batch_size: invalid value {cfg.batch_size}; accepted: at most the {n} training examples")
    sizes = [int(x_train.shape[1]), *cfg.hidden_sizes, int(ds.n_classes)]
    net = MLP(sizes, cfg.hidden, cfg.output, cfg.loss, cfg.reduction, seed=cfg.seed, init=cfg.init).to(device)
    rule = make_rule(cfg.rule, net, seed=cfg.seed + 1, **cfg.rule_options).to(device)
    optimizer = make_optimizer(cfg, net, rule)
    pipeline = make_pipeline(cfg, n, device)
    if out is not None:
        _check_space(out, cfg, net, rule)

    x_train = x_train.to(device)
    y_train = y_train.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    x_val = ds.x_val.to(device) if getattr(ds, "x_val", None) is not None else None
    y_val = ds.y_val.to(device) if x_val is not None else None
    x_clean = x_train
    x_train = pipeline.prepare_inputs(x_train) if hasattr(pipeline, "prepare_inputs") else x_train
    t_train = net.targets(y_train)
    diag_x, diag_t = x_train[:500], t_train[:500]

    batch_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    start = 0
    history: list[dict] = []
    if out is not None and resume and (out / CHECKPOINT).is_file():
        rngs, meta = ckpt.load_checkpoint(out / CHECKPOINT, net=net, rule=rule, optimizer=optimizer)
        start = int(meta["epoch"])
        batch_gen.set_state(rngs["batch"])
        if "augment" in rngs:
            aug_gen.set_state(rngs["augment"].to(aug_gen.get_state().device))
        if hasattr(rule, "set_noise_state"):
            rule.set_noise_state(rngs.get("rule_noise"))
        pipeline.load_state({k[9:]: v for k, v in rngs.items() if k.startswith("pipeline.")})
        history = _read_metrics(out)[:start]

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, desc=f"{cfg.rule} {cfg.dataset}", unit="epoch", file=sys.stderr)
    status, stop_reason = "completed", f"reached {cfg.epochs} epochs"
    base_lrs = [cfg.lr, cfg.inverse_lr or cfg.lr][: len(optimizer.param_groups)]
    copies = cfg.augment_multiplicity
    shape = tuple(ds.shape)
    try:
        with _Stop() as stopper:
            for epoch in range(start, cfg.epochs):
                t0 = time.perf_counter()
                for g, lr in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = lr * schedule_factor(cfg, epoch)
                fused = plain_sgd_rates(optimizer, pipeline)
                fresh = pipeline.epoch_inputs(x_clean, epoch) if hasattr(pipeline, "epoch_inputs") else None
                if fresh is not None:  # privacy: Laplace input noise drawn afresh for this epoch
                    x_train = fresh
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                wrong = torch.zeros((), dtype=torch.int64, device=device)
                seen = 0
                for step, idx in enumerate(pipeline.batches(n, cfg.batch_size, batch_gen)):
                    if idx.numel() == 0:
                        pipeline.apply(None, rule, cfg.batch_size)
                        optimizer.step()
                        continue
                    idx = idx.to(device)
                    # augmentation multiplicity: k consecutive augmented copies of every example
                    rows = idx if copies == 1 else idx.repeat_interleave(copies)
                    xb = x_train.index_select(0, rows)
                    if cfg.augment_shift or cfg.augment_flip:
                        xb = augment(xb, shape, cfg.augment_shift, cfg.augment_flip, aug_gen)
                    teaching = rule.teach(xb, t_train.index_select(0, rows))
                    update = teaching
                    if copies > 1 and net.reduction == "sum":  # average, not sum, over an example's copies
                        update = dataclasses.replace(teaching, scale=teaching.scale / copies)
                    if fused is not None:
                        pipeline.apply_sgd(update, rule, cfg.batch_size, fused)
                    else:
                        pipeline.apply(update, rule, cfg.batch_size)
                        optimizer.step()
                    # training loss and error: over the rows trained on (augmented copies included)
                    loss_sum += teaching.loss.double() / teaching.scale
                    wrong += (teaching.record.output.argmax(1) != y_train.index_select(0, rows)).sum()
                    seen += rows.numel()
                    if step % 16 == 15 and not bool(torch.isfinite(loss_sum)):
                        break  # diverged: no use finishing the epoch (recorded just below)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # kernels run asynchronously: wait before reading the clock
                seconds = time.perf_counter() - t0
                train_loss = float(loss_sum) / max(seen, 1)
                t1 = time.perf_counter()
                row = {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "train_error": float(wrong) / max(seen, 1),
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": seconds,
                }
                diverged = not math.isfinite(train_loss) or not all(
                    bool(torch.isfinite(p).all()) for p in net.parameters()
                )
                if diverged:
                    status, stop_reason = "diverged", f"non-finite loss or weights in epoch {epoch + 1}"
                    row["diverged"] = True
                    history.append(row)
                    if out is not None:
                        with _writes(out, epoch):
                            _write_metrics(out, history)
                    break
                row.update(evaluate(net, x_test, y_test, cfg.eval_batch_size, prefix="test_"))
                if x_val is not None:
                    row.update(evaluate(net, x_val, y_val, cfg.eval_batch_size, prefix="val_"))
                row.update(alignment(rule, diag_x, diag_t))
                row.update(pipeline.epoch_metrics(epoch + 1))
                row["eval_seconds"] = time.perf_counter() - t1
                history.append(row)
                if out is not None:
                    rngs = {"batch": batch_gen.get_state(), "augment": aug_gen.get_state()}
                    if hasattr(rule, "get_noise_state"):
                        rngs["rule_noise"] = rule.get_noise_state()
                    rngs.update({f"pipeline.{k}": v for k, v in pipeline.state().items()})
                    with _writes(out, epoch):
                        _write_metrics(out, history)
                        ckpt.save_checkpoint(
                            out / CHECKPOINT, net=net, rule=rule, optimizer=optimizer, rngs=rngs,
                            meta={"epoch": epoch + 1, "run_hash": cfg.run_hash()},
                        )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{train_loss:.4f}", test_err=f"{row['test_error']:.4f}")
                if (
                    cfg.stop_delta is not None
                    and len(history) >= 2
                    and abs(history[-1]["train_loss"] - history[-2]["train_loss"]) < cfg.stop_delta
                ):
                    status = "converged"
                    stop_reason = f"epoch objective changed by less than {cfg.stop_delta}"
                    break
                if stopper.requested:
                    status, stop_reason = "interrupted", "stopped by signal; resume with --resume"
                    break
    finally:
        if bar is not None:
            bar.close()
    summary = make_summary(cfg, history, status, stop_reason, net, pipeline)
    if out is not None:
        with _writes(out, len(history) - (status == "diverged")):
            ckpt.atomic_write_json(out / "summary.json", summary)
    return summary


@contextlib.contextmanager
def _writes(out: Path, kept: int):
    """A failed write (disk full, directory gone) ends the run with one line; files already there stay
    intact (writes are atomic), so the run resumes from the checkpoint of epoch ``kept``."""
    try:
        yield
    except OSError as exc:
        raise UserError(
            f"out: cannot write to {str(out)!r} ({exc.strerror or exc}); files already there are intact "
            f"(last checkpoint: epoch {kept}); free space and continue with --resume"
        ) from None


_OPT_STATES = {"sgd": 0, "sgd+momentum": 1, "adam": 2, "rmsprop": 1}


def _check_space(out: Path, cfg: TrainConfig, net, rule) -> None:
    """Refuse to start when ``out`` cannot hold a checkpoint (plus its replacement while it is written)."""
    weights = sum(t.numel() * t.element_size() for m in (net, rule) for t in m.state_dict().values())
    need = 2 * weights * (1 + _OPT_STATES.get(cfg.optimizer, 2)) + 2**20
    free = shutil.disk_usage(out).free
    if free < need:
        raise UserError(
            f"out: {str(out)!r} has {free / 2**20:.1f} MiB free but a checkpoint needs about "
            f"{need / 2**20:.1f} MiB; free space or choose another --out"
        )


@torch.no_grad()
def evaluate(net: MLP, x, y, batch_size: int = 10000, prefix: str = "") -> dict:
    wrong = 0
    loss = 0.0
    t_all = net.targets(y)
    for i in range(0, x.shape[0], batch_size):
        rec = net.record(x[i : i + batch_size])
        t = t_all[i : i + batch_size]
        wrong += int((rec.output.argmax(1) != y[i : i + batch_size]).sum())
        loss += float(net.per_example_loss(rec, t).sum())
    n = max(x.shape[0], 1)
    return {f"{prefix}error": wrong / n, f"{prefix}loss": loss / n}


def make_summary(cfg, history, status, stop_reason, net, pipeline) -> dict:
    last = next((h for h in reversed(history) if "test_error" in h), {})
    summary = {
        "rule": cfg.rule,
        "dataset": cfg.dataset,
        "preset": cfg.preset,
        "sizes": net.sizes,
        "seed": cfg.seed,
        "run_hash": cfg.run_hash(),
        "status": status,
        "stop_reason": stop_reason,
        "epochs": len(history),
        "test_error": last.get("test_error"),
        "test_loss": last.get("test_loss"),
        "train_loss": last.get("train_loss"),
        "train_error": last.get("train_error"),
        "best_test_error": min((h["test_error"] for h in history if "test_error" in h), default=None),
        "seconds": sum(h.get("seconds", 0.0) + h.get("eval_seconds", 0.0) for h in history),
        "train_seconds": sum(h.get("seconds", 0.0) for h in history),
    }
    if "val_error" in last:
        summary["val_error"] = last["val_error"]
    if status == "diverged":
        summary["diverged_epoch"] = history[-1]["epoch"]
    summary.update(pipeline.summary())
    return summary


def _prepare_out(out: Path, cfg: TrainConfig, resume: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"out: cannot write to {str(out)!r} ({exc.strerror or exc}); choose a writable directory") from None
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if not resume:
            raise UserError(
                f"out: {str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
            )
        if old.get("run_hash") not in (None, cfg.run_hash()):
            raise UserError(
                f"out: {str(out)!r} holds a run with a different config (hash {old.get('run_hash')}); "
                "resume needs the same options"
            )
    ckpt.atomic_write_json(cfg_path, {**cfg.to_dict(), "run_hash": cfg.run_hash()})


def _write_metrics(out: Path, history: list[dict]) -> None:
    lines = (json.dumps(ckpt.finite_json(h), sort_keys=True, allow_nan=False) + "\n" for h in history)
    ckpt.atomic_write_text(out / "metrics.jsonl", "".join(lines))


def _read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(run_dir) -> list[dict]:
    """The per-epoch metrics of a run directory."""
    return _read_metrics(Path(run_dir))


def run_config(run_dir) -> TrainConfig:
    from .config import from_dict

    d = json.loads((Path(run_dir) / "config.json").read_text())
    d.pop("run_hash", None)
    return from_dict(d)

