"""The command line: thin wrappers that parse options and call the library.

Every user error ends in one line on stderr (``bioplausible: error: …``) and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .errors import UserError

# Modules that add sub-commands: each has ``register(subparsers)``; handlers are set with
# ``parser.set_defaults(func=handler)`` and return an exit code.
COMMAND_MODULES = [
    "bioplausible.data.cli",
    "bioplausible.experiments.cli",
    "bioplausible.report.cli",
    "bioplausible.privacy.cli",
]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _none_default(**kw):
    return {"default": None, **kw}


def hidden_sizes(text: str) -> list[int]:
    """``800``, ``800,400`` or ``240x7`` → list of widths."""
    try:
        out = []
        for part in str(text).split(","):
            part = part.strip().lower().replace("×", "x")
            if "x" in part:
                w, k = part.split("x")
                out += [int(w)] * int(k)
            else:
                out.append(int(part))
        if not out or min(out) < 1:
            raise ValueError
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; accepted: widths like 800, 800,400 or 240x7"
        ) from None


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``compare``; each maps onto a TrainConfig field."""
    from .config import (
        DATASET_NAMES, DEVICES, NOISE_SAMPLERS, NOISE_SITES, OPTIMIZERS, PRESETS, SAMPLINGS, SCHEDULES,
    )
    from .network import HIDDEN, INITS, LOSSES, OUTPUTS, REDUCTIONS

    g = p.add_argument_group("model and rule")
    g.add_argument("--preset", choices=PRESETS, default="paper", help="starting point (default: paper)")
    g.add_argument("--hidden-sizes", type=hidden_sizes, **_none_default(help="hidden widths: 800, 800,400 or 240x7"))
    g.add_argument("--hidden", choices=HIDDEN, **_none_default(help="hidden activation"))
    g.add_argument("--output", choices=OUTPUTS, **_none_default(help="output activation"))
    g.add_argument("--loss", choices=LOSSES, **_none_default())
    g.add_argument("--reduction", choices=REDUCTIONS, **_none_default(help="batch reduction of the loss"))
    g.add_argument("--init", choices=INITS, **_none_default(help="weight initialisation"))
    g.add_argument("--feedback-scale", type=str, **_none_default(help="scale of FA/DFA/IFA feedback matrices"))
    g.add_argument("--shared-feedback", action=argparse.BooleanOptionalAction, **_none_default(help="DFA: one B for all hidden layers"))
    g.add_argument("--target-step", type=str, **_none_default(help="DTP: first-target step size η̂"))
    g.add_argument("--inverse-noise", type=str, **_none_default(help="DTP: noise σ when training inverses"))
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=str, **_none_default())
    g.add_argument("--batch-size", type=str, **_none_default())
    g.add_argument("--optimizer", choices=OPTIMIZERS, **_none_default())
    g.add_argument("--lr", type=str, **_none_default(help="learning rate"))
    g.add_argument("--momentum", type=str, **_none_default(help="momentum for sgd+momentum"))
    g.add_argument("--weight-decay", type=str, **_none_default())
    g.add_argument("--schedule", choices=SCHEDULES, **_none_default(help="learning-rate schedule"))
    g.add_argument("--inverse-lr", type=str, **_none_default(help="DTP: learning rate of the inverse maps"))
    g.add_argument("--stop-delta", type=str, **_none_default(help="stop when the epoch objective changes by less"))
    g.add_argument("--no-early-stop", action="store_true", help="train all epochs (turns off --stop-delta)")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", **_none_default(help="folder with the dataset files"))
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction, **_none_default(help="per-channel standardisation"))
    g.add_argument("--validation", type=str, **_none_default(help="held-out validation: count or fraction"))
    g.add_argument("--train-subset", type=str, **_none_default(help="use only the first N training examples"))
    g.add_argument("--test-subset", type=str, **_none_default(help="use only the first N test examples"))
    g.add_argument("--augment-shift", type=str, **_none_default(help="random translations of up to N pixels"))
    g.add_argument("--augment-flip", action=argparse.BooleanOptionalAction, **_none_default(help="random horizontal flips"))
    g.add_argument("--augment-multiplicity", type=str,
                   **_none_default(help="K augmented copies per example, gradients averaged before DP clipping"))
    g = p.add_argument_group("privacy")
    g.add_argument("--update-noise", type=str, **_none_default(help="the paper's N(0, σ²) update noise (no guarantee)"))
    g.add_argument("--noise-site", choices=NOISE_SITES, **_none_default(help="where --update-noise is added"))
    g.add_argument("--clip-norm", type=str, **_none_default(help="DP-SGD per-example clipping norm C"))
    g.add_argument("--noise-multiplier", type=str, **_none_default(help="DP-SGD noise multiplier σ"))
    g.add_argument("--target-epsilon", type=str, **_none_default(help="calibrate σ to reach this ε"))
    g.add_argument("--delta", type=str, **_none_default(help="DP δ (default: below 1/n)"))
    g.add_argument("--per-layer-clipping", action=argparse.BooleanOptionalAction, **_none_default())
    g.add_argument("--sampling", choices=SAMPLINGS, **_none_default(help="batch sampling"))
    g.add_argument("--input-epsilon", type=str, **_none_default(help="Laplace input perturbation, ε per example"))
    g.add_argument("--input-noise-fresh", action=argparse.BooleanOptionalAction, **_none_default())
    g.add_argument("--noise-sampler", choices=NOISE_SAMPLERS,
                   **_none_default(help="Gaussian sampler (default auto: the compiled one on CPU where it builds)"))
    g = p.add_argument_group("execution")
    g.add_argument("--seed", type=str, **_none_default())
    g.add_argument("--device", choices=DEVICES, **_none_default())
    g.add_argument("--threads", type=str, **_none_default(help="torch CPU threads"))
    g.add_argument("--nondeterministic", action="store_true", help="allow non-deterministic kernels")
    g.add_argument("--eval-batch-size", type=str, **_none_default())


