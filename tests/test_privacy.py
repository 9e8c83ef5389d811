"""Privacy: closed-form clipping vs materialised per-example gradients (torch.func, Opacus),
the DP-SGD and update-noise mechanisms, accounting against reference values, Laplace inputs, API."""

import math
import os

import numpy as np
import pytest
import torch
from scipy import stats

from bioplausible.errors import UserError
from bioplausible.network import MLP
from bioplausible.privacy import accounting, build, make_private
from bioplausible.privacy.clipping import clipped_factors, per_example_norms
from bioplausible.privacy.mechanisms import perturb_inputs
from bioplausible.privacy.noise import native_available
from bioplausible.privacy.pipeline import poisson_batches, trained_layers
from bioplausible.rules import make_rule

torch.set_num_threads(1)
RULES = ["bp", "fa", "dfa", "ifa", "dtp"]


def _setup(rule_name, output="sigmoid", loss="mse", reduction="sum", sizes=(12, 9, 7, 5), seed=0, **opts):
    torch.manual_seed(seed)
    net = MLP(list(sizes), "tanh", output, loss, reduction, seed=seed, dtype=torch.float64)
    rule = make_rule(rule_name, net, seed=seed + 1, **opts).to(torch.float64)
    x = torch.randn(16, sizes[0], dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (16,))
    return net, rule, x, net.targets(y), y


def _flat_grads(rule):
    return torch.cat([torch.cat([l.weight.grad.reshape(-1), l.bias.grad]) for l in trained_layers(rule)])


@pytest.mark.parametrize("rule_name", RULES)
def test_closed_form_norms_equal_materialised_per_example_gradients(rule_name):
    opts = {"inverse_noise": 0.0} if rule_name == "dtp" else {}
    net, rule, x, t, _ = _setup(rule_name, **opts)
    teaching = rule.teach(x, t)
    closed = per_example_norms(teaching.terms)
    # Materialise: run the rule on each example alone and read the full written gradient.
    mat = []
    for i in range(len(x)):
        rule.write_grads(rule.teach(x[i : i + 1], t[i : i + 1]))
        mat.append(_flat_grads(rule).norm())
    mat = torch.stack(mat)
    assert len(teaching.terms) == (net.depth + (net.depth - 2 if rule_name == "dtp" else 0))
    assert torch.allclose(closed, mat, rtol=1e-6, atol=0)
    assert ((closed - mat).abs() / mat).max() < 1e-6


def test_closed_form_norms_equal_torch_func_per_sample_gradients_for_bp():
    net, rule, x, t, y = _setup("bp", output="softmax", loss="ce")
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss_one(p, xi, ti):
        rec = torch.func.functional_call(net, p, (xi[None],), kwargs=None, strict=False) if False else None
        h = xi[None]
        for i in range(net.depth):
            a = h @ p[f"layers.{i}.weight"].t() + p[f"layers.{i}.bias"]
            h = torch.tanh(a) if i < net.depth - 1 else a
        return -(ti[None] * torch.log_softmax(h, 1)).sum()

    g = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(params, x, t)
    mat = torch.cat([v.reshape(len(x), -1) for v in g.values()], 1).norm(dim=1)
    closed = per_example_norms(rule.teach(x, t).terms)
    assert ((closed - mat).abs() / mat).max() < 1e-6
    # and per layer: the rank-one identity layer by layer
    per_layer = per_example_norms(rule.teach(x, t).terms, per_layer=True)
    for l in range(net.depth):
        m = torch.cat([g[f"layers.{l}.weight"].reshape(len(x), -1), g[f"layers.{l}.bias"]], 1).norm(dim=1)
        assert ((per_layer[l] - m).abs() / m).max() < 1e-6


def test_dtp_inverse_terms_with_noise_are_clipped_and_exact():
    net, rule, x, t, _ = _setup("dtp", inverse_noise=0.3)
    teaching = rule.teach(x, t)
    assert len(teaching.terms) == net.depth + net.depth - 2  # inverses are part of the clipped gradient
    explicit = torch.stack(
        [torch.cat([torch.einsum("bo,bi->boi", tm.delta, tm.inp).reshape(len(x), -1), tm.delta], 1).square().sum(1)
         for tm in teaching.terms]
    ).sum(0).sqrt()
    assert ((per_example_norms(teaching.terms) - explicit).abs() / explicit).max() < 1e-6


