"""Tables: runs grouped into conditions (everything but the seed), mean ± std over seeds, and the
paper's Tables 1 and 2 with the paper's own numbers beside ours."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics

# The paper's numbers (test error, %): Table 1 (clean) and Table 2 (update noise σ).
PAPER_TABLE1 = {
    ("mnist", "bp"): 7.03, ("mnist", "dfa"): 5.93,
    ("fashion-mnist", "bp"): 15.85, ("fashion-mnist", "dfa"): 14.74,
    ("cifar10", "bp"): 70.35, ("cifar10", "dfa"): 63.0,
    ("cifar100", "bp"): 96.58, ("cifar100", "dfa"): 87.58,
}
PAPER_TABLE2 = {
    ("mnist", 0.1, "bp"): 5.67, ("mnist", 0.1, "dfa"): 4.95,
    ("mnist", 0.4, "bp"): 12.83, ("mnist", 0.4, "dfa"): 14.22,
    ("cifar10", 0.1, "bp"): 75.51, ("cifar10", 0.1, "dfa"): 70.78,
    ("cifar10", 0.4, "bp"): 90.0, ("cifar10", 0.4, "dfa"): 90.0,
}
DATASET_ORDER = ("mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")
DATASET_LABEL = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                 "cifar100": "CIFAR-100", "cifar100-coarse": "CIFAR-100 (coarse)"}
RULE_ORDER = ("bp", "fa", "dfa", "ifa", "dtp")
SKIP_KEYS = ("seed", "data_dir", "device", "threads", "eval_batch_size")
DONE = ("completed", "converged")


def condition_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in SKIP_KEYS and k != "run_hash"}, sort_keys=True)


def _num(v):
    """A number from a summary field (``"inf"`` as stored for an unbounded ε becomes ``math.inf``)."""
    try:
        return None if v is None or isinstance(v, bool) else float(v)
    except (TypeError, ValueError):
        return None


def mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None, 0
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else None
    return m, s, len(values)


def _order(v, order):
    return order.index(v) if v in order else len(order)


def group(runs: list[dict]) -> list[dict]:
    """One row per condition: its config, the runs (all statuses), and final / best test error stats."""
    groups: dict = {}
    for r in runs:
        g = groups.setdefault(condition_key(r["config"]), {"config": r["config"], "runs": []})
        g["runs"].append(r)
    out = []
    for g in groups.values():
        ok = [r for r in g["runs"] if r["status"] in DONE]
        c = g["config"]
        m, s, n = mean_std([r["test_error"] for r in ok])
        bm, bs, _ = mean_std([r["summary"].get("best_test_error") for r in ok])
        em, _, _ = mean_std([r["epochs"] for r in ok])
        eps = [_num(r["summary"].get("epsilon")) for r in ok]
        eps = [e for e in eps if e is not None]
        errors = sorted({(r["error"] or "").splitlines()[0] for r in g["runs"] if r["status"] in ("failed", "diverged")})
        part = [r["partial"] for r in g["runs"] if r["status"] not in DONE and r.get("partial")]
        pm, _, _ = mean_std([p.get("test_error") for p in part])
        out.append({
            "config": c, "runs": g["runs"], "dataset": c["dataset"], "rule": c["rule"], "preset": c["preset"],
            "update_noise": c.get("update_noise", 0.0), "target_epsilon": c.get("target_epsilon"),
            "mean": m, "std": s, "n": n, "best_mean": bm, "best_std": bs, "epochs_mean": em,
            "epsilon_spent": (math.inf if any(math.isinf(e) for e in eps) else statistics.fmean(eps)) if eps else None,
            "seeds": sorted(r["seed"] for r in ok),
            "statuses": sorted(r["status"] for r in g["runs"]),
            "failed": sum(r["status"] in ("failed", "diverged") for r in g["runs"]),
            "pending": sum(r["status"] not in (*DONE, "failed", "diverged") for r in g["runs"]),
            "errors": errors,
            "partial_mean": pm, "partial_epoch": min((int(p["epoch"]) for p in part), default=None),
        })
    out.sort(key=lambda g: (_order(g["dataset"], DATASET_ORDER), g["preset"], g["update_noise"],
                            math.inf if g["target_epsilon"] is None else g["target_epsilon"],
                            _order(g["rule"], RULE_ORDER), condition_key(g["config"])))
    return out


def varying_keys(groups: list[dict]) -> list[str]:
    """Config keys whose value differs between conditions (so they must label the rows)."""
    keys = sorted({k for g in groups for k in g["config"]} - set(SKIP_KEYS) - {"run_hash"})
    return [k for k in keys if len({json.dumps(g["config"].get(k), sort_keys=True) for g in groups}) > 1]


def fmt_pct(m, s=None, n=None) -> str:
    if m is None:
        return "n/a"
    txt = f"{100 * m:.2f}"
    if s is not None:
        txt += f" ± {100 * s:.2f}"
    txt += "%"
    if n is not None and n != 1:
        txt += f" (n={n})"
    return txt


def _status_note(g) -> str:
    if g["n"]:
        return ""
    if g["errors"]:
        return g["errors"][0][:160]
    if g.get("partial_mean") is not None:
        return (f"unfinished: {100 * g['partial_mean']:.2f}% after epoch {g['partial_epoch']} "
                f"of at most {g['config']['epochs']}")
    if g["pending"]:
        return "not run yet"
    return ""


def paper_table1(groups) -> list[dict]:
    rows = []
    for g in groups:
        if g["update_noise"] or g["target_epsilon"] is not None or g["config"].get("clip_norm") is not None:
            continue
        paper = PAPER_TABLE1.get((g["dataset"], g["rule"])) if g["preset"] == "paper" else None
        rows.append({"dataset": g["dataset"], "rule": g["rule"], "preset": g["preset"], "ours": g,
                     "paper": paper})
    return rows


def paper_table2(groups) -> list[dict]:
    rows = []
    for g in groups:
        if not g["update_noise"] or g["target_epsilon"] is not None:
            continue
        paper = (PAPER_TABLE2.get((g["dataset"], round(g["update_noise"], 6), g["rule"]))
                 if g["preset"] == "paper" else None)
        rows.append({"dataset": g["dataset"], "sigma": g["update_noise"], "rule": g["rule"], "preset": g["preset"],
                     "ours": g, "paper": paper})
    return rows


def _extra(g, extra_keys):
    return [json.dumps(g["config"].get(k)) if isinstance(g["config"].get(k), (list, dict)) else
            str(g["config"].get(k)) for k in extra_keys]


def table_markdown(rows, with_sigma: bool, extra_keys=()) -> str:
    head = ["Dataset"] + (["σ"] if with_sigma else []) + ["Rule", "Preset", *extra_keys,
                                                          "Ours: final test error (mean ± std over seeds)",
                                                          "Paper", "Ours − paper", "Epochs", "Note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        g = r["ours"]
        diff = "" if (r["paper"] is None or g["mean"] is None) else f"{100 * g['mean'] - r['paper']:+.2f} pp"
        cells = [DATASET_LABEL.get(r["dataset"], r["dataset"])]
        if with_sigma:
            cells.append(f"{r['sigma']:g}")
        cells += [r["rule"].upper(), r["preset"], *_extra(g, extra_keys), fmt_pct(g["mean"], g["std"], g["n"]),
                  "" if r["paper"] is None else f"{r['paper']:.2f}%", diff,
                  "" if g["epochs_mean"] is None else f"{g['epochs_mean']:.0f}", _status_note(g).replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows, with_sigma: bool, extra_keys=()) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", *(["sigma"] if with_sigma else []), "rule", "preset", *extra_keys,
                "test_error_mean_pct", "test_error_std_pct", "n_seeds", "paper_pct", "best_test_error_mean_pct",
                "epochs_mean", "failed", "note"])
    for r in rows:
        g = r["ours"]
        pct = lambda v: "" if v is None else f"{100 * v:.4f}"  # noqa: E731
        w.writerow([r["dataset"], *([r["sigma"]] if with_sigma else []), r["rule"], r["preset"],
                    *_extra(g, extra_keys), pct(g["mean"]), pct(g["std"]), g["n"],
                    "" if r["paper"] is None else r["paper"], pct(g["best_mean"]),
                    "" if g["epochs_mean"] is None else f"{g['epochs_mean']:.1f}", g["failed"], _status_note(g)])
    return buf.getvalue()


def conditions_csv(groups) -> str:
    """Every condition: the varying config keys, then statistics over seeds."""
    keys = varying_keys(groups)
    base = ["dataset", "rule", "preset", "update_noise", "target_epsilon"]
    keys = base + [k for k in keys if k not in base]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*keys, "test_error_mean", "test_error_std", "n_seeds", "seeds", "best_test_error_mean",
                "epochs_mean", "epsilon_spent", "failed", "pending", "errors"])
    for g in groups:
        vals = [json.dumps(g["config"].get(k)) if isinstance(g["config"].get(k), (list, dict)) else g["config"].get(k)
                for k in keys]
        w.writerow(["" if v is None else v for v in vals] + [
            "" if g["mean"] is None else g["mean"], "" if g["std"] is None else g["std"], g["n"],
            " ".join(map(str, g["seeds"])), "" if g["best_mean"] is None else g["best_mean"],
            "" if g["epochs_mean"] is None else g["epochs_mean"],
            "" if g["epsilon_spent"] is None else g["epsilon_spent"], g["failed"], g["pending"],
            " / ".join(g["errors"])])
    return buf.getvalue()
