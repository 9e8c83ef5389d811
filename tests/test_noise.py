"""The Gaussian samplers behind DP-SGD and the update noise (bioplausible.privacy.noise).

The native sampler is checked three ways: its integer stream and seeding equal a NumPy transcription of
xoshiro128++/splitmix64 word for word; its normals equal the float64 Box–Muller of the same bits to
float32 accuracy; and a million draws pass distribution tests (Kolmogorov–Smirnov, moments, tails,
independence across positions, lanes, blocks and the two outputs of one Box–Muller pair).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy import stats

from bioplausible.config import resolve
from bioplausible.errors import UserError
from bioplausible.privacy import noise
from bioplausible.privacy.noise import LANES, NativeNoise, TorchNoise, make_noise

BLOCK = 2 * LANES


@pytest.fixture(scope="module")
def lib():
    try:
        return noise.native_library()
    except noise.NativeUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"the native noise sampler must build in CI (it installs a C compiler): {e}")
        pytest.skip(f"the native noise sampler does not build here: {e}")


@pytest.fixture(scope="module")
def million(lib):
    s = NativeNoise(2024)
    ref_state = noise.reference_seed(2024)
    x = s.like(torch.empty(1_000_000), 1.0).double().numpy()
    return x, noise.reference_normals(ref_state, x.size)


def test_seeding_and_integer_stream_match_the_reference(lib):
    for seed in (0, 1, 2**63 + 5, 123456789):
        state = torch.zeros(4 * LANES, dtype=torch.int32)
        lib.bp_gauss_seed(state.data_ptr(), seed)
        ref = noise.reference_seed(seed)
        assert np.array_equal(state.numpy().view(np.uint32).reshape(4, LANES), ref)
        bits = torch.empty(10 * LANES, dtype=torch.int32)
        lib.bp_gauss_bits(bits.data_ptr(), bits.numel(), state.data_ptr())
        assert np.array_equal(bits.numpy().view(np.uint32), noise.reference_bits(ref, 10))
        assert np.array_equal(state.numpy().view(np.uint32).reshape(4, LANES), ref)  # both advanced alike


def test_normals_equal_float64_box_muller_of_the_same_bits(million):
    x, ref = million
    assert np.abs(x - ref).max() < 2e-6  # float32 rounding of values up to ~5.5
    big = np.abs(ref) > 1e-2
    assert (np.abs(x - ref)[big] / np.abs(ref)[big]).max() < 2e-6


def test_a_million_draws_are_standard_normal(million):
    x, _ = million
    n = x.size
    assert stats.kstest(x, "norm").pvalue > 1e-3  # fixed seed: deterministic, not flaky
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(x)) < 5 * np.sqrt(6 / n) and abs(stats.kurtosis(x)) < 5 * np.sqrt(24 / n)
    for k, p in ((2, stats.norm.sf(2) * 2), (3, stats.norm.sf(3) * 2), (4, stats.norm.sf(4) * 2)):
        frac = (np.abs(x) > k).mean()
        assert abs(frac - p) < 5 * np.sqrt(p / n) + 1e-6, (k, frac, p)
    # independence: neighbours, the same lane one block later, and cos/sin of one pair (z0² vs z1²)
    z = x[: n - n % BLOCK].reshape(-1, 2, LANES)
    tol = 5 / np.sqrt(n / 2)
    for a, b in ((x[:-1], x[1:]), (x[:-BLOCK], x[BLOCK:]), (z[:, 0].ravel(), z[:, 1].ravel()),
                 (z[:, 0].ravel() ** 2, z[:, 1].ravel() ** 2), (z[:, :, :-1].ravel(), z[:, :, 1:].ravel())):
        assert abs(np.corrcoef(a, b)[0, 1]) < tol
    # chi-square of the histogram against the normal cdf (100 equiprobable bins)
    edges = stats.norm.ppf(np.linspace(0, 1, 101)[1:-1])
    counts = np.bincount(np.searchsorted(edges, x), minlength=100)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_the_tail_reaches_past_torchs_cut():
    """Box–Muller's radius uses all 32 bits of a word: the largest draw is sqrt(2·32·ln 2) ≈ 6.66."""
    bits = np.array([0, 1, 2**31, 2**32 - 1], dtype=np.uint32)
    u1 = (bits.astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-32)
    r = np.sqrt(-2 * np.log(u1.astype(np.float64)))
    assert r[0] == pytest.approx(np.sqrt(2 * 33 * np.log(2)), rel=1e-6) and r[-1] >= 0 and np.all(u1 <= 1)


def test_state_after_a_call_depends_only_on_n(lib):
    a, b = NativeNoise(5), NativeNoise(5)
    a.like(torch.empty(200), 1.0)  # two blocks; the last 56 draws are discarded
    nxt = a.like(torch.empty(BLOCK), 1.0)
    assert torch.equal(nxt, b.like(torch.empty(3 * BLOCK), 1.0)[2 * BLOCK:])


