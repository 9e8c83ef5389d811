"""Property-based tests (hypothesis) of the command line: whatever a user puts in a spec file or on the
``train`` command line, the program either runs or exits with code 2 and one line on stderr, never a
traceback (issue 6, item 2).

* spec files: random TOML documents built from TrainConfig keys, plausible and absurd values (wrong
  types, NaN, ±inf, huge, negative, nested arrays and tables), given to ``bioplausible sweep SPEC
  --dry-run`` (which validates every run of the spec and lists it, training nothing);
* ``train``: random option lists, actually trained (on a small in-memory 10-class problem shaped like
  the dataset, so each example takes milliseconds);
* raw bytes as a spec file.

Any exception other than the CLI's own exit fails the test with hypothesis' shrunk example.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import bioplausible.training as training
from bioplausible.cli import main
from bioplausible.config import (DATASET_NAMES, DEVICES, FIELD_NAMES, NOISE_SITES, OPTIMIZERS, PRESETS, SAMPLINGS,
                                 SCHEDULES)
from bioplausible.data import DATASETS, Dataset
from bioplausible.network import HIDDEN, INITS, LOSSES, OUTPUTS, REDUCTIONS
from bioplausible.rules import RULES

def fuzz(n):
    """Reproducible (derandomized) runs of ``n`` examples with no per-example deadline."""
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def run_cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_runs_or_one_line(code, out, err, argv):
    assert code in (0, 2), (code, argv, err)
    assert "Traceback" not in err, err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith("bioplausible") and "error:" in lines[0], lines[0]


# ------------------------------------------------------------------------------------- TOML writing
def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=True)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_doc(doc: dict) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if k not in ("base", "grid")]
    if "base" in doc:
        lines.append("[base]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc["base"].items()]
    for block in doc.get("grid", []):
        lines.append("[[grid]]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in block.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- strategies
CHOICES = {
    "dataset": DATASET_NAMES, "rule": tuple(RULES), "preset": PRESETS, "hidden": HIDDEN, "output": OUTPUTS,
    "loss": LOSSES, "reduction": REDUCTIONS, "init": INITS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
    "noise_site": NOISE_SITES, "sampling": SAMPLINGS, "device": DEVICES,
}
NUMBERS = st.sampled_from([0, 1, 2, 3, 100, 60000, 60001, -1, 0.0, 0.5, 1e-5, 1e-3, 0.999, 1.0, 2.5, 1e300,
                           float("nan"), float("inf"), float("-inf"), 2**63, -(2**63)])
SCALARS = st.one_of(st.booleans(), NUMBERS, st.integers(-10, 10**7), st.floats(),
                    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6),
                    st.sampled_from([c for cs in CHOICES.values() for c in cs]))
GARBAGE = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.sampled_from(
    ["target_step", "inverse_noise", "feedback_scale", "shared_feedback", "x"]), SCALARS, max_size=2))


def value_for(key):
    if key in CHOICES:
        good = st.sampled_from(CHOICES[key])
    elif key == "hidden_sizes":
        good = st.lists(st.integers(1, 64), min_size=1, max_size=3)
    elif key == "rule_options":
        good = st.dictionaries(st.sampled_from(["target_step", "inverse_noise", "feedback_scale",
                                                "shared_feedback"]), st.one_of(st.booleans(), NUMBERS), max_size=2)
    else:
        good = NUMBERS
    return st.one_of(good, good, GARBAGE)


KEYS = st.sampled_from([*FIELD_NAMES, "bogus_key"])


@st.composite
def spec_docs(draw):
    doc = {}
    if draw(st.booleans()):
        doc["name"] = draw(st.one_of(st.text("abc-_", min_size=1, max_size=5), SCALARS))
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["description", "typo", "seed"]))] = draw(SCALARS)
    base_keys = draw(st.lists(KEYS, max_size=6, unique=True))
    doc["base"] = {k: draw(value_for(k)) for k in base_keys}
    grid = []
    for _ in range(draw(st.integers(0, 2))):
        block = {}
        for k in draw(st.lists(KEYS, max_size=2, unique=True)):
            if draw(st.booleans()):
                block[k] = draw(st.lists(value_for(k), min_size=0, max_size=3))  # an axis
            else:
                block[k] = draw(value_for(k))
        grid.append(block)
    if grid:
        doc["grid"] = grid
    return doc


@fuzz(250)
@given(doc=spec_docs())
def test_fuzzed_spec_files_validate_or_exit_2_with_one_line(doc):
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "fuzz.toml"
        spec.write_text(toml_doc(doc))
        argv = ["sweep", str(spec), "--dry-run", "--store", str(Path(d) / "store")]
        code, out, err = run_cli(argv)
        assert_runs_or_one_line(code, out, err, spec.read_text())
        event(f"exit {code}")
        if code == 0:  # every run of the spec is listed, with its hash and "train"
            lines = out.strip().splitlines()
            assert lines and all(len(line.split()[0]) == 16 and line.split()[1] == "train" for line in lines)
        else:
            assert str(spec) in err or "spec" in err, err


@fuzz(60)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_garbage_spec_bytes_exit_2_with_one_line(data):
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "garbage.toml"
        spec.write_bytes(data)
        code, out, err = run_cli(["sweep", str(spec), "--dry-run", "--store", str(Path(d) / "store")])
        assert_runs_or_one_line(code, out, err, data)


# ------------------------------------------------------------------------------------- train options
def synthetic_for(cfg, **kw) -> Dataset:
    """128 + 32 examples of a learnable 10-class problem with the dataset's input shape."""
    spec = DATASETS[cfg.dataset]
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(spec.n_classes, spec.input_dim, generator=g)
    y = torch.randint(0, spec.n_classes, (160,), generator=g)
    x = (centres[y] + 0.3 * torch.rand(160, spec.input_dim, generator=g)).clamp(0, 1)
    return Dataset(cfg.dataset, x[:128], y[:128], x[128:], y[128:], None, None, spec.n_classes, spec.input_dim,
                   spec.shape)


