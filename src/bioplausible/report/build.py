"""``build_report``: from a spec (its runs in a store) or a whole store to a folder of Markdown, CSV and
figures.

Files written to ``out``:

* ``report.md``: provenance, run counts, the rule-by-rule comparison, Tables 1 and 2 beside the paper's
  numbers, and every figure;
* ``table1.md/.csv`` (clean test errors), ``table2.md/.csv`` (update noise), ``comparison.md`` (all rules
  side by side per condition), ``conditions.csv`` (every condition, mean/std over seeds), ``runs.csv``
  (every run);
* ``figures/``: learning curves (``figureN_*`` where they match the paper's Figures 1-8), alignment
  angles and privacy-utility curves, each as PNG and SVG.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
from pathlib import Path

from ..checkpoint import atomic_write_text
from ..errors import UserError
from . import figures as figs
from . import tables as T


def _machine() -> str:
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{socket.gethostname()}: {platform.processor() or platform.machine()}, {cores} CPU cores, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def load_runs(source, store_dir=None):
    """(title, runs, store) from a spec name/path (its runs in ``store_dir``) or a store directory."""
    from ..experiments.spec import load_spec
    from ..experiments.store import Store

    p = Path(source)
    if p.is_dir() or p.suffix == ".sqlite":
        store = Store(p, create=False)
        return f"store {store.root}", store.runs(), store
    spec = load_spec(source)
    from ..experiments.cli import DEFAULT_STORE

    store = Store(store_dir or DEFAULT_STORE, create=False)
    hashes = {r.hash for r in spec.runs}
    runs = [r for r in store.runs() if r["hash"] in hashes]
    missing = len(hashes) - len(runs)
    title = f"spec {spec.name}"
    if missing:
        title += f" ({missing} of its runs not in the store yet)"
    return title, runs, store


def comparison_markdown(groups) -> str:
    """Rules side by side per condition (dataset, preset, σ, ε): final test error, mean ± std."""
    conds: dict = {}
    for g in groups:
        key = (g["dataset"], g["preset"], g["update_noise"], g["target_epsilon"],
               figs.is_private(g["config"]))
        conds.setdefault(key, {})[g["rule"]] = g
    rules = [r for r in T.RULE_ORDER if any(r in v for v in conds.values())]
    head = ["Dataset", "Preset", "σ", "ε", *[r.upper() for r in rules], "Best", "DFA − BP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (ds, preset, sigma, eps, private), by_rule in conds.items():
        have = {r: g for r, g in by_rule.items() if g["mean"] is not None}
        # a "best" only when every rule of the row has finished (an unfinished rival is no loser)
        best = min(have, key=lambda r: have[r]["mean"]).upper() if have and len(have) == len(by_rule) else ""
        diff = ""
        if "bp" in have and "dfa" in have:
            diff = f"{100 * (have['dfa']['mean'] - have['bp']['mean']):+.2f} pp"
        eps_txt = ("∞" if eps is None else f"{eps:g}") if private else "–"
        cells = [T.DATASET_LABEL.get(ds, ds), preset, f"{sigma:g}", eps_txt]
        for r in rules:
            g = by_rule.get(r)
            if g is None:
                cells.append("")
            elif g["mean"] is not None:
                cells.append(T.fmt_pct(g["mean"], g["std"]))
            elif g.get("partial_mean") is not None:
                cells.append(f"({100 * g['partial_mean']:.2f}% at epoch {g['partial_epoch']}, unfinished)")
            else:
                cells.append("failed" if g["failed"] else "not run")
        cells += [best, diff]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_report(source, out, store_dir=None) -> dict:
    from ..experiments.store import export_csv

    out = Path(out)
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {str(out)!r} ({exc.strerror or exc})") from None
    title, runs, store = load_runs(source, store_dir)
    with store:
        if not runs:
            raise UserError(f"report: no runs for {source!r} in {store.root}; run `bioplausible sweep` first")
        cache: dict = {}

        def metrics_of(h):
            if h not in cache:
                cache[h] = store.metrics(h)
            return cache[h]

        for r in runs:  # unfinished runs (interrupted or still running): their last finished epoch
            if r["status"] not in T.DONE and r["status"] not in ("failed", "diverged") and r["epochs"]:
                m = [x for x in metrics_of(r["hash"]) if "test_error" in x]
                r["partial"] = m[-1] if m else None
        groups = T.group(runs)
        t1, t2 = T.paper_table1(groups), T.paper_table2(groups)
        extra = [k for k in T.varying_keys(groups)
                 if k not in ("dataset", "rule", "preset", "update_noise", "target_epsilon", "hidden_sizes",
                              "rule_options", "clip_norm", "delta")]
        files = {
            "table1.md": T.table_markdown(t1, False, extra), "table1.csv": T.table_csv(t1, False, extra),
            "table2.md": T.table_markdown(t2, True, extra), "table2.csv": T.table_csv(t2, True, extra),
            "comparison.md": comparison_markdown(groups), "conditions.csv": T.conditions_csv(groups),
            "runs.csv": export_csv(runs),
        }
        curves = figs.learning_curves(groups, metrics_of, out / "figures")
        align = figs.alignment_curves(groups, metrics_of, out / "figures")
        privacy = figs.privacy_utility(groups, out / "figures")
    counts: dict = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    compute = sum(r["seconds"] or 0 for r in runs)
    md = [f"# Results: {title}", "",
          f"Generated {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} on {_machine()}.", "",
          f"{len(runs)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f"; {compute / 60:.1f} minutes of training and evaluation summed over runs.", "",
          "Errors are final test errors (last epoch), mean ± sample std over seeds (n = number of seeds; "
          "no ± with one seed). pp = percentage points.", ""]
    failed = [r for r in runs if r["status"] in ("failed", "diverged")]
    if failed:
        md += ["## Failed or diverged runs", ""]
        for r in failed:
            md.append(f"- `{r['hash']}` {r['dataset']} {r['rule']} ({r['preset']}, σ={r['update_noise']:g}): "
                      f"{r['status']}: {(r['error'] or '').splitlines()[0][:300]}")
        md.append("")
    md += ["## All rules side by side", "", files["comparison.md"]]
    if t1:
        md += ["## Table 1: clean test errors (ours beside the paper's)", "", files["table1.md"]]
    if t2:
        md += ["## Table 2: test errors under update noise N(0, σ²) (ours beside the paper's)", "", files["table2.md"]]
    for name, items in (("Learning curves", curves), ("Alignment with backprop", align),
                        ("Privacy-utility", privacy)):
        if items:
            md += [f"## {name}", ""]
            for f in items:
                png = next(x for x in f["files"] if x.endswith(".png"))
                svg = next(x for x in f["files"] if x.endswith(".svg"))
                md += [f"![{f['title']}](figures/{png})", "", f"*{f['title']}* ([SVG](figures/{svg}))", ""]
    files["report.md"] = "\n".join(md)
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return {"out": str(out), "runs": len(runs), "counts": counts, "figures": [f for x in (curves, align, privacy)
                                                                              for f in x],
            "files": sorted(files)}
