"""Specs: TOML parsing, grid expansion, validation errors, and the shipped grids (paper, extended, ...)."""

import itertools
import math

import pytest

from bioplausible.config import resolve
from bioplausible.errors import UserError
from bioplausible.experiments import find_spec, load_spec, parse_spec, shipped_specs


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_specs_are_found_by_name_and_by_path():
    names = set(shipped_specs())
    assert {"paper", "extended", "privacy", "quick"} <= names
    p = find_spec("paper")
    assert p.name == "paper.toml" and p.is_file()
    assert find_spec(str(p)) == p
    assert find_spec("paper.toml") == p
    with pytest.raises(UserError, match=r"neither a file nor a shipped spec; shipped: .*paper"):
        find_spec("no-such-spec")


def test_paper_spec_is_exactly_the_papers_tables_1_and_2():
    spec = load_spec("paper")
    got = sorted((r.config.dataset, r.config.rule, r.config.update_noise) for r in spec.runs)
    table1 = [(d, r, 0.0) for d in ("mnist", "fashion-mnist", "cifar10", "cifar100") for r in ("bp", "dfa")]
    table2 = [(d, r, s) for d in ("mnist", "cifar10") for r in ("bp", "dfa") for s in (0.1, 0.4)]
    assert got == sorted(table1 + table2)
    for r in spec.runs:  # the paper's setup (section 5)
        c = r.config
        assert (c.preset, c.hidden_sizes, c.hidden, c.output, c.loss, c.optimizer) == (
            "paper", [800], "tanh", "sigmoid", "mse", "sgd")
        assert (c.lr, c.batch_size, c.epochs, c.stop_delta) == (5e-4, 200, 100, 1e-4)
        assert c.noise_site == "gradient" and not c.is_private
    assert len({r.hash for r in spec.runs}) == 16


def test_paper_error_site_spec_is_table_2_with_noise_on_the_output_error():
    spec = load_spec("paper-error-site")
    got = sorted((r.config.dataset, r.config.rule, r.config.update_noise) for r in spec.runs)
    assert got == sorted((d, r, s) for d in ("mnist", "cifar10") for r in ("bp", "dfa") for s in (0.1, 0.4))
    assert all(r.config.noise_site == "error" and r.config.preset == "paper" for r in spec.runs)


