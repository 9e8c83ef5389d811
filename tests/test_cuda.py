"""The device path: every test runs on CPU and, when CUDA is available, on CUDA too (skipped cleanly
otherwise). On CUDA the rules' teaching signals must equal the CPU's (float64), a training epoch and
a DP-SGD epoch must run entirely on the device, and the benchmark pieces must work there.

Also the CPU fast path of ``tanh`` (NumPy's kernel): within 1 ulp of ``torch.tanh``, and never used
for autograd or device tensors.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bioplausible.config import resolve
from bioplausible.network import MLP, activate
from bioplausible.rules import RULES, make_rule
from bioplausible.training import train

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this environment")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def _synthetic(n=240, d=20, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(k, d, generator=g)
    y = torch.randint(0, k, (n + 80,), generator=g)
    x = (centers[y] + 0.15 * torch.randn(n + 80, d, generator=g)).clamp(0, 1)
    return SimpleNamespace(x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:], x_val=None, y_val=None,
                           n_classes=k, shape=(1, 4, 5))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", list(RULES))
def test_teaching_signals_on_device_equal_cpu(rule, device):
    torch.manual_seed(0)
    sizes = [20, 16, 12, 4]
    x = torch.rand(9, 20, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    ref = make_rule(rule, MLP(sizes, seed=3, dtype=torch.float64), seed=5)
    dev = make_rule(rule, MLP(sizes, seed=3, dtype=torch.float64), seed=5).to(device)
    dev.net.to(device)
    if rule == "dtp":  # same noise draws on both devices: the noise generator is device-specific
        for r in (ref, dev):
            r.opts["inverse_noise"] = 0.0
    g_ref = ref.gradients(x, y)
    g_dev = dev.gradients(x.to(device), y.to(device))
    assert all(g.device.type == device for g in g_dev)
    for a, b in zip(g_ref, g_dev):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_bp_equals_autograd_on_device(device):
    sizes = [20, 16, 4]
    net = MLP(sizes, seed=1, dtype=torch.float64).to(device)
    x = torch.rand(7, 20, dtype=torch.float64, device=device)
    y = torch.randint(0, 4, (7,), device=device)
    ours = make_rule("bp", net).gradients(x, y)
    rec_loss = net.batch_loss(net.record(x), net.targets(y))
    auto = torch.autograd.grad(rec_loss, list(net.parameters()))
    for a, b in zip(auto, ours):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("private", [False, True], ids=["clean", "dp"])
@pytest.mark.parametrize("device", DEVICES)
def test_training_epoch_on_device(device, private):
    ds = _synthetic()
    extra = {"clip_norm": 1.0, "noise_multiplier": 0.5} if private else {}
    epochs = 1 if private else 3  # the privacy accounting after each epoch dominates a tiny run
    cfg = resolve(dataset="mnist", rule="dfa", epochs=epochs, batch_size=40, hidden_sizes=[32], lr=0.05,
                  stop_delta=None, device=device, **extra)
    s = train(cfg, data=ds, progress=False)
    assert s["status"] == "completed" and s["epochs"] == epochs
    assert math.isfinite(s["train_loss"]) and s["train_seconds"] > 0
    if not private:
        assert s["test_error"] < 0.5  # 4 separable clusters: it learns on every device
        if device == "cuda":  # same run on CPU: the same numbers up to float32 rounding
            c = train(resolve(**{**cfg.to_dict(), "device": "cpu"}), data=ds, progress=False)
            assert abs(c["train_loss"] - s["train_loss"]) <= 1e-3 * max(1.0, abs(c["train_loss"]))
    else:
        assert s.get("private") is True


@pytest.mark.parametrize("device", DEVICES)
def test_benchmark_pieces_on_device(device):
    from benchmarks import flops
    from benchmarks.peers import make_peer

    assert flops.matmul_rate(64, 48, 32, device=device, min_seconds=0.002, samples=1) > 0
    x = torch.rand(80, 20, device=device)
    t = torch.zeros(80, 4, device=device)
    t[:, 1] = 1
    seconds, batches = make_peer("autograd", [20, 16, 4], x, t, 40, device=device).run()
    assert batches == 2 and seconds > 0


def test_tanh_fast_path_within_one_ulp():
    for dtype, itype in ((torch.float32, torch.int32), (torch.float64, torch.int64)):
        a = torch.cat([torch.linspace(-12, 12, 40001, dtype=dtype), torch.randn(20000, dtype=dtype) * 1e-4,
                       torch.tensor([0.0, -0.0, float("inf"), -float("inf")], dtype=dtype)])
        ours, ref = activate("tanh", a), torch.tanh(a)
        assert ours.dtype == dtype and ours.shape == a.shape
        ulps = (ours.view(itype).long() - ref.view(itype).long()).abs()
        assert int(ulps.max()) <= 1
        np.testing.assert_array_equal(ours.numpy(), np.tanh(a.numpy()))  # it is NumPy's kernel


def test_tanh_keeps_autograd_and_views():
    a = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    out = activate("tanh", a)
    out.sum().backward()  # differentiable: torch.tanh is used under autograd
    torch.testing.assert_close(a.grad, 1 - torch.tanh(a.detach()) ** 2)
    v = torch.randn(5, 6).t()  # non-contiguous view
    torch.testing.assert_close(activate("tanh", v), torch.tanh(v), rtol=0, atol=0)


@CUDA
def test_tanh_on_cuda_is_torch():
    a = torch.randn(100, 10, device="cuda")
    assert torch.equal(activate("tanh", a), torch.tanh(a))