@pytest.mark.parametrize("rule_name", RULES)
@pytest.mark.parametrize("per_layer", [False, True])
def test_every_clipped_contribution_has_norm_at_most_c(rule_name, per_layer):
    net, rule, x, t, _ = _setup(rule_name)
    teaching = rule.teach(x * 5, t)
    C = 0.05
    factors = clipped_factors(teaching.terms, C, per_layer)
    per_term = []
    for tm, c in zip(teaching.terms, factors):
        w = torch.einsum("bo,bi->boi", tm.delta * c[:, None], tm.inp).reshape(len(x), -1)
        per_term.append(torch.cat([w, tm.delta * c[:, None]], 1).square().sum(1))
    per_term = torch.stack(per_term)
    assert (per_term.sum(0).sqrt() <= C * (1 + 1e-9)).all()
    assert per_term.sum(0).sqrt().max() > 0.5 * C  # clipping was active, not vacuous
    if per_layer:
        assert (per_term.sqrt() <= C / math.sqrt(len(teaching.terms)) * (1 + 1e-9)).all()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_clipped_sum_matches_opacus_for_bp(reduction):
    opacus = pytest.importorskip("opacus")
    from opacus.optimizers import DPOptimizer

    net, rule, x, t, y = _setup("bp", output="softmax", loss="ce", reduction=reduction, sizes=(10, 8, 4))
    model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double()
    with torch.no_grad():
        model[0].weight.copy_(net.layers[0].weight); model[0].bias.copy_(net.layers[0].bias)
        model[2].weight.copy_(net.layers[1].weight); model[2].bias.copy_(net.layers[1].bias)
    gsm = opacus.GradSampleModule(model)
    C, B = 0.3, len(x)
    opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=0.1), noise_multiplier=0.0, max_grad_norm=C,
                      expected_batch_size=B, loss_reduction=reduction)
    crit = torch.nn.CrossEntropyLoss(reduction=reduction)
    crit(gsm(x), y).backward()
    opt.pre_step()
    ref = [p.grad.clone() for p in gsm.parameters()]

    pipe = build(n=100, batch_size=B, epochs=1, clip_norm=C, noise_multiplier=0.0, sampling="shuffle")
    pipe.apply(rule.teach(x, t), rule, B)
    ours = [p.grad for p in net.parameters()]
    for a, b in zip(ours, ref):
        # Opacus divides by (norm + 1e-6); ours by the norm: relative difference ~1e-6/norm
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dpsgd_gradient_is_clipped_sum_plus_calibrated_gaussian(reduction):
    net, rule, x, t, _ = _setup("dfa", reduction=reduction, sizes=(30, 40, 20))
    B, C, sigma = len(x), 0.1, 2.0
    pipe = build(n=400, batch_size=B, epochs=1, clip_norm=C, noise_multiplier=sigma)
    assert pipe.sampling == "poisson" and pipe.private
    teaching = rule.teach(x, t)
    factors = clipped_factors(teaching.terms, C)
    scale = 1.0 if reduction == "sum" else 1.0 / B
    resid = []
    for _ in range(3):
        pipe.apply(teaching, rule, B)
        for tm, c in zip(teaching.terms, factors):
            expect = (tm.delta * c[:, None]).t() @ tm.inp * scale
            resid.append((tm.layer.weight.grad - expect).reshape(-1))
    resid = torch.cat(resid)
    std = float(resid.std())
    assert abs(std / (sigma * C * scale) - 1) < 0.03
    assert abs(float(resid.mean())) < 0.05 * sigma * C * scale
    # and it is Gaussian: Kolmogorov–Smirnov against N(0, (σCs)²) (n = 3·(40·30 + 20·40) draws)
    assert stats.kstest(resid.double().numpy() / (sigma * C * scale), "norm").pvalue > 1e-3
    # an empty Poisson batch still writes pure noise into every trained parameter
    pipe.apply(None, rule, B)
    g = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert abs(float(g.std()) / (sigma * C * scale) - 1) < 0.05


def test_noise_generator_state_roundtrip_gives_identical_noise():
    net, rule, x, t, _ = _setup("bp")
    pipe = build(n=400, batch_size=16, epochs=1, clip_norm=1.0, noise_multiplier=1.0, seed=3)
    state = {k: v.clone() for k, v in pipe.state().items()}
    pipe.apply(None, rule, 16)
    first = net.layers[0].weight.grad.clone()
    pipe.load_state(state)
    pipe.apply(None, rule, 16)
    assert torch.equal(first, net.layers[0].weight.grad) and pipe.steps == 1