def test_importing_the_library_does_not_load_dp_accounting():
    """dp-accounting pulls in SciPy (~1 s): every sweep worker and CLI call would pay it; it loads on
    first use (a private run) instead."""
    import subprocess
    import sys

    code = ("import sys, bioplausible.training, bioplausible.experiments.runner, bioplausible.cli; "
            "print('dp_accounting' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_noise_site_does_not_split_clean_runs():
    from bioplausible.config import resolve

    assert resolve(noise_site="error").run_hash() == resolve().run_hash()  # σ = 0: the site is moot
    assert resolve(noise_site="error", update_noise=0.1).run_hash() != resolve(update_noise=0.1).run_hash()


def test_extended_and_privacy_grids_have_the_promised_axes():
    ext = load_spec("extended")
    axes = {k: sorted({getattr(r.config, k) for r in ext.runs}) for k in ("rule", "preset", "update_noise", "seed")}
    assert axes == {"rule": ["bp", "dfa", "dtp", "fa", "ifa"], "preset": ["paper", "tuned"],
                    "update_noise": [0.0, 0.1, 0.2, 0.4, 1.0], "seed": [0, 1, 2]}
    assert len(ext.runs) == 4 * 5 * 2 * 5 * 3 == len({r.hash for r in ext.runs})
    priv = load_spec("privacy")
    eps = sorted({r.config.target_epsilon for r in priv.runs}, key=lambda e: math.inf if e is None else e)
    assert eps == [0.5, 1.0, 2.0, 3.0, 8.0, None]  # None: ε = ∞, the non-private baseline
    assert {r.config.dataset for r in priv.runs} == {"mnist", "fashion-mnist", "cifar10"}
    assert len(priv.runs) == 3 * 5 * 6
    quick = load_spec("quick")
    assert all(r.config.train_subset and r.config.epochs <= 5 for r in quick.runs)


def test_grid_expansion_is_the_union_of_products_with_independent_hashes(tmp_path):
    p = write(tmp_path, """
name = "t"
[base]
epochs = 2
lr = 0.01
[[grid]]
dataset = ["mnist", "fashion-mnist"]
rule = ["bp", "dfa", "fa"]
seed = [0, 1]
[[grid]]
dataset = "mnist"
rule = ["bp"]
seed = [1, 2]          # (mnist, bp, 1) repeats the first block: counted once
hidden_sizes = [[800], [64, 64]]
""")
    spec = load_spec(p)
    expected = []
    for d, r, s in itertools.product(["mnist", "fashion-mnist"], ["bp", "dfa", "fa"], [0, 1]):
        expected.append(resolve(preset=None, dataset=d, rule=r, seed=s, epochs=2, lr=0.01))
    for s, h in itertools.product([1, 2], [[800], [64, 64]]):
        expected.append(resolve(dataset="mnist", rule="bp", seed=s, hidden_sizes=h, epochs=2, lr=0.01))
    want = []
    for c in expected:
        if c.run_hash() not in want:
            want.append(c.run_hash())
    assert [r.hash for r in spec.runs] == want
    assert len(spec.runs) == 12 + 4 - 1
    assert spec.name == "t"


def test_infinite_epsilon_means_no_dp_and_hash_ignores_where_data_lives(tmp_path):
    spec = parse_spec({"grid": {"target_epsilon": [1.0, math.inf], "clip_norm": 1.0}}, "x.toml")
    assert [r.config.target_epsilon for r in spec.runs] == [1.0, None]
    a = parse_spec({"base": {"data_dir": "/a"}}, "a.toml").runs[0]
    b = parse_spec({"base": {"data_dir": "/b", "threads": 3}}, "b.toml").runs[0]
    assert a.hash == b.hash


@pytest.mark.parametrize("text, pattern", [
    ("nme = 'x'", r"key 'nme': unknown key; accepted at the top level: name, description, base, grid"),
    ("[base]\nlearning_rate = 0.1", r"key 'learning_rate': unknown key; accepted: TrainConfig fields"),
    ("[[grid]]\nrulez = ['bp']", r"key 'grid.rulez': unknown key"),
    ("[base]\nlr = -1.0", r"key 'lr': invalid value -1.0; accepted: float in \(0, 3.4e\+38\]"),
    ("[[grid]]\nrule = ['bp', 'xfa']", r"key 'rule': unknown rule 'xfa'.* \(in the run rule='xfa'\)"),
    ("[[grid]]\ndataset = ['mnist', 'imagenet']", r"key 'dataset': invalid value 'imagenet'; accepted: mnist"),
    ("[[grid]]\nseed = []", r"key 'grid.seed': an axis needs at least one value"),
    ("[base]\nepochs = 'ten'", r"key 'epochs': invalid value 'ten'; expected int"),
    ("[base]\nrule = 'bp'\nrule_options = {target_step = 0.1}", r"key 'rule_options': rule option 'target_step'"),
    ("grid = 3", r"key 'grid': must be a table or an array of tables"),
    ("[base\nlr = 1", r"not valid TOML"),
])
def test_bad_specs_are_rejected_up_front_naming_file_key_and_reason(tmp_path, text, pattern):
    p = write(tmp_path, text, "bad.toml")
    with pytest.raises(UserError) as info:
        load_spec(p)
    msg = str(info.value)
    assert msg.startswith(str(p) + ": ")
    assert "\n" not in msg
    import re

    assert re.search(pattern, msg), msg


def test_schedule_groups_datasets_and_puts_the_costliest_runs_first(tmp_path):
    """Runs go to workers grouped by dataset (one load per worker and dataset), the group holding the
    costliest run first, costliest first within a group (longest-processing-time order: the sweep ends
    on short runs): here CIFAR-10 (3072 inputs) before MNIST, DTP and noisy runs before plain ones."""
    from bioplausible.experiments.runner import _cost, _schedule

    p = tmp_path / "s.toml"
    p.write_text('name = "s"\n[base]\nepochs = 2\nhidden_sizes = [16]\n[[grid]]\n'
                 'dataset = ["mnist", "cifar10"]\nrule = ["bp", "dtp"]\nupdate_noise = [0.0, 0.1]\n')
    runs = load_spec(p).runs
    order = _schedule(runs)
    assert sorted(r.hash for r in order) == sorted(r.hash for r in runs)
    datasets = [r.config.dataset for r in order]
    assert datasets == ["cifar10"] * 4 + ["mnist"] * 4
    for group in (order[:4], order[4:]):
        costs = [_cost(r) for r in group]
        assert costs == sorted(costs, reverse=True)
        assert (group[0].config.rule, group[0].config.update_noise) == ("dtp", 0.1)
        assert (group[-1].config.rule, group[-1].config.update_noise) == ("bp", 0.0)
