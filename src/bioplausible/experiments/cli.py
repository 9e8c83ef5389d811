"""``bioplausible sweep`` and ``bioplausible runs``.

    bioplausible sweep SPEC [--backend local|ray] [--workers N] [--ray-address ADDR] [--store DIR]
                            [--where KEY=V1,V2 ...] [--retry-failed] [--data-dir DIR] [--quiet]
    bioplausible runs [--store DIR] [--spec NAME] [--status S] [--where KEY=V ...] [--csv FILE|-]
    bioplausible runs show HASH [--store DIR] [--metrics]
    bioplausible runs specs [--store DIR]

SPEC is a TOML file or the name of a shipped spec (paper, extended, privacy, quick).
"""

from __future__ import annotations

import contextlib
import os

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError

DEFAULT_STORE = "runs/store"


def _where(items) -> dict:
    out: dict = {}
    for item in items or []:
        key, sep, vals = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not vals:
            raise UserError(f"--where: invalid value {item!r}; accepted: KEY=VALUE or KEY=V1,V2 (a TrainConfig field)")
        from ..config import FIELD_NAMES

        if key not in FIELD_NAMES:
            raise UserError(f"--where: unknown key {key!r}; accepted: TrainConfig fields ({', '.join(FIELD_NAMES)})")
        out.setdefault(key, []).extend(v.strip() for v in vals.split(","))
    return out