OPTION_VALUES = {
    "--dataset": ["mnist", "fashion-mnist", "cifar10", "svhn"],
    "--rule": [*RULES, "hebbian"],
    "--preset": ["paper", "tuned", "best"],
    "--hidden-sizes": ["8", "16,8", "4x3", "0", "", "abc", "8x0", "-3"],
    "--hidden": [*HIDDEN, "gelu"],
    "--output": [*OUTPUTS, "tanh"],
    "--loss": [*LOSSES, "hinge"],
    "--reduction": [*REDUCTIONS],
    "--init": [*INITS],
    "--feedback-scale": ["0.5", "0", "-1", "nan", "x"],
    "--target-step": ["0.1", "0", "-0.1", "inf"],
    "--inverse-noise": ["0.1", "-1", "1e400"],
    "--epochs": ["1", "2", "0", "-1", "2.5", "1e12", "x"],
    "--batch-size": ["16", "64", "128", "129", "0", "70000"],
    "--optimizer": [*OPTIMIZERS],
    "--lr": ["0.01", "1e3", "0", "-1", "nan", "inf", "1e-300"],
    "--momentum": ["0.9", "1", "-0.1"],
    "--weight-decay": ["0", "1e-4", "-1", "1e308"],
    "--schedule": [*SCHEDULES],
    "--inverse-lr": ["0.001", "0"],
    "--stop-delta": ["0", "10", "-1"],
    "--validation": ["0", "0.1", "5", "60000", "2.5", "-1", "0.99999999"],
    "--train-subset": ["64", "128", "0", "100000"],
    "--test-subset": ["16", "0"],
    "--augment-shift": ["1", "9", "-1"],
    "--update-noise": ["0.1", "0", "-0.5", "nan"],
    "--noise-site": [*NOISE_SITES],
    "--clip-norm": ["1", "0", "-1"],
    "--noise-multiplier": ["1", "0", "-1"],
    "--target-epsilon": ["3", "0", "-1", "1e-12"],
    "--delta": ["1e-5", "0.5", "1", "0"],
    "--sampling": [*SAMPLINGS],
    "--input-epsilon": ["1", "0", "-2"],
    "--seed": ["0", "7", "-1", "99999999999999999999"],
    "--device": ["cpu", "auto", "cuda", "tpu"],
    "--threads": ["1", "0", "x"],
    "--eval-batch-size": ["7", "0"],
}
FLAGS = ["--shared-feedback", "--standardize", "--augment-flip", "--per-layer-clipping", "--input-noise-fresh",
         "--no-early-stop", "--nondeterministic"]


@st.composite
def train_argvs(draw):
    chosen = draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), max_size=6, unique=True))
    argv = ["train"]
    for opt in chosen:
        argv += [opt, draw(st.sampled_from(OPTION_VALUES[opt]))]
    argv += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    for opt, default in (("--epochs", "1"), ("--hidden-sizes", "8"), ("--batch-size", "32"), ("--threads", "1")):
        if opt not in chosen:
            argv += [opt, default]
    return argv


@fuzz(60)
@given(argv=train_argvs())
def test_fuzzed_train_options_run_or_exit_2_with_one_line(argv):
    orig = training.load_data
    training.load_data = synthetic_for
    try:
        with tempfile.TemporaryDirectory() as d:
            full = [*argv, "--quiet", "--json", "--out", str(Path(d) / "run")]
            code, out, err = run_cli(full)
            assert_runs_or_one_line(code, out, err, full)
            event(f"exit {code}" + (f" {json.loads(out)['status']}" if code == 0 else ""))
            if code == 0:
                s = json.loads(out)
                assert s["status"] in ("completed", "converged", "diverged"), s
                assert (Path(d) / "run" / "summary.json").is_file()
    finally:
        training.load_data = orig
