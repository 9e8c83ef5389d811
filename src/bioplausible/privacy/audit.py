"""Audits of a trained run: membership inference and robustness to input noise.

Membership inference, on ``m`` training members versus ``m`` non-members drawn from the same
distribution when the run left training examples out (its ``validation`` split, or the examples past
``train_subset``), else from the test set:

* ``loss``: the loss-threshold attack (Yeom et al. 2018): score = −ℓ(x, y);
* ``lira_offline``: offline LiRA (Carlini et al. 2022) with ``K`` reference models trained with the
  run's own configuration on random halves of a population that holds none of the audited examples.
  For each audited example the reference models give the OUT distribution of the logit-scaled
  confidence φ (sigmoid outputs: the true class's pre-activation ``a_y = logit(o_y)``; softmax:
  ``z_y − logsumexp_{k≠y} z_k``; linear: ``z_y − max_{k≠y} z_k``); with few reference models the
  variance is pooled over examples ("global variance"), and the score is the one-sided test
  statistic ``(φ_target − μ_out(x)) / σ_out``, i.e. per-example difficulty calibration.

Reported per attack: ROC AUC, TPR at 1 % and 0.1 % FPR, and the empirical ε lower bound the attack
implies (Jagielski et al. 2020): the audited pairs are split in two halves; a threshold is chosen on the
first half and on the second half the 95 % Clopper–Pearson bounds give TPR_lo and FPR_hi, so that any
(ε, δ)-DP training must satisfy ε ≥ max(log((TPR_lo − δ)/FPR_hi), log((1 − FPR_hi − δ)/(1 − TPR_lo))).

Robustness: test error with Gaussian noise N(0, s²) added to every input feature, for several s.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy import stats

from ..errors import UserError

NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5)


# -- attack statistics -------------------------------------------------------------------------------
def auc(scores_in, scores_out) -> float:
    """P(score_member > score_nonmember) + ½ P(tie): the Mann–Whitney form of the ROC AUC."""
    s_in, s_out = np.asarray(scores_in, float), np.asarray(scores_out, float)
    ranks = stats.rankdata(np.concatenate([s_in, s_out]))
    u = ranks[: len(s_in)].sum() - len(s_in) * (len(s_in) + 1) / 2
    return float(u / (len(s_in) * len(s_out)))


def roc(scores_in, scores_out):
    """(FPR, TPR) of the rule "member iff score ≥ τ" for every threshold τ (from strict to lax)."""
    s_in, s_out = np.asarray(scores_in, float), np.asarray(scores_out, float)
    thresholds = np.unique(np.concatenate([s_in, s_out, [np.inf]]))[::-1]
    tpr = (s_in[None, :] >= thresholds[:, None]).mean(1) if len(s_in) * len(thresholds) < 5e7 else None
    if tpr is None:
        tpr = 1 - np.searchsorted(np.sort(s_in), thresholds, side="left") / len(s_in)
        fpr = 1 - np.searchsorted(np.sort(s_out), thresholds, side="left") / len(s_out)
    else:
        fpr = (s_out[None, :] >= thresholds[:, None]).mean(1)
    return fpr, tpr, thresholds


def tpr_at_fpr(scores_in, scores_out, fpr_max: float) -> float:
    fpr, tpr, _ = roc(scores_in, scores_out)
    ok = fpr <= fpr_max
    return float(tpr[ok].max()) if ok.any() else 0.0


def _cp_lower(k, n, alpha):
    return 0.0 if k == 0 else float(stats.beta.ppf(alpha, k, n - k + 1))


def _cp_upper(k, n, alpha):
    return 1.0 if k == n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))


def _eps_from_rates(tpr_lo, fpr_hi, delta):
    best = 0.0
    if tpr_lo - delta > 0 and fpr_hi > 0:
        best = max(best, math.log((tpr_lo - delta) / fpr_hi))
    if 1 - fpr_hi - delta > 0 and tpr_lo < 1:
        best = max(best, math.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
    return best


def _eps_at(s_in, s_out, tau, delta, alpha):
    k_in, k_out = int((s_in >= tau).sum()), int((s_out >= tau).sum())
    return _eps_from_rates(_cp_lower(k_in, len(s_in), alpha), _cp_upper(k_out, len(s_out), alpha), delta)


def epsilon_lower_bound(scores_in, scores_out, delta: float = 0.0, alpha: float = 0.05, seed: int = 0) -> float:
    """Empirical ε lower bound with confidence 1 − 2α (threshold picked on one half, bounds on the other)."""
    rng = np.random.default_rng(seed)
    s_in, s_out = rng.permutation(np.asarray(scores_in, float)), rng.permutation(np.asarray(scores_out, float))
    a_in, b_in = s_in[: len(s_in) // 2], s_in[len(s_in) // 2 :]
    a_out, b_out = s_out[: len(s_out) // 2], s_out[len(s_out) // 2 :]
    candidates = np.unique(np.quantile(np.concatenate([a_in, a_out]), np.linspace(0, 1, 201)))
    best_tau = max(candidates, key=lambda t: _eps_at(a_in, a_out, t, delta, alpha))
    return _eps_at(b_in, b_out, best_tau, delta, alpha)


def attack_report(scores_in, scores_out, delta: float = 0.0, seed: int = 0) -> dict:
    return {
        "auc": auc(scores_in, scores_out),
        "tpr_at_1pct_fpr": tpr_at_fpr(scores_in, scores_out, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(scores_in, scores_out, 0.001),
        "epsilon_lower_bound": epsilon_lower_bound(scores_in, scores_out, delta, seed=seed),
    }


# -- model statistics ------------------------------------------------------------------------------
@torch.no_grad()
def losses(net, x, y, batch: int = 10000) -> torch.Tensor:
    out = []
    t = net.targets(y)
    for i in range(0, len(x), batch):
        out.append(net.per_example_loss(net.record(x[i : i + batch]), t[i : i + batch]))
    return torch.cat(out)


@torch.no_grad()
def confidence_logit(net, x, y, batch: int = 10000) -> torch.Tensor:
    """φ: the logit-scaled confidence of the true class (see the module docstring)."""
    out = []
    for i in range(0, len(x), batch):
        z = net.record(x[i : i + batch]).a[-1].double()
        yy = y[i : i + batch]
        zy = z.gather(1, yy.view(-1, 1)).squeeze(1)
        others = z.scatter(1, yy.view(-1, 1), -math.inf)
        if net.output == "sigmoid":
            out.append(zy)
        elif net.output == "softmax":
            out.append(zy - torch.logsumexp(others, 1))
        else:
            out.append(zy - others.max(1).values)
    return torch.cat(out)


@torch.no_grad()
def noise_robustness(net, x, y, levels=NOISE_LEVELS, seed: int = 0) -> list[dict]:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    rows = []
    for s in levels:
        xn = x + s * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) if s > 0 else x
        wrong = 0
        for i in range(0, len(x), 10000):
            wrong += int((net(xn[i : i + 10000]).argmax(1) != y[i : i + 10000]).sum())
        rows.append({"input_noise": float(s), "test_error": wrong / len(x)})
    return rows


# -- loading a run ----------------------------------------------------------------------------------
def load_model(run_dir, cfg=None, n_features=None, n_classes=None):
    """The trained network of a run directory (weights from ``checkpoint.safetensors``)."""
    from ..checkpoint import read_checkpoint
    from ..network import MLP

    run_dir = Path(run_dir)
    tensors, md = read_checkpoint(run_dir / "checkpoint.safetensors")
    arch = md["architecture"]
    net = MLP(arch["sizes"], arch["hidden"], arch["output"], arch["loss"], arch["reduction"], seed=arch["seed"],
              init=arch["init"])
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    return net


def audit_run(run_dir, reference_models: int = 4, reference_epochs: int | None = None, max_examples: int = 5000,
              noise_levels=NOISE_LEVELS, seed: int = 0, threads: int | None = None, write: bool = True) -> dict:
    """Membership-inference and robustness audit of the run in ``run_dir``; writes ``audit.json`` there."""
    from ..checkpoint import atomic_write_json
    from ..training import load_data, run_config, train

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"run_dir: {str(run_dir)!r} holds no run (no config.json); accepted: a directory made by train")
    if reference_models < 0 or reference_models == 1:
        raise UserError(f"reference_models: invalid value {reference_models!r}; accepted: 0 (loss attack only) or >= 2")
    if max_examples < 10:
        raise UserError(f"max_examples: invalid value {max_examples!r}; accepted: an int >= 10")
    if threads:
        torch.set_num_threads(threads)
    cfg = run_config(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    net = load_model(run_dir)
    ds = load_data(cfg)
    x_tr, y_tr = ds.x_train, ds.y_train
    x_te, y_te = ds.x_test, ds.y_test
    if cfg.test_subset:
        x_te, y_te = x_te[: cfg.test_subset], y_te[: cfg.test_subset]
    # Non-members from the training distribution whenever the run left some out: its validation split,
    # else the training examples past train_subset; the test set only as a last resort (a shift between
    # the training and test distributions inflates the attacks' advantage).
    x_nm, y_nm, source = x_te, y_te, "test set (may differ in distribution from the training set)"
    if getattr(ds, "x_val", None) is not None and len(ds.x_val):
        x_nm, y_nm, source = ds.x_val, ds.y_val, "held-out validation split of the training set"
        if cfg.train_subset and cfg.train_subset < len(x_tr):
            x_nm, y_nm = torch.cat([x_nm, x_tr[cfg.train_subset:]]), torch.cat([y_nm, y_tr[cfg.train_subset:]])
            source += " and training examples past train_subset"
    elif cfg.train_subset and cfg.train_subset < len(x_tr):
        x_nm, y_nm, source = x_tr[cfg.train_subset:], y_tr[cfg.train_subset:], "training examples past train_subset"
    if cfg.train_subset:
        x_tr, y_tr = x_tr[: cfg.train_subset], y_tr[: cfg.train_subset]
    m = min(len(x_tr), len(x_nm), max_examples)
    g = torch.Generator().manual_seed(seed)
    perm_tr, perm_te = torch.randperm(len(x_tr), generator=g), torch.randperm(len(x_nm), generator=g)
    mem, non = perm_tr[:m], perm_te[:m]
    xin, yin, xout, yout = x_tr[mem], y_tr[mem], x_nm[non], y_nm[non]
    delta = summary.get("delta") or 0.0
    if not isinstance(delta, float):
        delta = 0.0
    report = {
        "run_dir": str(run_dir.resolve()),
        "members": m,
        "nonmembers": m,
        "nonmember_source": source,
        "delta": delta,
        "attacks": {},
    }
    l_in, l_out = losses(net, xin, yin), losses(net, xout, yout)
    report["attacks"]["loss"] = attack_report(-l_in.numpy(), -l_out.numpy(), delta, seed)
    if reference_models:
        pool_x = torch.cat([x_tr[perm_tr[m:]], x_nm[perm_te[m:]]])
        pool_y = torch.cat([y_tr[perm_tr[m:]], y_nm[perm_te[m:]]])
        n_ref = min(len(x_tr), len(pool_x) // 2)
        if n_ref < cfg.batch_size:
            raise UserError(f"reference_models: the reference population ({len(pool_x)} examples) is too small; "
                            "accepted: 0 reference models, or a run with more data than 2 x max_examples")
        phis = []
        ref_over = {"train_subset": None, "test_subset": None, "validation": 0, "threads": threads or cfg.threads,
                    "device": "cpu"}
        if reference_epochs:
            ref_over["epochs"] = int(reference_epochs)
        if isinstance(summary.get("noise_multiplier"), float) and cfg.target_epsilon is not None:
            # the reference models repeat the run's mechanism: same σ (no re-calibration for their n)
            ref_over.update({"noise_multiplier": summary["noise_multiplier"], "target_epsilon": None,
                             "clip_norm": summary.get("clip_norm")})
        for k in range(reference_models):
            idx = torch.randperm(len(pool_x), generator=g)[:n_ref]
            data = SimpleNamespace(x_train=pool_x[idx], y_train=pool_y[idx], x_test=x_te[:1000], y_test=y_te[:1000],
                                   x_val=None, y_val=None, n_classes=ds.n_classes, shape=ds.shape)
            from ..config import from_dict

            rcfg = from_dict({**cfg.to_dict(), **ref_over, "seed": cfg.seed + 1000 + k})
            with tempfile.TemporaryDirectory() as tmp:
                train(rcfg, out=tmp, data=data, progress=False)
                ref = load_model(tmp)
            phis.append(torch.stack([confidence_logit(ref, xin, yin), confidence_logit(ref, xout, yout)]))
        phi_ref = torch.stack(phis)  # (K, 2, m)
        mu = phi_ref.mean(0)
        sd = float((phi_ref - mu).std(correction=1)) or 1.0
        t_in, t_out = confidence_logit(net, xin, yin), confidence_logit(net, xout, yout)
        s_in, s_out = (t_in - mu[0]) / sd, (t_out - mu[1]) / sd
        rep = attack_report(s_in.numpy(), s_out.numpy(), delta, seed)
        rep.update({"reference_models": reference_models, "reference_train_size": n_ref,
                    "reference_epochs": reference_epochs or cfg.epochs})
        report["attacks"]["lira_offline"] = rep
    eps = summary.get("epsilon")
    report["accountant_epsilon"] = eps
    lbs = [a["epsilon_lower_bound"] for a in report["attacks"].values()]
    report["max_epsilon_lower_bound"] = max(lbs)
    if isinstance(eps, (int, float)):
        report["consistent_with_accountant"] = max(lbs) <= eps
    report["robustness"] = noise_robustness(net, x_te, y_te, noise_levels, seed)
    if write:
        atomic_write_json(run_dir / "audit.json", report)
    return report
