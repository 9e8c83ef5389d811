"""Sweeps: train every run of a spec that the store has not finished, on local processes or Ray.

``sweep(spec, store, backend="local", workers=N)``:

1. registers the spec's runs in the store (a run already there keeps its status);
2. skips finished runs (``completed``, ``converged``, ``diverged``, ``failed``: same hash, same numbers);
3. claims each remaining run in the store, then trains it in a worker with
   ``train(cfg, out=store/runs/<hash>, resume=True)``, so a run interrupted earlier (stopped, killed,
   machine lost) continues from the checkpoint of its last finished epoch;
4. records each result in the store: the summary and per-epoch metrics, or the error of a run that
   raised or diverged; the sweep always goes on with the others.

Backends: ``local`` is a ``ProcessPoolExecutor`` whose workers are forked from a *fork server* (a clean
process that has imported torch and the library once and never runs anything; see
:func:`start_worker_server`), each using ``max(1, cores // workers)`` torch threads; ``ray`` submits each run as a Ray task that declares
``num_cpus`` (the same thread count) and ``num_gpus`` (1 for ``device = "cuda"`` runs, else 0), on an
existing cluster (``ray_address``) or a local Ray instance; results come back to the driver, which alone
writes the store.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import from_dict
from ..errors import DataError, UserError
from .store import FINAL, Store

BACKENDS = ("local", "ray")
TICK = 2.0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or cpu_count()) // max(1, workers))


# ----------------------------------------------------------------------------------------- worker
_DATA_CACHE: dict = {}


def _dataset(cfg):
    from ..training import load_data

    key = (cfg.dataset, cfg.data_dir, cfg.standardize, cfg.validation, cfg.seed if cfg.validation else 0,
           cfg.train_subset, cfg.test_subset)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one dataset per worker: CIFAR-10 is ~0.6 GB as float32
        _DATA_CACHE[key] = load_data(cfg, used_rows_only=True, download=False)
    return _DATA_CACHE[key]


def execute(task: dict) -> dict:
    """Train one run (in a worker process or Ray task). Never raises: failures come back as results."""
    import torch

    from ..training import read_metrics, train

    t0 = time.time()
    out = {"hash": task["hash"], "host": socket.gethostname(), "pid": os.getpid()}
    try:
        cfg = from_dict(dict(task["config"]))
        cfg.threads = cfg.threads or task.get("threads") or 1
        torch.set_num_threads(cfg.threads)
        try:
            data = _dataset(cfg)
        except DataError as exc:
            raise _Failed(f"dataset not available: {exc}") from None
        summary = train(cfg, out=task["run_dir"], resume=True, data=data, progress=False)
        out.update(status=summary["status"], summary=summary, metrics=read_metrics(task["run_dir"]),
                   error=summary["stop_reason"] if summary["status"] == "diverged" else None)
    except _Failed as exc:
        out.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a run's failure is data, the sweep goes on
        tb = traceback.format_exception(exc)
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback="".join(tb[-8:]))
    out["wall_seconds"] = time.time() - t0
    return out


class _Failed(Exception):
    pass


def _execute_local(task: dict, env: dict, cwd: str) -> dict:
    """``execute`` in a local worker, with the driver's environment and working directory of the moment
    the run was submitted (a forked worker inherits the fork server's, which started earlier)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if env != os.environ:
        os.environ.clear()
        os.environ.update(env)
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = threads
    try:
        os.chdir(cwd)
    except OSError:
        pass  # relative paths were resolved by the driver; the run still has absolute ones
    return execute(task)


def _init_worker(threads: int, driver: int) -> None:
    import signal

    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # Ctrl-C reaches the whole process group: an idle worker ignores it; a training one checkpoints its
    # epoch and returns "interrupted" (training installs its own handler while it runs)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()  # the fork server

    def watch():  # a worker whose driver died (SIGKILL) stops too, instead of training on unseen
        while True:
            time.sleep(1.0)
            if os.getppid() != parent or not _alive(driver):
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there; the parent check above suffices
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------- backends
# what the fork server imports once, so that a worker starts in milliseconds instead of importing torch
# (~1.1 s) and torch._dynamo (~1.3 s, pulled in by the first ``torch.optim`` optimizer) itself
PRELOAD = ("torch", "torch._dynamo", "bioplausible.data", "bioplausible.training", "bioplausible.experiments.runner")


def _noop() -> None:
    pass


def start_worker_server(wait: bool = False) -> None:
    """Start the local backend's fork server now, in the background (idempotent; one per driver process).

    Workers of the local backend are forked from it: it has imported torch and the library once and
    never runs a torch operation, so each fork is a clean, single-threaded copy (unlike forking the
    driver, whose OpenMP pool may be live). ``bioplausible sweep`` calls this before it reads the spec
    and the store, so the server's imports overlap that work; ``sweep()`` calls it too. ``wait=True`` returns
    only once the server has finished its imports (benchmarks use it to time sweeps, not the server).
    """
    from multiprocessing import forkserver

    ctx = _context()
    if ctx.get_start_method() != "forkserver":
        return  # no fork server on this platform: workers are spawned
    ctx.set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()
    if wait:  # block until it has imported everything: fork one no-op process from it
        p = ctx.Process(target=_noop)
        p.start()
        p.join()


def _context():
    """``forkserver`` where the platform has it (Linux, macOS), else ``spawn`` (Windows)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


class LocalBackend:
    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        start_worker_server()
        self._start()

    def _start(self):
        self.pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=_context(),
            initializer=_init_worker, initargs=(self.threads, os.getpid()),
        )

    def submit(self, task):
        return self.pool.submit(_execute_local, task, dict(os.environ), os.getcwd())

    def wait(self, handles, timeout):
        done, _ = cf.wait(list(handles), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle) -> dict:
        try:
            return handle.result()
        except cf.process.BrokenProcessPool as exc:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._start()
            return {"status": "failed", "error": f"worker process died ({exc or 'killed'})"}

    def shutdown(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayBackend:
    def __init__(self, workers: int | None, threads: int, address: str | None, gpus_per_run: float | None):
        try:
            import ray
        except ImportError:
            raise UserError("backend: 'ray' needs Ray; install it with `pip install 'bioplausible[ray]'`") from None
        self.ray = ray
        self._owns = False
        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": workers * threads if workers else None}
            try:
                ray.init(include_dashboard=False, log_to_driver=False, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"ray-address: cannot connect to Ray at {address!r} ({exc})") from None
            self._owns = True
        self.threads = threads
        self.gpus_per_run = gpus_per_run
        self._fn = ray.remote(execute)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, cpus // threads)

    def submit(self, task):
        gpus = self.gpus_per_run
        if gpus is None:
            gpus = 1 if task["config"].get("device") == "cuda" else 0
        return self._fn.options(num_cpus=self.threads, num_gpus=gpus, max_retries=0).remote(task)

    def wait(self, handles, timeout):
        done, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        return done

    def result(self, handle) -> dict:
        try:
            return self.ray.get(handle)
        except Exception as exc:  # noqa: BLE001 - a lost node or worker is one failed run
            return {"status": "failed", "error": f"ray task failed: {type(exc).__name__}: {exc}".splitlines()[0]}

    def shutdown(self):
        if self._owns:
            self.ray.shutdown()


# ------------------------------------------------------------------------------------------ progress
class Progress:
    """done / running / failed / remaining and an ETA, on one line (a terminal) or a line per change."""

    def __init__(self, total: int, skipped: int, workers: int, stream=None, enabled=True):
        self.total, self.skipped, self.workers = total, skipped, workers
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.durations: dict = collections.defaultdict(list)
        self._last = None

    def estimate(self, run) -> float | None:
        d = self.durations.get(run.config.dataset) or [x for v in self.durations.values() for x in v]
        return sum(d) / len(d) if d else None

    def line(self, done, running, failed, queue, in_flight) -> str:
        remaining = len(queue)
        est = [self.estimate(r) for r in queue]
        now = time.time()
        eta = None
        ests = [(self.estimate(r), t) for r, t in in_flight]
        if all(e is not None for e in est) and all(e is not None for e, _ in ests):
            work = sum(est) + sum(max(0.0, e - (now - t)) for e, t in ests)
            eta = work / max(1, self.workers)
        eta_txt = "?" if eta is None else _fmt_seconds(eta)
        return (f"sweep: {done} done ({self.skipped} already), {running} running, {failed} failed, "
                f"{remaining} remaining, ETA {eta_txt}")

    def show(self, *args, force=False):
        if not self.enabled:
            return
        text = self.line(*args)
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        elif force or text.split(", ETA")[0] != (self._last or "").split(", ETA")[0]:
            print(text, file=self.stream, flush=True)
        self._last = text

    def note(self, text):
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        print(text, file=self.stream, flush=True)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _describe(run) -> str:
    c = run.config
    parts = [c.dataset, c.rule, c.preset, f"seed {c.seed}"]
    if c.update_noise:
        parts.append(f"σ={c.update_noise:g}")
    if c.target_epsilon is not None:
        parts.append(f"ε={c.target_epsilon:g}")
    return " ".join(parts) + f" [{run.hash[:8]}]"


# --------------------------------------------------------------------------------------------- sweep
_INPUTS = {"mnist": 784 * 60000, "fashion-mnist": 784 * 60000}


def _cost(run) -> float:
    """A rough relative cost, to start the longest runs first and end on the short ones (longest
    processing time first: less time with one worker idle at the end). The factors are measured
    ratios of epoch times on this library's CPU benchmarks: DTP also trains its inverse maps (~1.4x),
    the paper's update noise draws a Gaussian per parameter per step (~1.4x on small nets), DP-SGD
    adds clipping and that draw (~1.5x)."""
    c = run.config
    n = _INPUTS.get(c.dataset, 3072 * 50000)
    if c.train_subset:
        n = n * min(1.0, c.train_subset / (60000 if c.dataset in _INPUTS else 50000))
    factor = 1.4 if c.rule == "dtp" else 1.0
    if c.noise_multiplier is not None or c.target_epsilon is not None:
        factor *= 1.5
    elif c.update_noise:
        factor *= 1.4
    return c.epochs * n * sum(c.hidden_sizes) * factor


def _schedule(runs) -> list:
    """The order runs are handed to workers: grouped by dataset (a worker keeps one dataset loaded, so
    fewer reloads), the group with the costliest run first, and within a group the costliest runs
    first, so that a sweep ends on short runs instead of leaving a worker idle beside a long one."""
    groups: dict = collections.defaultdict(list)
    for r in runs:
        groups[(r.config.dataset, r.config.data_dir, r.config.standardize, r.config.validation)].append(r)
    ordered = sorted(groups.values(), key=lambda g: max(_cost(r) for r in g), reverse=True)
    return [r for g in ordered for r in sorted(g, key=_cost, reverse=True)]


def select(runs, where: dict | None):
    """Runs whose config matches every ``key -> accepted values`` of ``where``."""
    if not where:
        return list(runs)
    out = []
    for r in runs:
        d = r.config.to_dict()
        if all(_matches(d.get(k), vals) for k, vals in where.items()):
            out.append(r)
    return out


def _matches(value, accepted) -> bool:
    for a in accepted:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                if float(a) == float(value):
                    return True
            except (TypeError, ValueError):
                pass
        if str(value).lower() == str(a).lower():
            return True
    return False


def sweep(spec, store: Store, backend: str = "local", workers: int | None = None, ray_address: str | None = None,
          gpus_per_run: float | None = None, where: dict | None = None, progress: bool = True,
          retry_failed: bool = False) -> dict:
    """Train the spec's unfinished runs; return counts (``ran``, ``skipped``, ``failed``, ...)."""
    if backend not in BACKENDS:
        raise UserError(f"backend: invalid value {backend!r}; accepted: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise UserError(f"workers: invalid value {workers!r}; accepted: an int >= 1")
    runs = select(spec.runs, where)
    store.add_runs(spec.name, [r.config for r in runs])
    status = {r["hash"]: r["status"] for r in store.runs(spec=spec.name)}
    final = FINAL if not retry_failed else tuple(s for s in FINAL if s != "failed")
    todo = _schedule(r for r in runs if status.get(r.hash) not in final)
    skipped = len(runs) - len(todo)
    t_start = time.time()
    result = {"total": len(runs), "skipped": skipped, "ran": 0, "failed": 0, "diverged": 0, "interrupted": 0,
              "busy_elsewhere": 0}
    if not todo:
        if progress:
            print(f"sweep {spec.name}: all {len(runs)} runs already finished; nothing to do", file=sys.stderr)
        result["wall_seconds"] = time.time() - t_start
        return result
    if retry_failed:
        for r in todo:
            if status.get(r.hash) == "failed":
                store.finish(r.hash, "pending")
    n_workers = workers or (min(cpu_count(), len(todo)) if backend == "local" else None)
    threads = threads_per_worker(n_workers or cpu_count())
    be = (LocalBackend(n_workers, threads) if backend == "local"
          else RayBackend(n_workers, threads, ray_address, gpus_per_run))
    n_workers = be.workers
    prog = Progress(len(runs), skipped, n_workers, enabled=progress)
    queue = collections.deque(todo)
    in_flight: dict = {}  # handle -> (run, start time)
    done = skipped
    failed = 0
    last_tick = 0.0
    stopping = False
    try:
        while queue or in_flight:
            while queue and len(in_flight) < n_workers and not stopping:
                run = queue.popleft()
                if not store.claim(run.hash):
                    result["busy_elsewhere"] += 1
                    prog.note(f"skip  {_describe(run)}: finished or running in another sweep")
                    continue
                task = {"hash": run.hash, "config": run.config.to_dict(),
                        "run_dir": os.path.abspath(store.run_dir(run.hash)),
                        "threads": threads}
                in_flight[be.submit(task)] = (run, time.time())
            if not in_flight:
                break
            now = time.time()
            if now - last_tick >= TICK:
                last_tick = now
                _sync_running(store, in_flight)
                prog.show(done, len(in_flight), failed, queue, list(in_flight.values()))
            try:
                finished = be.wait(in_flight, TICK)
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                prog.note("sweep: interrupted; waiting for running runs to checkpoint their epoch "
                          "(Ctrl-C again to abort)")
                continue
            for h in finished:
                run, t0 = in_flight.pop(h)
                res = be.result(h)
                _record(store, run, res)
                st = res.get("status")
                if st == "interrupted":
                    result["interrupted"] += 1
                    prog.note(f"stop  {_describe(run)}: interrupted; resumes from its checkpoint next time")
                    continue
                done += 1
                result["ran"] += 1
                if st == "failed":
                    failed += 1
                    result["failed"] += 1
                    prog.note(f"FAIL  {_describe(run)}: {str(res.get('error')).splitlines()[0][:300]}")
                elif st == "diverged":
                    result["diverged"] += 1
                    prog.note(f"DIVERGED {_describe(run)}: {res.get('error')}")
                else:
                    prog.durations[run.config.dataset].append(time.time() - t0)
                    s = res["summary"]
                    prog.note(f"done  {_describe(run)}: test error {100 * s['test_error']:.2f}% "
                              f"({s['epochs']} epochs, {s['status']}, {time.time() - t0:.0f}s)")
            if finished:
                last_tick = 0.0
    except BaseException:
        for run, _ in in_flight.values():
            store.release(run.hash)
        raise
    finally:
        be.shutdown()
        if prog.tty:
            prog.stream.write("\n")
    prog.show(done, 0, failed, queue, [], force=True)
    if stopping:
        raise KeyboardInterrupt
    result["wall_seconds"] = time.time() - t_start
    return result


def _sync_running(store: Store, in_flight: dict) -> None:
    """Copy the per-epoch metrics of running runs from their run directories into the store."""
    from ..training import read_metrics

    for run, _ in in_flight.values():
        try:
            rows = read_metrics(store.run_dir(run.hash))
        except (OSError, ValueError):
            rows = []
        if rows:
            store.record_metrics(run.hash, rows)
    store.heartbeat(run.hash for run, _ in in_flight.values())


def _record(store: Store, run, res: dict) -> None:
    status = res.get("status", "failed")
    metrics = res.get("metrics") or []
    run_dir = store.run_dir(run.hash)
    if metrics:
        store.record_metrics(run.hash, metrics)
        # a remote worker without a shared file system: keep the results in the driver's run directory
        if not (run_dir / "summary.json").is_file() and res.get("summary"):
            run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_json(run_dir / "config.json", {**run.config.to_dict(), "run_hash": run.hash})
            ckpt.atomic_write_text(run_dir / "metrics.jsonl",
                                   "".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))
            ckpt.atomic_write_json(run_dir / "summary.json", res["summary"])
    error = res.get("error")
    if res.get("traceback"):
        error = f"{error}\n{res['traceback']}"
    store.finish(run.hash, status, res.get("summary"), error, res.get("host"), res.get("wall_seconds"))