RULE_OPTION_FLAGS = ("feedback_scale", "shared_feedback", "target_step", "inverse_noise")
NOT_CONFIG = {"command", "func", "out", "resume", "json", "quiet", "no_early_stop", "nondeterministic", "rules"}


def config_from_args(args, **fixed):
    """Resolve a TrainConfig from parsed options: defaults < preset < explicit options."""
    from .config import resolve

    values = {}
    rule_options = {}
    for k, v in vars(args).items():
        if v is None or k in NOT_CONFIG or k == "preset":
            continue
        if k in RULE_OPTION_FLAGS:
            rule_options[k] = v
        else:
            values[k] = v
    if rule_options:
        values["rule_options"] = rule_options
    if getattr(args, "no_early_stop", False):
        values["stop_delta"] = None
    if getattr(args, "nondeterministic", False):
        values["deterministic"] = False
    values.update(fixed)
    for k in ("epochs", "batch_size", "train_subset", "test_subset", "augment_shift", "augment_multiplicity", "seed",
              "threads", "eval_batch_size"):
        if isinstance(values.get(k), str):
            values[k] = _to_number(k, values[k], int)
    for k in ("lr", "momentum", "weight_decay", "inverse_lr", "stop_delta", "validation", "update_noise", "clip_norm",
              "noise_multiplier", "target_epsilon", "delta", "input_epsilon"):
        if isinstance(values.get(k), str):
            values[k] = _to_number(k, values[k], float)
    for k, v in list(rule_options.items()):
        if isinstance(v, str):
            rule_options[k] = _to_number(k, v, float)
    return resolve(preset=args.preset, **values)


def _to_number(name, text, kind):
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"{name}: invalid value {text!r}; expected {kind.__name__}") from None


