"""``bioplausible audit RUN_DIR``: membership-inference attacks and noise robustness of a trained run."""

from __future__ import annotations

import json

from ..errors import UserError


def _levels(text: str):
    try:
        out = [float(v) for v in text.split(",") if v.strip()]
        if not out or min(out) < 0 or any(v != v for v in out):
            raise ValueError
        return out
    except ValueError:
        raise UserError(f"--noise-levels: invalid value {text!r}; accepted: comma-separated floats >= 0") from None


def _int(name, text, lo):
    try:
        v = int(text)
    except ValueError:
        raise UserError(f"{name}: invalid value {text!r}; expected int") from None
    if v < lo:
        raise UserError(f"{name}: invalid value {text!r}; accepted: an int >= {lo}")
    return v


def cmd_audit(args) -> int:
    from .audit import audit_run

    report = audit_run(
        args.run_dir,
        reference_models=_int("--reference-models", args.reference_models, 0),
        reference_epochs=_int("--reference-epochs", args.reference_epochs, 1) if args.reference_epochs else None,
        max_examples=_int("--max-examples", args.max_examples, 10),
        noise_levels=_levels(args.noise_levels),
        seed=_int("--seed", args.seed, 0),
        threads=_int("--threads", args.threads, 1) if args.threads else None,
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(f"audit of {report['run_dir']} ({report['members']} members vs {report['nonmembers']} non-members; "
          f"accountant epsilon: {report['accountant_epsilon']})")
    for name, a in report["attacks"].items():
        print(f"  {name}: AUC {a['auc']:.4f}, TPR@1%FPR {a['tpr_at_1pct_fpr']:.4f}, "
              f"TPR@0.1%FPR {a['tpr_at_0.1pct_fpr']:.4f}, empirical epsilon >= {a['epsilon_lower_bound']:.3f}")
    print("  test error under input noise: " + ", ".join(
        f"s={r['input_noise']:g}: {100 * r['test_error']:.2f}%" for r in report["robustness"]))
    print(f"  written to {report['run_dir']}/audit.json")
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="membership-inference audit and noise robustness of a trained run")
    p.add_argument("run_dir", help="a run directory made by 'bioplausible train'")
    p.add_argument("--reference-models", default="4", help="offline-LiRA reference models (0: loss attack only)")
    p.add_argument("--reference-epochs", default=None, help="epochs per reference model (default: the run's)")
    p.add_argument("--max-examples", default="5000", help="members (and as many non-members) audited")
    p.add_argument("--noise-levels", default="0,0.1,0.2,0.3,0.5", help="input-noise std devs for robustness")
    p.add_argument("--seed", default="0")
    p.add_argument("--threads", default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_audit)