def _positive_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; accepted: an int >= 1") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; accepted: an int >= 1")
        return v

    parse.__name__ = name
    return parse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="train every unfinished run of an experiment spec (idempotent, resumable)",
        description="Expand a spec into runs and train those the store has not finished. Finished runs "
        "(same config hash) are skipped, interrupted ones resume from their checkpoint, failed ones are "
        "recorded with their error.",
    )
    p.add_argument("spec", help="a spec file (TOML) or a shipped spec name: paper, extended, privacy, quick")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool (default) or Ray tasks (pip install 'bioplausible[ray]')")
    p.add_argument("--workers", type=_positive_int("workers"), default=None,
                   help="parallel runs (default: local: CPU cores; ray: cluster CPUs / threads per run)")
    p.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (ray start --head)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="Ray: GPUs each run declares (default: 1 for device=cuda runs, else 0)")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"run store directory (default: {DEFAULT_STORE})")
    p.add_argument("--where", action="append", metavar="KEY=V1,V2",
                   help="only runs whose config matches (repeatable), e.g. --where dataset=mnist")
    p.add_argument("--retry-failed", action="store_true", help="train runs recorded as failed again")
    p.add_argument("--data-dir", default=None, help="dataset directory for every run (not part of the run hash)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="device for every run")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they would train; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_sweep)

    r = subparsers.add_parser("runs", help="list, filter, show and export the runs of a run store",
                              description="List the runs of a store (filtered), export them as CSV, or show one.")
    _runs_options(r)
    r.add_argument("--csv", metavar="FILE", help="write the listed runs as CSV to FILE ('-' for stdout)")
    r.add_argument("--json", action="store_true", help="print the listed runs as JSON lines")
    r.set_defaults(func=cmd_runs)
    sub = r.add_subparsers(dest="runs_command", metavar="{show,specs}")
    s = sub.add_parser("show", help="one run: config, status, error, summary")
    s.add_argument("hash", help="a run hash or a unique prefix")
    s.add_argument("--store", default=argparse.SUPPRESS)
    s.add_argument("--metrics", action="store_true", help="also print the per-epoch metrics")
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("specs", help="the specs recorded in the store, with run counts per status")
    s.add_argument("--store", default=argparse.SUPPRESS)
    s.set_defaults(func=cmd_specs)


def _runs_options(r):
    r.add_argument("--store", default=DEFAULT_STORE, help=f"run store directory (default: {DEFAULT_STORE})")
    r.add_argument("--spec", default=None, help="only runs of this spec name")
    r.add_argument("--status", default=None, help="only runs with this status (comma-separated)")
    r.add_argument("--where", action="append", metavar="KEY=V1,V2", help="only runs whose config matches")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM to the sweep driver acts like Ctrl-C: the workers get SIGINT (a training worker finishes and
    checkpoints its epoch, an idle one ignores it) and the driver takes its Ctrl-C path."""
    import multiprocessing
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signal.SIGINT)
            except OSError:
                pass
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cmd_sweep(args) -> int:
    from .runner import select, start_worker_server, sweep

    if args.backend == "local" and not args.dry_run:
        start_worker_server()  # its imports overlap reading the spec and the store
    from .spec import load_spec
    from .store import FINAL, Store

    fixed = {k: v for k, v in (("data_dir", args.data_dir), ("device", args.device)) if v is not None}
    spec = load_spec(args.spec, **fixed)
    where = _where(args.where)
    with Store(args.store) as store:
        if args.dry_run:
            status = {r["hash"]: r["status"] for r in store.runs()}
            for run in select(spec.runs, where):
                st = status.get(run.hash, "new")
                c = run.config
                print(f"{run.hash}  {'skip' if st in FINAL else 'train':5s}  {st:11s}  {c.dataset:14s} {c.rule:4s} "
                      f"{c.preset:6s} seed={c.seed} update_noise={c.update_noise:g} target_epsilon={c.target_epsilon}")
            return 0
        with _sigterm_as_interrupt():
            res = sweep(spec, store, backend=args.backend, workers=args.workers, ray_address=args.ray_address,
                        gpus_per_run=args.gpus_per_run, where=where, progress=not args.quiet,
                        retry_failed=args.retry_failed)
    print(f"sweep {spec.name}: {res['total']} runs: {res['skipped']} already finished, {res['ran']} ran "
          f"({res['failed']} failed, {res['diverged']} diverged), {res['interrupted']} interrupted, "
          f"{res['busy_elsewhere']} busy elsewhere; {res['wall_seconds']:.1f}s; store {args.store}")
    return 1 if res["interrupted"] else 0


def _list(args):
    from .store import STATUSES, Store

    store = Store(args.store, create=False)
    status = None
    if args.status:
        status = [s.strip() for s in args.status.split(",")]
        for s in status:
            if s not in STATUSES:
                raise UserError(f"--status: invalid value {s!r}; accepted: {', '.join(STATUSES)}")
    where = _where(args.where)
    rows = store.runs(spec=args.spec, status=status)
    if where:
        rows = [r for r in rows if all(_match(r["config"].get(k), v) for k, v in where.items())]
    return store, rows


def _match(value, accepted):
    from .runner import _matches

    return _matches(value, accepted)


def cmd_runs(args) -> int:
    from .store import export_csv

    store, rows = _list(args)
    with store:
        if args.csv:
            text = export_csv(rows)
            if args.csv == "-":
                sys.stdout.write(text)
            else:
                from ..checkpoint import atomic_write_text

                try:
                    atomic_write_text(Path(args.csv), text)
                except OSError as exc:
                    raise UserError(f"--csv: cannot write {args.csv!r} ({exc.strerror or exc})") from None
                print(f"wrote {len(rows)} runs to {args.csv}", file=sys.stderr)
            return 0
        if args.json:
            for r in rows:
                print(json.dumps(r, sort_keys=True, default=str))
            return 0
        print(f"{'hash':16s}  {'status':10s}  {'dataset':14s} {'rule':4s} {'preset':6s} {'seed':>4s} {'σ':>5s} "
              f"{'ε':>5s} {'epochs':>6s} {'test err':>8s} {'seconds':>8s}  error")
        for r in rows:
            err = "" if r["test_error"] is None else f"{100 * r['test_error']:.2f}%"
            eps = "" if r["target_epsilon"] is None else f"{r['target_epsilon']:g}"
            secs = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
            msg = (r["error"] or "").splitlines()[0][:80] if r["error"] else ""
            print(f"{r['hash']:16s}  {r['status']:10s}  {r['dataset']:14s} {r['rule']:4s} {r['preset']:6s} "
                  f"{r['seed']:>4d} {r['update_noise']:>5g} {eps:>5s} {r['epochs'] or 0:>6d} {err:>8s} {secs:>8s}  {msg}")
        counts: dict = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(f"{len(rows)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    from .store import Store

    with Store(getattr(args, "store", DEFAULT_STORE), create=False) as store:
        run = store.get(args.hash)
        if run is None:
            raise UserError(f"run: no run with hash {args.hash!r} in {store.root}")
        metrics = store.metrics(run["hash"]) if args.metrics else None
        run["run_dir"] = str(store.run_dir(run["hash"]))
    print(json.dumps(run, indent=2, sort_keys=True, default=str))
    if metrics is not None:
        for m in metrics:
            print(json.dumps(m, sort_keys=True))
    return 0


def cmd_specs(args) -> int:
    from .store import Store

    with Store(getattr(args, "store", DEFAULT_STORE), create=False) as store:
        for name in store.specs():
            hashes = [r["hash"] for r in store.runs(spec=name)]
            counts = store.counts(hashes)
            print(f"{name}: {len(hashes)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0
