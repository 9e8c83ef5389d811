"""Privacy through the CLI: DP options on train, the privacy summary, one-line errors, the audit command,
and the attack statistics against independent computations."""

import json
import math

import numpy as np
import pytest

from bioplausible.cli import main
from bioplausible.privacy import audit

pytestmark = pytest.mark.filterwarnings("ignore")
TINY = ["--dataset", "mnist", "--train-subset", "600", "--test-subset", "600", "--hidden-sizes", "16",
        "--threads", "1", "--quiet", "--json", "--no-early-stop"]


from helpers import needs_mnist


def test_auc_tpr_and_epsilon_bound_against_direct_computation():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1.0, 1, 300), rng.normal(0, 1, 300)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s_in for b in s_out])
    assert audit.auc(s_in, s_out) == pytest.approx(brute, abs=1e-12)
    # TPR at FPR ≤ 1%: best threshold lies just above the 4th largest non-member score (3/300 = 1%)
    tau4 = np.sort(s_out)[-4]
    assert audit.tpr_at_fpr(s_in, s_out, 0.01) == pytest.approx(np.mean(s_in > tau4))
    # identical distributions: the bound is (almost always) 0 and never large
    same = audit.epsilon_lower_bound(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    assert same < 0.3
    # perfect separation of 1000 vs 1000: the bound is what 500 held-out pairs can certify
    perfect = audit.epsilon_lower_bound(np.ones(1000), np.zeros(1000))
    k = 500
    tpr_lo = 0.05 ** (1 / k)  # Clopper–Pearson lower bound for k/k
    fpr_hi = 1 - 0.05 ** (1 / k)  # upper bound for 0/k
    assert perfect == pytest.approx(max(math.log(tpr_lo / fpr_hi), math.log((1 - fpr_hi) / (1 - tpr_lo))), rel=1e-6)


@needs_mnist
def test_train_dp_summary_audit_and_errors(tmp_path, capsys):
    out = tmp_path / "dp"
    rc = main(["train", *TINY, "--rule", "dfa", "--epochs", "2", "--batch-size", "50", "--preset", "tuned",
               "--augment-shift", "0", "--clip-norm", "1", "--noise-multiplier", "1.5", "--delta", "1e-5", "--out", str(out)])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    for k in ("epsilon", "delta", "noise_multiplier", "clip_norm", "sampling_rate", "accountant"):
        assert k in s
    assert s["private"] and s["sampling_rate"] == pytest.approx(50 / 600) and s["accountant"] == "pld"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0 < rows[0]["epsilon_pld"] < rows[1]["epsilon_pld"] == s["epsilon"] < rows[1]["epsilon_rdp"]

    rc = main(["audit", str(out), "--reference-models", "2", "--reference-epochs", "1", "--max-examples", "100",
               "--threads", "1", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["attacks"]) == {"loss", "lira_offline"}
    # non-members from the training distribution: the training examples the run left out (past 600)
    assert rep["nonmember_source"] == "training examples past train_subset"
    assert rep["max_epsilon_lower_bound"] <= s["epsilon"] and rep["consistent_with_accountant"]
    assert json.loads((out / "audit.json").read_text())["members"] == 100
    assert [r["input_noise"] for r in rep["robustness"]] == [0, 0.1, 0.2, 0.3, 0.5]

    # the paper's update noise: ε = ∞, said plainly
    rc = main(["train", *TINY, "--epochs", "1", "--update-noise", "0.1", "--noise-site", "error",
               "--out", str(tmp_path / "un")])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0 and s["epsilon"] == "inf" and "no formal privacy guarantee" in s["privacy"]

    # bad input: one line, exit 2, naming the option
    for argv, word in ((["--clip-norm", "1", "--noise-multiplier", "1", "--delta", "0.005"], "--delta"),
                       (["--update-noise", "0.1", "--clip-norm", "1", "--noise-multiplier", "1"], "--update-noise")):
        rc = main(["train", *TINY, "--epochs", "1", *argv, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and word in err
    rc = main(["audit", str(tmp_path / "nothing")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "run_dir" in err