def test_poisson_sampling_rate_and_step_count():
    gen = torch.Generator().manual_seed(0)
    batches = poisson_batches(2000, 0.05, 400, gen)
    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float64)
    assert len(batches) == 400
    assert abs(float(sizes.mean()) - 100) < 2.5  # E = qn = 100, sd of the mean = 0.49
    counts = torch.bincount(torch.cat(batches), minlength=2000).double()
    assert abs(float(counts.mean()) / 400 - 0.05) < 1e-3
    # variance of a Binomial(n, q) batch size: nq(1-q) = 95
    assert 71 < float(sizes.var()) < 119  # ± 3.5 sd of a sample variance of 400 draws
    # every index in [0, n), sorted and unique within a batch
    assert all(b.dtype == torch.int64 and bool((b[1:] > b[:-1]).all()) for b in batches)
    assert int(torch.cat(batches).min()) >= 0 and int(torch.cat(batches).max()) < 2000


def test_poisson_sampling_includes_each_example_independently_with_rate_q():
    """Gap sampling must match independent Bernoulli(q) draws: the first and last examples included
    at rate q, pairs at rate q² (independence), including a rate high enough to need several draws."""
    for n, q in ((5, 0.3), (40, 0.9)):
        gen = torch.Generator().manual_seed(7)
        steps = 20000
        member = torch.zeros(steps, n)
        for i, b in enumerate(poisson_batches(n, q, steps, gen)):
            member[i, b] = 1.0
        freq = member.mean(0)
        sd = math.sqrt(q * (1 - q) / steps)
        assert float((freq - q).abs().max()) < 4.5 * sd
        pair = float((member[:, 0] * member[:, n - 1]).mean())
        assert abs(pair - q * q) < 4.5 * math.sqrt(q * q * (1 - q * q) / steps)
        sizes = member.sum(1)
        assert abs(float(sizes.var()) / (n * q * (1 - q)) - 1) < 0.1
    assert [len(b) for b in poisson_batches(7, 1.0, 3, torch.Generator())] == [7, 7, 7]


# -- accounting --------------------------------------------------------------------------------------
def test_tf_privacy_tutorial_reference():
    """n=60000, batch 256, σ=1.1, 60 epochs, δ=1e-5: classic RDP conversion gives ε ≈ 3.0 (TF Privacy)."""
    steps = 60 * round(60000 / 256)
    ev = accounting.dpsgd_event(1.1, 256 / 60000, steps)
    classic = accounting.classic_rdp_epsilon(ev, 1e-5)
    rdp = accounting.epsilon(ev, 1e-5, "rdp")
    pld = accounting.epsilon(ev, 1e-5, "pld")
    assert 2.95 < classic < 3.06
    assert pld < rdp < classic
    assert pld > 2.0


def _gaussian_delta(eps, sigma):
    """Exact δ(ε) of the Gaussian mechanism with sensitivity 1 (Balle & Wang 2018)."""
    return stats.norm.cdf(-eps * sigma + 1 / (2 * sigma)) - math.exp(eps) * stats.norm.cdf(-eps * sigma - 1 / (2 * sigma))


def test_pld_matches_analytic_gaussian_and_shuffle_accounting_uses_sensitivity_2c():
    sigma, delta = 2.0, 1e-5
    eps = accounting.epsilon(accounting.dpsgd_event(sigma, 0.1, 10, "shuffle", steps_per_epoch=10), delta, "pld")
    # one epoch of shuffled batches = one Gaussian mechanism of noise multiplier σ/2
    assert _gaussian_delta(eps, sigma / 2) <= delta * 1.01
    assert _gaussian_delta(eps * 0.98, sigma / 2) > delta
    eps2 = accounting.epsilon(accounting.dpsgd_event(sigma, 0.1, 20, "shuffle", steps_per_epoch=10), delta, "pld")
    assert eps2 > eps


def test_laplace_accounting_once_and_fresh():
    assert accounting.epsilon(accounting.laplace_event(0.7, 1), 1e-6, "pld") == pytest.approx(0.7, abs=2e-3)
    many = accounting.epsilon(accounting.laplace_event(0.7, 10), 1e-6, "pld")
    assert 0.7 < many <= 7.0 + 1e-3


