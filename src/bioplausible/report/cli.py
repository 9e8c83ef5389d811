"""``bioplausible report SPEC_OR_STORE --out DIR [--store DIR]``: tables and figures from a run store."""

from __future__ import annotations


def register(subparsers) -> None:
    from ..experiments.cli import DEFAULT_STORE

    p = subparsers.add_parser(
        "report", help="write Markdown/CSV tables and figures (like the paper's) from a spec's runs or a store",
        description="Tables 1-2 beside the paper's numbers, all rules side by side, learning curves, alignment "
        "and privacy-utility figures (PNG and SVG).",
    )
    p.add_argument("source", metavar="SPEC_OR_STORE",
                   help="a spec (file or shipped name: its runs in --store) or a store directory (all its runs)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--store", default=None, help=f"run store for a SPEC (default: {DEFAULT_STORE})")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from .build import build_report

    res = build_report(args.source, args.out, store_dir=args.store)
    print(f"report: {res['runs']} runs, {len(res['figures'])} figures -> {res['out']}/report.md")
    return 0