def cmd_train(args) -> int:
    from .training import train

    cfg = config_from_args(args)
    out = args.out or f"runs/{cfg.dataset}-{cfg.rule}-{cfg.run_hash()[:8]}"
    summary = train(cfg, out=out, resume=args.resume, progress=None if not args.quiet else False)
    summary["out"] = str(out)
    if args.json:
        print(json.dumps(summary, sort_keys=True, default=str))
    else:
        _print_summary(summary)
    return 0


def _print_summary(s: dict) -> None:
    err = s.get("test_error")
    err_txt = "n/a" if err is None else f"{100 * err:.2f}%"
    line = (
        f"{s['rule']} on {s['dataset']}: test error {err_txt} after {s['epochs']} epochs "
        f"({s['status']}: {s['stop_reason']}), {s['seconds']:.1f}s -> {s.get('out', '')}"
    )
    if "epsilon" in s:
        line += f"; epsilon={s['epsilon']}"
    print(line)


def cmd_compare(args) -> int:
    """Train several rules on one dataset and print a Markdown results table."""
    from .network import describe_sizes
    from .rules import RULES
    from .training import train

    rules = args.rules.split(",") if args.rules else list(RULES)
    for r in rules:
        if r not in RULES:
            raise UserError(f"--rules: unknown rule {r!r}; valid rules: {', '.join(RULES)}")
    cfgs = [config_from_args(args, rule=r) for r in rules]  # validate all before training any
    out_root = Path(args.out or "runs/compare")
    rows = []
    for cfg in cfgs:
        s = train(cfg, out=out_root / f"{cfg.dataset}-{cfg.rule}-{cfg.run_hash()[:8]}", resume=True,
                  progress=None if not args.quiet else False)
        rows.append(s)
        if not args.json:
            print(f"  {cfg.rule}: test error {100 * (s['test_error'] or float('nan')):.2f}% "
                  f"({s['epochs']} epochs, {s['seconds']:.1f}s)", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, sort_keys=True, default=str))
        return 0
    print(f"\n| rule | network | test error | train loss | epochs | seconds |")
    print("|---|---|---|---|---|---|")
    for s in rows:
        net = describe_sizes(s["sizes"])
        err = f"{100 * s['test_error']:.2f}%" if s["test_error"] is not None else f"n/a ({s['status']})"
        loss = f"{s['train_loss']:.4f}" if s["train_loss"] is not None else "n/a"
        print(f"| {s['rule']} | {net} | {err} | {loss} | {s['epochs']} | {s['seconds']:.1f} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import DATASET_NAMES

    parser = Parser(
        prog="bioplausible",
        description="Train MLPs with biologically plausible learning rules (BP, FA, DFA, IFA, DTP), "
        "clean or under differential privacy, and compare them.",
    )
    parser.add_argument("--version", action="version", version=f"bioplausible {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train one network with one learning rule")
    p.add_argument("--dataset", choices=DATASET_NAMES, **_none_default(help="default: mnist"))
    from .rules import RULES

    p.add_argument("--rule", choices=list(RULES), **_none_default(help="default: bp"))
    add_train_options(p)
    p.add_argument("--out", help="run directory (default: runs/<dataset>-<rule>-<hash>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train several rules on one dataset and print a results table")
    p.add_argument("--dataset", choices=DATASET_NAMES, **_none_default(help="default: mnist"))
    p.add_argument("--rules", help=f"comma-separated (default: all: {','.join(RULES)})")
    add_train_options(p)
    p.add_argument("--out", help="root folder for the run directories (default: runs/compare)")
    p.add_argument("--json", action="store_true", help="print the summaries as one JSON list")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)

    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def _flagify(message: str) -> str:
    """'batch_size: …' → '--batch-size: …' so messages name the option as typed."""
    from .config import FIELD_NAMES

    head, sep, rest = message.partition(":")
    if sep and (head in FIELD_NAMES or head in RULE_OPTION_FLAGS):
        return f"--{head.replace('_', '-')}:{rest}"
    return message


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"bioplausible: error: {_flagify(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioplausible: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bioplausible runs | head`: the reader left; not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail too
        return 0


if __name__ == "__main__":
    sys.exit(main())