def test_calibration_hits_target_and_refuses_bad_input():
    mk = lambda s: accounting.dpsgd_event(s, 0.01, 500)
    sigma = accounting.calibrate_noise(2.0, 1e-5, mk, "rdp")
    eps = accounting.epsilon(mk(sigma), 1e-5, "rdp")
    assert 1.97 < eps <= 2.0
    assert accounting.epsilon(mk(sigma - 0.01), 1e-5, "rdp") > 2.0
    with pytest.raises(UserError, match="target_epsilon"):
        accounting.calibrate_noise(1e-6, 1e-9, lambda s: accounting.dpsgd_event(s, 1.0, 10**6), "rdp")
    with pytest.raises(UserError, match="delta.*1/n"):
        build(n=1000, batch_size=10, epochs=1, clip_norm=1.0, noise_multiplier=1.0, delta=1e-3)
    assert accounting.default_delta(60000) == 1e-5 and accounting.default_delta(100000) == 1e-6
    with pytest.raises(UserError, match="update_noise"):
        build(n=1000, batch_size=10, epochs=1, clip_norm=1.0, noise_multiplier=1.0, update_noise=0.1)


def test_partial_mechanisms_are_labelled_non_private():
    for kw in ({"clip_norm": 1.0}, {"noise_multiplier": 1.0}, {"update_noise": 0.1}):
        pipe = build(n=1000, batch_size=10, epochs=1, **kw)
        s = pipe.summary()
        assert not pipe.private and s["epsilon"] == "inf" and "no formal privacy guarantee" in s["privacy"]
        assert pipe.epoch_metrics(1)["epsilon"] == "inf"


@pytest.mark.parametrize("rule_name", RULES)
@pytest.mark.parametrize("sampler", ["torch", "native"])
def test_fused_dp_sgd_step_equals_private_grads_then_torch_sgd(rule_name, sampler):
    """With plain SGD the loop adds the private gradient straight into the weights
    (``apply_sgd``): the same clipping, the same noise draws, the same step as writing ``.grad`` and
    calling ``torch.optim.SGD`` (DTP's inverses at their own rate), up to float rounding."""
    from bioplausible.training import plain_sgd_rates

    if sampler == "native" and not native_available():
        _no_native()
    steps = []
    for fused in (False, True):
        net, rule, x, t, _ = _setup(rule_name, sizes=(12, 9, 7, 5))
        groups = [{"params": list(net.parameters()), "lr": 0.1}]
        if list(rule.parameters()):
            groups.append({"params": list(rule.parameters()), "lr": 0.03})
        opt = torch.optim.SGD(groups, lr=0.1)
        pipe = build(n=1000, batch_size=16, epochs=1, clip_norm=0.5, noise_multiplier=1.3, seed=4,
                     noise_sampler=sampler)
        rates = plain_sgd_rates(opt, pipe)
        assert rates is not None and pipe.fusable_sgd
        before = torch.cat([p.detach().reshape(-1) for m in (net, rule) for p in m.parameters()])
        teaching = rule.teach(x, t)
        if fused:
            pipe.apply_sgd(teaching, rule, 16, rates)
            assert all(p.grad is None for p in net.parameters())  # nothing materialised
        else:
            pipe.apply(teaching, rule, 16)
            opt.step()
        assert pipe.steps == 1
        steps.append(torch.cat([p.detach().reshape(-1) for m in (net, rule) for p in m.parameters()]) - before)
    assert steps[0].abs().max() > 0.01  # a real step (noise std 0.1 · 0.65 per coordinate)
    assert (steps[1] - steps[0]).norm() / steps[0].norm() < 1e-12  # float64: rounding only


def test_update_noise_is_never_fused():
    from bioplausible.training import plain_sgd_rates

    params = [torch.nn.Parameter(torch.zeros(3))]
    for site in ("gradient", "update"):
        pipe = build(n=100, batch_size=10, epochs=1, update_noise=0.1, noise_site=site)
        assert not pipe.fusable_sgd and plain_sgd_rates(torch.optim.SGD(params, lr=0.1), pipe) is None


# -- augmentation multiplicity --------------------------------------------------------------------
def _averaged_example_grads(rule, x, t, k):
    """Materialised: each example's gradient averaged over its k consecutive rows (flat, all layers)."""
    out = []
    for i in range(0, len(x), k):
        rule.write_grads(rule.teach(x[i : i + k], t[i : i + k]))
        out.append(_flat_grads(rule) / k)
    return torch.stack(out)


