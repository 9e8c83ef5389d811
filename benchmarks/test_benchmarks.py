"""Tests of the benchmark harness: FLOP formulas against PyTorch's own FLOP counter, the floor
arithmetic, that every peer trains the same objective as our rules, and the command-line contract.

Run: ``python -m pytest benchmarks/test_benchmarks.py`` (a few seconds on one core).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import flops, run
from benchmarks.peers import PEER_CLASSES, HalfSquaredError, Unavailable, make_peer
from bioplausible.network import MLP
from bioplausible.rules import make_rule

ROOT = Path(__file__).resolve().parent.parent
NETS = [[12, 7, 3], [12, 9, 8, 3], [10, 6, 6, 5, 4]]


@pytest.mark.parametrize("sizes", NETS)
@pytest.mark.parametrize("rule", flops.RULES)
def test_flop_formula_matches_pytorch_counter(rule, sizes):
    """What the rule really multiplies (counted by torch's FlopCounterMode) is what the floor counts."""
    torch.manual_seed(0)
    net = MLP(sizes, seed=1)
    r = make_rule(rule, net, seed=2)
    x = torch.rand(5, sizes[0])
    t = net.targets(torch.randint(0, sizes[-1], (5,)))
    with FlopCounterMode(display=False) as counter:
        r.write_grads(r.teach(x, t))
    assert counter.get_total_flops() == flops.flops(flops.matmul_shapes(rule, sizes, 5))


def test_epoch_shapes_and_floor_arithmetic():
    assert flops.epoch_batches(1000, 300) == [300, 300, 300, 100]
    counts = flops.epoch_shapes("bp", [784, 800, 10], 60000, 200)
    assert sum(counts.values()) == 300 * 5  # 2 forward, 2 weight gradients, 1 signal per batch
    assert flops.epoch_flops("bp", [784, 800, 10], 60000, 200) == 300 * 2 * 200 * (2 * 784 * 800 + 3 * 800 * 10)
    rates = {s: 1e11 for s in counts}
    assert flops.floor_seconds(counts, rates) == pytest.approx(flops.epoch_flops("bp", [784, 800, 10], 60000, 200) / 1e11)
    # DTP on one hidden layer has no inverses: the same products as BP; deeper it pays for them
    assert flops.epoch_shapes("dtp", [784, 800, 10], 600, 200) == flops.epoch_shapes("bp", [784, 800, 10], 600, 200)
    extra = flops.flops(flops.matmul_shapes("dtp", [8, 6, 5, 3], 4)) - flops.flops(flops.matmul_shapes("bp", [8, 6, 5, 3], 4))
    assert extra == 2 * 4 * 6 * 5 * 5 - 2 * 4 * 5 * 6 + 0  # 5 inverse products, BP's lower signal not needed


def test_matmul_rate_is_a_rate():
    r = flops.matmul_rate(64, 32, 16, min_seconds=0.002, samples=1)
    assert 1e6 < r < 1e14


def test_normal_rate_is_a_rate():
    r = flops.normal_rate(10_000, min_seconds=0.002, samples=1)
    assert 1e5 < r < 1e13


def _data(n=40, d=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    t = torch.zeros(n, k)
    t[torch.arange(n), torch.randint(0, k, (n,), generator=g)] = 1.0
    return x, t


def _our_bp_grads(model_linears, x, t):
    net = MLP([model_linears[0].in_features] + [m.out_features for m in model_linears], seed=0)
    with torch.no_grad():
        for ours, theirs in zip(net.layers, model_linears):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
    return make_rule("bp", net).gradients(x, t.argmax(1))


def test_autograd_peer_trains_our_objective():
    """One SGD step of the plain autograd loop moves the weights by lr × our BP gradient."""
    x, t = _data()
    peer = make_peer("autograd", [12, 7, 3], x, t, 40, lr=0.1)
    lin = [m for m in peer.model if isinstance(m, torch.nn.Linear)]
    before = [p.detach().clone() for m in lin for p in (m.weight, m.bias)]
    grads = _our_bp_grads(lin, x, t)
    peer.run(1)
    after = [p.detach() for m in lin for p in (m.weight, m.bias)]
    for b, a, g in zip(before, after, grads):
        torch.testing.assert_close(b - a, 0.1 * g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["opacus", "opacus-ghost"])
def test_opacus_peers_clip_to_our_objective(name):
    """With no noise and a bound above every per-example norm, Opacus' step is the plain BP step."""
    x, t = _data()
    try:
        peer = make_peer(name, [12, 7, 3], x, t, 40, lr=0.1, clip_norm=1e6, noise_multiplier=0.0)
    except Unavailable as exc:
        pytest.skip(str(exc))
    mods = peer.model._module if hasattr(peer.model, "_module") else peer.model
    lin = [m for m in mods if isinstance(m, torch.nn.Linear)]
    before = [p.detach().clone() for m in lin for p in (m.weight, m.bias)]
    grads = _our_bp_grads(lin, x, t)
    peer.run(1)
    for b, m, g in zip(before, [p for m in lin for p in (m.weight, m.bias)], grads):
        torch.testing.assert_close(b - m.detach(), 0.1 * g, rtol=1e-4, atol=1e-6)


def test_biotorch_peer_is_dfa():
    """biotorch's first-layer update is (e B)ᵀ-driven, not BP's: it differs from the autograd step."""
    x, t = _data()
    try:
        peer = make_peer("biotorch-dfa", [12, 7, 3], x, t, 40, lr=0.1)
    except Unavailable as exc:
        pytest.skip(str(exc))
    lin = [m for m in peer.model.modules() if isinstance(m, torch.nn.Linear)]
    w0 = lin[0].weight.detach().clone()
    bp = _our_bp_grads(lin, x, t)[0]
    peer.run(1)
    step = (w0 - lin[0].weight.detach()) / 0.1
    assert step.abs().sum() > 0
    assert not torch.allclose(step, bp, rtol=1e-3, atol=1e-6)


def test_half_squared_error_per_example():
    o, t = torch.rand(4, 3), torch.rand(4, 3)
    per = HalfSquaredError("none")(o, t)
    torch.testing.assert_close(per, 0.5 * ((o - t) ** 2).sum(1))
    torch.testing.assert_close(HalfSquaredError("sum")(o, t), per.sum())


def test_checks_read_the_targets():
    rows = {name: {"seconds": {"median": s}, "pct_of_floor": p, "floor_seconds": f}
            for name, s, p, f in [("bp", 1.0, 90, 0.9), ("autograd", 1.2, 75, 0.9), ("bp+dp", 1.3, 69, 0.9),
                                  ("opacus-ghost", 2.0, 45, 0.9), ("opacus", 100.0, 1, 0.9)]}
    res = {"datasets": {"mnist": {"threads": {"1": {"rows": rows}}}}}
    got = {c["check"]: c["pass"] for c in run.checks(res)}
    assert got["bp % of floor"] is True
    assert got["bp speed-up vs autograd"] is True  # 1.2
    assert got["bp+dp / bp time"] is False  # 1.3 > 1.25
    assert got["bp+dp speed-up vs opacus ghost"] is False  # 1.54 < 2
    assert got["bp+dp speed-up vs opacus per-sample"] is True  # 77 >= 40
    rows["bp+dp"]["noise_draw_seconds"] = 0.2
    info = [c for c in run.checks(res) if c["target"] == "info"]
    assert len(info) == 1 and info[0]["pass"] is None and info[0]["value"] == round(1.3 / 1.2, 3)
    assert "[INFO]" in run.table({"datasets": {}, "skipped": {}, "checks": run.checks(res)})


@pytest.mark.parametrize("argv, flag", [
    (["--threads", "0"], "--threads"), (["--datasets", "imagenet"], "--datasets"),
    (["--rules", "bp,xx"], "--rules"), (["--repeats", "two"], "--repeats"), (["--peers", "torchvision"], "--peers"),
])
def test_cli_errors_are_one_line(argv, flag, capsys):
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


def test_cli_device_cuda_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the CUDA suite is exercised in tests/test_cuda.py")
    assert run.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device" in err and "cuda" in err and len(err.strip().splitlines()) == 1


def test_suite_end_to_end_small(tmp_path):
    """One real (tiny) run of the suite in a subprocess on real MNIST: JSON and table contract."""
    from bioplausible.data import locate  # noqa: F401

    try:
        from bioplausible.training import load_data
        from bioplausible.config import resolve

        load_data(resolve(dataset="mnist"))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"MNIST not available: {exc}")
    out = tmp_path / "s.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--datasets", "mnist", "--threads", "1", "--repeats", "1",
         "--rules", "bp,dfa", "--peers", "autograd", "--no-private", "--train-subset", "400", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["datasets"]["mnist"]["threads"]["1"]["rows"]
    assert set(rows) == {"bp", "dfa", "autograd"}
    for r in rows.values():
        assert r["seconds"]["median"] > 0 and 0 < r["pct_of_floor"] < 150
    assert "| bp |" in proc.stdout and res["machine"]["cpu"]


def test_cpu_epoch_clock_patches_only_inside():
    import time as _time

    from benchmarks import common
    from bioplausible import training

    with common.epoch_clock("cpu"):
        assert training.time.sleep is _time.sleep  # everything else is the real module
        t0 = training.time.perf_counter()
        _time.sleep(0.05)  # sleeping costs no CPU time
        assert training.time.perf_counter() - t0 < 0.04
    assert training.time is _time
    assert run.main(["--clock", "sundial"]) == 2