def test_state_round_trip_seeds_and_errors(lib):
    a = NativeNoise(11)
    a.like(torch.empty(1000), 1.0)
    saved = a.state()
    first = a.like(torch.empty(777), 1.0)
    b = NativeNoise(999)
    b.load_state(saved)
    assert torch.equal(b.like(torch.empty(777), 1.0), first)
    assert torch.equal(a.clone().like(torch.empty(50), 1.0), a.like(torch.empty(50), 1.0))
    assert not torch.equal(NativeNoise(1).like(torch.empty(64), 1.0), NativeNoise(2).like(torch.empty(64), 1.0))
    with pytest.raises(UserError, match="expected 256 int32"):
        b.load_state(torch.zeros(10, dtype=torch.int32))


def test_scale_dtype_and_layout(lib):
    unit = NativeNoise(3).like(torch.empty(300), 1.0)
    assert torch.allclose(NativeNoise(3).fill_(torch.empty(300), 0.25), 0.25 * unit, rtol=1e-6, atol=0)
    d = NativeNoise(3).like(torch.empty(300, dtype=torch.float64), 0.25)
    assert d.dtype == torch.float64 and torch.equal(d, 0.25 * unit.double())
    t = torch.zeros(20, 15).t()  # not contiguous
    NativeNoise(3).fill_(t, 1.0)
    assert torch.equal(t.reshape(-1), unit[:300].reshape(15, 20).reshape(-1))


def test_make_noise_choices(lib, monkeypatch):
    assert make_noise("auto", 0).kind == "native" and make_noise("torch", 0).kind == "torch"
    assert make_noise("native", 0).kind == "native"
    with pytest.raises(UserError, match="noise_sampler: invalid value 'fast'; accepted: auto, torch, native"):
        make_noise("fast", 0)
    with pytest.raises(UserError, match="'native' draws on the CPU, not on cuda"):
        make_noise("native", 0, device="cuda")
    if torch.cuda.is_available():  # on the GPU, auto means torch's Philox sampler
        assert isinstance(make_noise("auto", 0, device="cuda"), TorchNoise)


def test_unbuildable_native_sampler_falls_back_or_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(noise, "_lib", None)
    monkeypatch.setattr(noise, "_lib_error", None)
    monkeypatch.setenv("BIOPLAUSIBLE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    assert make_noise("auto", 0).kind == "torch"
    with pytest.raises(UserError, match="'native' is not available here .*no C compiler: 'no-such-compiler-xyz'"):
        make_noise("native", 0)
    monkeypatch.setattr(noise, "_lib_error", None)
    monkeypatch.setenv("BIOPLAUSIBLE_NATIVE_NOISE", "0")
    monkeypatch.delenv("CC")
    with pytest.raises(UserError, match="turned off by BIOPLAUSIBLE_NATIVE_NOISE=0"):
        make_noise("native", 0)


def test_build_from_scratch_into_the_cache(lib, monkeypatch, tmp_path):
    monkeypatch.setattr(noise, "_lib", None)
    monkeypatch.setattr(noise, "_lib_error", None)
    monkeypatch.setenv("BIOPLAUSIBLE_CACHE", str(tmp_path))
    noise.native_library()  # compiles, loads, self-tests
    built = list((tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary files left behind


def test_sampler_is_not_part_of_the_run_identity_and_is_reported(lib):
    a = resolve(dataset="mnist", clip_norm=1.0, noise_multiplier=1.0, noise_sampler="torch")
    b = resolve(dataset="mnist", clip_norm=1.0, noise_multiplier=1.0)
    assert a.run_hash() == b.run_hash() and b.noise_sampler == "auto"
    with pytest.raises(UserError, match="noise_sampler: invalid value 'x'"):
        resolve(noise_sampler="x")


def test_torch_sampler_matches_normal_():
    s = TorchNoise(7)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(s.fill_(torch.empty(1000), 0.5), torch.empty(1000).normal_(0, 0.5, generator=g))


def test_privacy_bench_times_both_samplers_side_by_side(lib, capsys):
    from helpers import have_mnist

    from bioplausible.privacy import bench

    if not have_mnist():
        pytest.skip("real MNIST not available (set BIOPLAUSIBLE_DATA)")
    assert bench.main(["--rules", "bp", "--train-subset", "2000", "--repeats", "1", "--samplers", "native,torch"]) == 0
    out = capsys.readouterr().out
    assert "DP-SGD (native sampler)" in out and "DP-SGD (torch sampler)" in out and out.count("ratio") == 2
    with pytest.raises(SystemExit) as exc:
        bench.main(["--samplers", "fast"])
    assert exc.value.code == 2
    assert "--samplers: noise_sampler: invalid value 'fast'; accepted: auto, torch, native" in capsys.readouterr().err