@pytest.mark.parametrize("rule_name", RULES)
def test_grouped_norms_equal_materialised_averaged_gradients(rule_name):
    """With k copies per example, the closed form (two k×k Gram matrices per layer) equals the norm of
    the materialised average of the copies' gradients, for every rule (DTP's inverses included)."""
    opts = {"inverse_noise": 0.0} if rule_name == "dtp" else {}
    net, rule, x, t, _ = _setup(rule_name, **opts)  # 16 rows = 4 examples × 4 copies
    k = 4
    closed = per_example_norms(rule.teach(x, t).terms, group=k)
    mat = _averaged_example_grads(rule, x, t, k).norm(dim=1)
    assert closed.shape == (4,)
    assert ((closed - mat).abs() / mat).max() < 1e-10


@pytest.mark.parametrize("rule_name", RULES)
@pytest.mark.parametrize("per_layer", [False, True])
def test_multiplicity_clips_each_examples_average_to_c(rule_name, per_layer):
    """DP-SGD with k copies: every example's averaged gradient is clipped to C as one contribution, and
    the written gradient (σ = 0 here, to see it) is the sum of those clipped averages."""
    opts = {"inverse_noise": 0.0} if rule_name == "dtp" else {}
    net, rule, x, t, _ = _setup(rule_name, **opts)
    k, C = 2, 0.05
    avg = _averaged_example_grads(rule, x, t, k)
    assert (avg.norm(dim=1) > C).all()  # every example is clipped at this bound
    pipe = build(n=1000, batch_size=8, epochs=1, clip_norm=C, noise_multiplier=0.0, per_layer_clipping=per_layer,
                 multiplicity=k, sampling="shuffle")
    teaching = rule.teach(x, t)
    factors = clipped_factors(teaching.terms, C, per_layer, group=k)
    # each example's clipped contribution, materialised from the per-row factors
    contrib = []
    for i in range(0, len(x), k):
        parts = []
        for term, c in zip(teaching.terms, factors):
            cd = term.delta[i : i + k] * c[i : i + k, None]
            parts += [(cd.t() @ term.inp[i : i + k]).reshape(-1), cd.sum(0)]
        contrib.append(torch.cat(parts))
    contrib = torch.stack(contrib)
    assert (contrib.norm(dim=1) <= C * (1 + 1e-12)).all() and (contrib.norm(dim=1) > 0.9 * C).all()
    if not per_layer:  # one factor per example: the clipped average points where the average points
        assert torch.allclose(contrib / contrib.norm(dim=1, keepdim=True), avg / avg.norm(dim=1, keepdim=True))
    pipe.apply(teaching, rule, 8)
    assert torch.allclose(_flat_grads(rule), contrib.sum(0), atol=1e-14)


