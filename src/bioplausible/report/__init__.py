"""Reports: tables shaped like the paper's (with its numbers beside ours) and figures from a run store."""

from .build import build_report

__all__ = ["build_report"]
