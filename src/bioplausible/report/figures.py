"""Figures (matplotlib, PNG and SVG): learning curves like the paper's Figures 1-8, privacy-utility curves
and alignment-angle curves. Lines are means over seeds; shaded bands span the seeds' min to max."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, selectable, accessible

from ..checkpoint import atomic_write_bytes  # noqa: E402
from .tables import DATASET_LABEL, DATASET_ORDER, RULE_ORDER, _order  # noqa: E402

COLORS = {"bp": "#1f77b4", "fa": "#2ca02c", "dfa": "#d62728", "ifa": "#9467bd", "dtp": "#ff7f0e"}
# The paper's figure numbers: (dataset, σ) of its Figures 1-8 (all with its own setup, preset "paper").
PAPER_FIGURES = {("mnist", 0.0): 1, ("fashion-mnist", 0.0): 2, ("cifar10", 0.0): 3, ("cifar100", 0.0): 4,
                 ("mnist", 0.1): 5, ("mnist", 0.4): 6, ("cifar10", 0.1): 7, ("cifar10", 0.4): 8}


def is_private(cfg: dict) -> bool:
    return any(cfg.get(k) is not None for k in ("clip_norm", "noise_multiplier", "target_epsilon", "input_epsilon"))


def _save(fig, out_dir, stem) -> list[str]:
    names = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=130, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        atomic_write_bytes(out_dir / f"{stem}.{ext}", buf.getvalue())
        names.append(f"{stem}.{ext}")
    plt.close(fig)
    return names


def _series(runs, metrics_of, key, scale=1.0):
    """Per-epoch mean, min, max of ``key`` over the runs (seeds); epochs that some seeds lack use the rest."""
    per_epoch: dict = {}
    for r in runs:
        for m in metrics_of(r["hash"]):
            v = m.get(key)
            if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                per_epoch.setdefault(int(m["epoch"]), []).append(scale * v)
    epochs = sorted(per_epoch)
    mean = [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
    return epochs, mean, [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs]


def _usable(g) -> list:
    """The finished runs of a condition or, when none has finished, its unfinished ones (drawn dashed)."""
    ok = [r for r in g["runs"] if r["status"] in ("completed", "converged")]
    return ok or [r for r in g["runs"] if r.get("partial")]


def curve_panels(groups) -> dict:
    """Non-private conditions grouped by (dataset, preset, σ): one figure each, one line per rule."""
    panels: dict = {}
    for g in groups:
        if is_private(g["config"]) or not (g["n"] or g.get("partial_mean") is not None):
            continue
        panels.setdefault((g["dataset"], g["preset"], g["update_noise"]), []).append(g)
    return dict(sorted(panels.items(), key=lambda kv: (_order(kv[0][0], DATASET_ORDER), kv[0][1], kv[0][2])))


def _label(g, siblings) -> str:
    lab = g["rule"].upper()
    same_rule = [s for s in siblings if s["rule"] == g["rule"]]
    if len(same_rule) > 1:  # several conditions of one rule in a panel: name what differs
        keys = sorted({k for s in same_rule for k in s["config"]
                       if any(s["config"].get(k) != g["config"].get(k) for s in same_rule)} - {"seed"})
        lab += " (" + ", ".join(f"{k}={g['config'].get(k)}" for k in keys[:2]) + ")"
    return lab + f" (n={g['n']})" if g["n"] > 1 else lab


def learning_curves(groups, metrics_of, out_dir) -> list[dict]:
    """Test error (%) per epoch, one figure per (dataset, preset, σ). Returns [{title, files, number}]."""
    made = []
    for (dataset, preset, sigma), gs in curve_panels(groups).items():
        number = PAPER_FIGURES.get((dataset, round(sigma, 6))) if preset == "paper" else None
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for g in sorted(gs, key=lambda g: _order(g["rule"], RULE_ORDER)):
            ok = _usable(g)
            epochs, mean, lo, hi = _series(ok, metrics_of, "test_error", 100.0)
            if not epochs:
                continue
            color = COLORS.get(g["rule"])
            unfinished = not g["n"]
            ax.plot(epochs, mean, label=_label(g, gs) + (" (unfinished)" if unfinished else ""), color=color,
                    lw=1.8, ls="--" if unfinished else "-")
            if g["n"] > 1:
                ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
        noise = "clean" if not sigma else f"update noise σ = {sigma:g}"
        title = f"{DATASET_LABEL.get(dataset, dataset)}: test error per epoch, {noise} (preset {preset})"
        if number:
            title = f"Figure {number} (ours). " + title
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        ax.legend(title="rule (line: mean over seeds; band: min–max)", fontsize=8, title_fontsize=8)
        sig = "clean" if not sigma else f"sigma{sigma:g}"
        stem = (f"figure{number}_" if number else "curves_") + f"{dataset}_{sig}_{preset}"
        made.append({"title": title, "files": _save(fig, out_dir, stem), "number": number,
                     "dataset": dataset, "preset": preset, "sigma": sigma})
    made.sort(key=lambda f: (f["number"] is None, f["number"] or 0))
    return made


def alignment_curves(groups, metrics_of, out_dir) -> list[dict]:
    """Angle (degrees) between each rule's hidden-layer update and the BP gradient, per epoch."""
    made = []
    for (dataset, preset, sigma), gs in curve_panels(groups).items():
        gs = [g for g in gs if g["rule"] != "bp"]
        if not gs:
            continue
        layers = sorted({int(k.split("_")[1]) for g in gs for r in g["runs"][:1] for m in metrics_of(r["hash"])[:1]
                         for k in m if k.startswith("angle_")})
        if not layers:
            continue
        fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers), 3.8), squeeze=False)
        for ax, layer in zip(axes[0], layers):
            for g in sorted(gs, key=lambda g: _order(g["rule"], RULE_ORDER)):
                ok = _usable(g)
                epochs, mean, lo, hi = _series(ok, metrics_of, f"angle_{layer}")
                if not epochs:
                    continue
                color = COLORS.get(g["rule"])
                ax.plot(epochs, mean, label=_label(g, gs), color=color, lw=1.8)
                if g["n"] > 1:
                    ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
            ax.axhline(90, color="grey", ls="--", lw=0.8)
            ax.set_title(f"hidden layer {layer}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("angle to the BP gradient (degrees)")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        noise = "clean" if not sigma else f"update noise σ = {sigma:g}"
        title = (f"{DATASET_LABEL.get(dataset, dataset)}, {noise} (preset {preset}): alignment of each rule's "
                 "update with backprop (0° = same direction, 90° = orthogonal)")
        fig.suptitle(title, fontsize=10)
        sig = "clean" if not sigma else f"sigma{sigma:g}"
        made.append({"title": title, "files": _save(fig, out_dir, f"alignment_{dataset}_{sig}_{preset}")})
    return made


def privacy_utility(groups, out_dir) -> list[dict]:
    """Test accuracy (%) against ε per rule, one panel per dataset; ε = ∞ (no noise) at the right end."""
    priv = [g for g in groups if is_private(g["config"]) and g["n"]]
    if not priv:
        return []
    made = []
    for preset in sorted({g["preset"] for g in priv}):
        datasets = sorted({g["dataset"] for g in priv if g["preset"] == preset}, key=lambda d: _order(d, DATASET_ORDER))
        finite = sorted({g["target_epsilon"] for g in priv if g["target_epsilon"] is not None})
        inf_x = (max(finite) * 3) if finite else 1.0
        fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 3.8), squeeze=False)
        for ax, ds in zip(axes[0], datasets):
            for rule in sorted({g["rule"] for g in priv if g["dataset"] == ds}, key=lambda r: _order(r, RULE_ORDER)):
                pts = sorted(((inf_x if g["target_epsilon"] is None else g["target_epsilon"]), g)
                             for g in priv if g["dataset"] == ds and g["rule"] == rule and g["preset"] == preset)
                xs = [x for x, _ in pts]
                ys = [100 * (1 - g["mean"]) for _, g in pts]
                err = [0 if g["std"] is None else 100 * g["std"] for _, g in pts]
                ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, lw=1.6, capsize=2, label=rule.upper(),
                            color=COLORS.get(rule))
            ax.set_xscale("log")
            ticks = finite + [inf_x]
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in finite] + ["∞"])
            ax.minorticks_off()
            ax.set_xlabel("privacy budget ε (δ fixed; ∞ = no noise)")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(DATASET_LABEL.get(ds, ds), fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(title="rule", fontsize=8, title_fontsize=8)
        title = f"Privacy-utility: test accuracy against ε (DP-SGD, preset {preset})"
        fig.suptitle(title, fontsize=10)
        made.append({"title": title, "files": _save(fig, out_dir, f"privacy_utility_{preset}")})
    return made