def test_multiplicity_in_training_runs_and_is_validated(tmp_path):
    from types import SimpleNamespace

    from bioplausible import training
    from bioplausible.config import resolve

    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 20, generator=g)
    y = (x[:, :10].sum(1) > x[:, 10:].sum(1)).long()
    ds = SimpleNamespace(x_train=x, y_train=y, x_test=x[:50], y_test=y[:50], x_val=None, y_val=None, n_classes=2,
                         shape=(1, 4, 5))
    for extra in ({}, {"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-6}):
        cfg = resolve(dataset="mnist", hidden_sizes=[8], epochs=2, batch_size=20, augment_shift=1,
                      augment_multiplicity=3, threads=1, **extra)
        res = training.train(cfg, out=tmp_path / f"run{len(extra)}", data=ds, progress=False)
        assert res["status"] == "completed" and math.isfinite(res["train_loss"])
        if extra:
            assert res["augment_multiplicity"] == 3
    with pytest.raises(UserError, match="augment_multiplicity: 4 copies of each example need augmentation"):
        resolve(augment_multiplicity=4)
    with pytest.raises(UserError, match="augment_multiplicity: invalid value 0"):
        resolve(augment_multiplicity=0, augment_shift=1)
    assert resolve(augment_multiplicity=1).run_hash() == "5a09fb76aa9dbe47"  # the default keeps old hashes
    assert resolve(augment_multiplicity=2, augment_shift=1).run_hash() != resolve(augment_shift=1).run_hash()


def test_make_private_multiplicity_checks_whole_groups():
    net, rule, x, t, _ = _setup("bp")
    priv = make_private(rule, n_train=1000, batch_size=8, noise_multiplier=1.0, clip_norm=1.0, multiplicity=3)
    with pytest.raises(UserError, match="16 rows are not whole groups of multiplicity=3"):
        priv.step_grads(x, t)
    priv.step_grads(x[:15], t[:15])
    assert priv.summary()["augment_multiplicity"] == 3


# -- update noise (the paper's) ----------------------------------------------------------------------
def _no_native():
    """Skip where the native sampler cannot build, but never in CI, which installs a C compiler."""
    from bioplausible.privacy.noise import native_library

    try:
        native_library()
    except Exception as e:  # NativeUnavailable: say why
        if os.environ.get("CI"):
            pytest.fail(f"the native noise sampler must build in CI: {e}")
        pytest.skip(f"the native noise sampler does not build here: {e}")


@pytest.mark.parametrize("sampler", ["torch", "native"])
def test_update_noise_sites(sampler):
    if sampler == "native" and not native_available():
        _no_native()
    sigma = 0.3
    for site in ("gradient", "error", "signal", "update"):
        net, rule, x, t, _ = _setup("bp", sizes=(6, 5, 4))
        pipe = build(n=100, batch_size=16, epochs=1, update_noise=sigma, noise_site=site, seed=1,
                     noise_sampler=sampler)
        teaching = rule.teach(x, t)
        W1_0, W2_0 = (layer.weight.detach().clone() for layer in net.layers)
        replay = pipe.noise.clone()  # draws what the pipeline will draw
        pipe.apply(teaching, rule, 16)
        W1, W2 = net.layers[0].weight, net.layers[1].weight
        rec, e = teaching.record, teaching.error
        fp = 1 - rec.h[1] ** 2
        if site == "update":
            # weights (not gradients) moved by σξ; the gradients stay exact, so W ← W − lr·g + σξ
            xi = replay.like(W1, 1.0)
            assert torch.allclose(W1.grad, ((e @ W2_0) * fp).t() @ x)
            assert torch.allclose(W1.detach() - W1_0, sigma * xi)
        elif site == "gradient":
            xi = replay.like(W1, 1.0)
            clean = ((e @ W2) * fp).t() @ x
            assert torch.allclose(W1.grad, clean + sigma * xi)
        elif site == "error":
            en = e + sigma * replay.like(e, 1.0)
            assert torch.allclose(W2.grad, en.t() @ rec.h[1])
            assert torch.allclose(W1.grad, ((en @ W2) * fp).t() @ x)  # the noisy error is what travels back
        else:
            d1 = (e @ W2) * fp
            n1 = replay.like(d1, 1.0)
            n2 = replay.like(e, 1.0)
            assert torch.allclose(W1.grad, (d1 + sigma * n1).t() @ x)
            assert torch.allclose(W2.grad, (e + sigma * n2).t() @ rec.h[1])


# -- Laplace input perturbation ----------------------------------------------------------------------
def test_laplace_input_noise_scale_and_clipping():
    x = torch.rand(4000, 50) * 3 - 1  # outside [0, 1] on purpose: clipped first
    eps = 25.0
    out = perturb_inputs(x, eps, torch.Generator().manual_seed(0))
    noise = (out - x.clamp(0, 1)).double().reshape(-1)
    b = 50 / eps  # L1 sensitivity d of features in [0, 1]
    assert abs(float(noise.abs().mean()) / b - 1) < 0.01  # E|Laplace(b)| = b
    assert abs(float(noise.var()) / (2 * b * b) - 1) < 0.03
    assert stats.kstest(noise.numpy() / b, "laplace").pvalue > 1e-3


# -- make_private ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule_name", ["dfa", "dtp"])
def test_make_private_trains_and_accounts(rule_name):
    torch.manual_seed(0)
    n = 600
    x = torch.randn(n, 8)
    y = (x[:, 0] > 0).long()
    sizes = [8, 16, 16, 2] if rule_name == "dtp" else [8, 32, 2]
    net = MLP(sizes, "tanh", "softmax", "ce", "mean", seed=0)
    rule = make_rule(rule_name, net, seed=1)
    priv = make_private(rule, n_train=n, batch_size=60, epochs=8, target_epsilon=4.0, clip_norm=1.0, accountant="rdp")
    opt = torch.optim.SGD(list(net.parameters()) + list(rule.parameters()), lr=0.5)
    gen = torch.Generator().manual_seed(0)
    t = net.targets(y)
    for _ in range(8):
        for idx in priv.batches(gen):
            priv.step_grads(x[idx], t[idx])
            opt.step()
    acc = float((net(x).argmax(1) == y).double().mean())
    assert acc > 0.8
    eps = priv.epsilon()
    assert 3.8 < eps <= 4.0 and priv.noise_multiplier > 0.3
    s = priv.summary()
    for k in ("epsilon", "delta", "noise_multiplier", "clip_norm", "sampling_rate", "accountant"):
        assert k in s
    with pytest.raises(UserError, match="clip_norm"):
        make_private(rule, n_train=n, batch_size=60, noise_multiplier=1.0)


def test_releases_outside_the_guarantee_are_named_and_no_mechanism_claims_no_epsilon():
    from bioplausible.config import resolve
    from bioplausible.privacy import make_pipeline

    cpu = torch.device("cpu")
    dp = {"clip_norm": 1.0, "noise_multiplier": 1.0}
    pipe = make_pipeline(resolve(stop_delta=1e-4, **dp), 60000, cpu)  # early stopping on the training loss
    assert pipe.private and "stop_delta" in pipe.summary()["privacy_caveats"][0]
    pipe = make_pipeline(resolve(stop_delta=None, standardize=True, **dp), 60000, cpu)
    assert [c.split()[0] for c in pipe.summary()["privacy_caveats"]] == ["standardize"]
    assert "privacy_caveats" not in make_pipeline(resolve(stop_delta=None, **dp), 60000, cpu).summary()
    s = make_pipeline(resolve(sampling="poisson"), 60000, cpu).summary()  # sampling alone: no ε, not even 0
    assert s["private"] is False and "epsilon" not in s and "no privacy mechanism" in s["privacy"]


@pytest.mark.parametrize("first,resumed", [("torch", "torch"), ("native", "native"), ("torch", "auto")])
def test_dp_run_interrupted_and_resumed_is_bit_identical(tmp_path, monkeypatch, first, resumed):
    """Poisson batches, clipping and noise resume exactly: the noise generator, the step counter and the
    batch generator travel through the checkpoint, so a run that dies after epoch 1 and is resumed ends
    with the same weights, optimizer state, RNG states, metrics and ε as an uninterrupted one. A run
    started on one sampler resumes on it, whatever the resuming process would pick (torch, auto)."""
    from types import SimpleNamespace

    from bioplausible import training
    from bioplausible.checkpoint import read_checkpoint
    from bioplausible.config import resolve

    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 20, generator=g)
    y = (x[:, :10].sum(1) > x[:, 10:].sum(1)).long()
    ds = SimpleNamespace(x_train=x, y_train=y, x_test=x[:50], y_test=y[:50], x_val=None, y_val=None, n_classes=2,
                         shape=(1, 4, 5))
    if "native" in (first, resumed) and not native_available():
        _no_native()
    opts = dict(preset="tuned", dataset="mnist", hidden_sizes=[16], epochs=3, batch_size=30, augment_shift=0,
                clip_norm=0.5, noise_multiplier=1.3, delta=1e-6, threads=1)
    cfg = resolve(**opts, noise_sampler=first)
    ref = training.train(cfg, out=tmp_path / "ref", data=ds, progress=False)
    assert ref["noise_sampler"] == first
    real, calls = training.evaluate, []

    def dies_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*a, **k)

    monkeypatch.setattr(training, "evaluate", dies_in_epoch_2)
    with pytest.raises(RuntimeError):
        training.train(cfg, out=tmp_path / "run", data=ds, progress=False)
    monkeypatch.setattr(training, "evaluate", real)
    res = training.train(resolve(**opts, noise_sampler=resumed), out=tmp_path / "run", resume=True, data=ds,
                         progress=False)
    for k in ("train_loss", "test_error", "steps", "epsilon", "epsilon_rdp", "noise_sampler"):
        assert res[k] == ref[k], k
    a, _ = read_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    b, _ = read_checkpoint(tmp_path / "ref" / "checkpoint.safetensors")
    noise_key = "rng.pipeline.noise" if first == "torch" else "rng.pipeline.noise_native"
    assert a.keys() == b.keys() and {noise_key, "rng.pipeline.counters", "rng.batch"} <= a.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
