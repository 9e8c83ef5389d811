"""The ``bioplausible data`` subcommand: list, fetch and verify datasets.

    bioplausible data [--data-dir D] [--no-verify]   list datasets: found where, verified
    bioplausible data fetch NAME [--data-dir D]      find or download, then verify
    bioplausible data verify NAME [--data-dir D]     verify local files (never downloads)

Handlers take the argparse namespace and return an exit code; problems raise ``UserError``/
``DataError``, which the main CLI prints on one line (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from . import DATASETS, dataset_status, verify


def _add_data_dir(p: argparse.ArgumentParser, default=None) -> None:
    p.add_argument(
        "--data-dir",
        default=default,
        metavar="DIR",
        help="directory holding the official files (DIR/<name>/ or DIR/); searched before "
        "$BIOPLAUSIBLE_DATA, /usr/share/datasets and the cache",
    )


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``data`` subcommand to an argparse ``subparsers`` object; return its parser."""
    p = subparsers.add_parser(
        "data",
        help="list, fetch and verify datasets",
        description="List the datasets and where their files were found; fetch or verify one.",
    )
    _add_data_dir(p)
    p.add_argument("--no-verify", action="store_true", help="only look for files; skip checksums")
    p.set_defaults(func=cmd_list)
    sub = p.add_subparsers(dest="data_command", metavar="{fetch,verify}")
    f = sub.add_parser("fetch", help="find or download a dataset, then verify it")
    f.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    _add_data_dir(f, argparse.SUPPRESS)  # so `data --data-dir D fetch X` keeps D
    f.set_defaults(func=cmd_fetch)
    v = sub.add_parser("verify", help="verify a dataset's local files (never downloads)")
    v.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    _add_data_dir(v, argparse.SUPPRESS)
    v.set_defaults(func=cmd_verify)
    return p


def _name(args) -> str:
    if args.name not in DATASETS:
        raise UserError(f"dataset name: invalid value {args.name!r}; accepted: {', '.join(DATASETS)}")
    return args.name


def _mark(verified) -> str:
    return {True: "verified", False: "FAILED", None: "unchecked"}[verified]


def cmd_list(args, out=None) -> int:
    out = out or sys.stdout
    rows = dataset_status(getattr(args, "data_dir", None), verify_content=not getattr(args, "no_verify", False))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if r["found"]:
            line = f"{r['name']:<{width}}  {_mark(r['verified']):<9}  {r['origin']}: {r['path']}"
        else:
            line = f"{r['name']:<{width}}  {'missing':<9}  -"
        if r["message"]:
            line += f"  ({r['message']})"
        print(line, file=out)
    return 1 if any(r["verified"] is False for r in rows) else 0


def _report(name, report, out) -> None:
    state = "verified" if report["verified"] else "structure checked (content MD5 not pinned)"
    print(f"{name}: {state}; from {report['origin']}: {report['directory']}", file=out)
    for f, p in report["files"].items():
        print(f"  {f}: {p}", file=out)
    for note in report["notes"]:
        print(f"  note: {note}", file=out)


def cmd_fetch(args, out=None) -> int:
    out = out or sys.stdout
    name = _name(args)
    _report(name, verify(name, args.data_dir, download=True), out)  # what fetch() does
    return 0


def cmd_verify(args, out=None) -> int:
    out = out or sys.stdout
    name = _name(args)
    _report(name, verify(name, args.data_dir, download=False), out)
    return 0
