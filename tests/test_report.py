"""Reports from a real (small) sweep: statistics over seeds, the paper's numbers beside ours, figures."""

import csv
import io
import math
import statistics

import numpy as np
import pytest

from bioplausible.cli import main
from bioplausible.experiments import Store, load_spec, sweep
from bioplausible.report import build_report
from bioplausible.report.tables import PAPER_TABLE1, PAPER_TABLE2
from helpers import needs_mnist

SPEC = """
name = "mini"
[base]
preset = "paper"
hidden_sizes = [32]
epochs = 2
lr = 0.01
stop_delta = 0.0
train_subset = 600
test_subset = 300
batch_size = 100
[[grid]]
dataset = "mnist"
rule = ["bp", "dfa"]
update_noise = [0.0, 0.1]
seed = [0, 1]
[[grid]]
dataset = "mnist"
rule = "bp"
preset = "tuned"
clip_norm = 1.0
delta = 1e-4
target_epsilon = [8.0, inf]
"""


pytestmark = needs_mnist


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    spec_path = d / "mini.toml"
    spec_path.write_text(SPEC.replace("preset = \"tuned\"\n", "preset = \"tuned\"\nepochs = 2\n"))
    store = Store(d / "store")
    res = sweep(load_spec(spec_path), store, workers=1, progress=False)
    assert res["failed"] == 0, store.runs(status="failed")[0]["error"]
    out = d / "out"
    info = build_report(spec_path, out, store_dir=d / "store")
    return spec_path, store, out, info


def test_table1_is_mean_and_std_over_seeds_beside_the_papers_numbers(report):
    _, store, out, _ = report
    rows = list(csv.DictReader(io.StringIO((out / "table1.csv").read_text())))
    paper_rows = [r for r in rows if r["preset"] == "paper"]
    assert {r["rule"] for r in paper_rows} == {"bp", "dfa"}
    for r in paper_rows:
        errs = [x["test_error"] for x in store.runs(rule=r["rule"], update_noise=0.0, preset="paper")]
        assert len(errs) == 2
        assert float(r["test_error_mean_pct"]) == pytest.approx(100 * np.mean(errs), abs=1e-4)
        assert float(r["test_error_std_pct"]) == pytest.approx(100 * np.std(errs, ddof=1), abs=1e-4)
        assert r["n_seeds"] == "2"
        assert float(r["paper_pct"]) == PAPER_TABLE1[("mnist", r["rule"])]
    md = (out / "table1.md").read_text()
    assert "| MNIST | BP | paper |" in md and "7.03%" in md and "5.93%" in md and " ± " in md
    t2 = list(csv.DictReader(io.StringIO((out / "table2.csv").read_text())))
    assert {(r["sigma"], r["rule"]) for r in t2} == {("0.1", "bp"), ("0.1", "dfa")}
    for r in t2:
        assert float(r["paper_pct"]) == PAPER_TABLE2[("mnist", 0.1, r["rule"])]


def test_comparison_and_conditions_cover_every_condition(report):
    _, store, out, _ = report
    cond = list(csv.DictReader(io.StringIO((out / "conditions.csv").read_text())))
    assert len(cond) == 6  # 2 rules x 2 sigmas (2 seeds each) + BP at 2 epsilons
    for c in cond:
        assert int(c["n_seeds"]) == (2 if c["preset"] == "paper" else 1)
    cmp_md = (out / "comparison.md").read_text()
    bp = statistics.fmean(r["test_error"] for r in store.runs(rule="bp", update_noise=0.0, preset="paper"))
    dfa = statistics.fmean(r["test_error"] for r in store.runs(rule="dfa", update_noise=0.0, preset="paper"))
    assert f"{100 * (dfa - bp):+.2f} pp" in cmp_md
    assert "| MNIST | tuned | 0 | ∞ |" in cmp_md and "| MNIST | tuned | 0 | 8 |" in cmp_md


def test_figures_are_readable_png_and_svg(report):
    _, _, out, info = report
    figs = out / "figures"
    names = sorted(p.name for p in figs.iterdir())
    for stem in ("figure1_mnist_clean_paper", "figure5_mnist_sigma0.1_paper", "alignment_mnist_clean_paper",
                 "privacy_utility_tuned"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
        assert (figs / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (figs / "figure1_mnist_clean_paper.svg").read_text()
    for text in ("Figure 1 (ours). MNIST: test error per epoch, clean", "epoch", "test error (%)", "BP (n=2)",
                 "DFA (n=2)", "mean over seeds"):
        assert text in svg
    svg = (figs / "privacy_utility_tuned.svg").read_text()
    for text in ("privacy budget ε", "test accuracy (%)", "∞", "BP"):
        assert text in svg
    svg = (figs / "alignment_mnist_clean_paper.svg").read_text()
    assert "angle to the BP gradient (degrees)" in svg and "DFA" in svg
    md = (out / "report.md").read_text()
    assert "![Figure 1 (ours)" in md and "## Table 1" in md and "## Table 2" in md
    assert len(info["figures"]) >= 5


def test_report_cli_and_errors(report, tmp_path, capsys):
    spec_path, store, _, _ = report
    assert main(["report", str(store.root), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    assert main(["report", str(tmp_path / "nostore"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bioplausible: error:") and "\n" not in err
