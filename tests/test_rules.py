"""Each rule's update against an independent computation of its equation (float64)."""

import itertools

import numpy as np
import pytest
import torch

from bioplausible import MLP, make_rule
from bioplausible.diagnostics import alignment, angle
from bioplausible.errors import UserError
from bioplausible.rules import RULES

D = torch.float64


def batch(n=13, d=6, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=D)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def autograd_grads(net, x, y):
    net.zero_grad()
    rec = net.record(x)
    loss = net.batch_loss(rec, net.targets(y))
    return list(torch.autograd.grad(loss, list(net.parameters())))


def rel_err(a, b):
    return float(((a - b).norm() / b.norm().clamp_min(1e-300)).detach())


COMBOS = [
    ("tanh", "sigmoid", "mse", "sum"),
    ("tanh", "sigmoid", "bce", "mean"),
    ("relu", "softmax", "ce", "mean"),
    ("sigmoid", "softmax", "mse", "sum"),
    ("leaky-relu", "linear", "mse", "mean"),
]


@pytest.mark.parametrize("hidden,output,loss,reduction", COMBOS)
@pytest.mark.parametrize("sizes", [[6, 5, 4], [6, 7, 5, 3, 4]])
def test_bp_equals_autograd(sizes, hidden, output, loss, reduction):
    net = MLP(sizes, hidden=hidden, output=output, loss=loss, reduction=reduction, seed=3, dtype=D)
    x, y = batch(k=sizes[-1])
    ours = make_rule("bp", net).gradients(x, y)
    ref = autograd_grads(net, x, y)
    assert [tuple(g.shape) for g in ours] == [tuple(p.shape) for p in net.parameters()]
    for a, b in zip(ours, ref):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("hidden,output,loss,reduction", COMBOS)
def test_output_error_is_gradient_at_preactivation(hidden, output, loss, reduction):
    net = MLP([6, 5, 4], hidden=hidden, output=output, loss=loss, reduction="sum", seed=1, dtype=D)
    x, y = batch()
    rec = net.record(x)
    a = rec.a[-1].detach().requires_grad_(True)
    o = {"sigmoid": torch.sigmoid, "softmax": lambda z: torch.softmax(z, 1), "linear": lambda z: z}[output](a)
    t = net.targets(y)
    if loss == "mse":
        L = 0.5 * ((t - o) ** 2).sum()
    elif loss == "bce":
        L = -(t * torch.log(o) + (1 - t) * torch.log(1 - o)).sum()
    else:
        L = -(t * torch.log(o)).sum()
    (ref,) = torch.autograd.grad(L, a)
    assert rel_err(net.output_error(rec, t), ref) < 1e-12


# ---- independent numpy implementations of each rule's equations -----------------------------


def np_forward(net, x):
    Ws = [l.weight.detach().numpy() for l in net.layers]
    bs = [l.bias.detach().numpy() for l in net.layers]
    h, a = [x.numpy()], []
    for i, (W, b) in enumerate(zip(Ws, bs)):
        a.append(h[-1] @ W.T + b)
        h.append(np.tanh(a[-1]) if i < len(Ws) - 1 else 1 / (1 + np.exp(-a[-1])))
    return Ws, h, a


def np_grads(deltas, h):
    return [g for d, hi in zip(deltas, h[:-1]) for g in (d.T @ hi, d.sum(0))]


def np_error(h, y, k):
    t = np.eye(k)[y.numpy()]
    o = h[-1]
    return (o - t) * o * (1 - o)  # MSE with sigmoid output, at the pre-activation


SIZES = [6, 7, 5, 3, 4]


def paper_net(sizes=SIZES, seed=2):
    return MLP(sizes, hidden="tanh", output="sigmoid", loss="mse", reduction="sum", seed=seed, dtype=D)


def check(ours, ref):
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert rel_err(a, torch.from_numpy(np.asarray(b))) < 1e-12


def test_fa_equation():
    net = paper_net()
    rule = make_rule("fa", net, seed=5)
    x, y = batch()
    Ws, h, a = np_forward(net, x)
    B = [b.numpy() for b in rule.feedback]  # B_l for l = 2..L, shaped like W_lᵀ
    assert [b.shape for b in B] == [W.T.shape for W in Ws[1:]]
    d = [None] * len(Ws)
    d[-1] = np_error(h, y, 4)
    for l in range(len(Ws) - 2, -1, -1):
        d[l] = (d[l + 1] @ B[l].T) * (1 - h[l + 1] ** 2)
    check(rule.gradients(x, y), np_grads(d, h))


def test_dfa_equation_eq8():
    net = paper_net()
    rule = make_rule("dfa", net, seed=5)
    x, y = batch()
    Ws, h, a = np_forward(net, x)
    B = [b.numpy() for b in rule.feedback]
    assert [b.shape for b in B] == [(w, 4) for w in SIZES[1:-1]]
    e = np_error(h, y, 4)
    d = [(e @ B[l].T) * (1 - h[l + 1] ** 2) for l in range(len(B))] + [e]  # δa_l = (B_l e) ⊙ f'(a_l)
    check(rule.gradients(x, y), np_grads(d, h))


def test_ifa_equation_eq9():
    net = paper_net()
    rule = make_rule("ifa", net, seed=5)
    x, y = batch()
    Ws, h, a = np_forward(net, x)
    (B1,) = [b.numpy() for b in rule.feedback]
    assert B1.shape == (SIZES[1], 4)
    e = np_error(h, y, 4)
    d = [(e @ B1.T) * (1 - h[1] ** 2)]
    for l in range(1, len(Ws) - 1):  # δa_l = (W_l δa_{l-1}) ⊙ f'(a_l)
        d.append((d[-1] @ Ws[l].T) * (1 - h[l + 1] ** 2))
    check(rule.gradients(x, y), np_grads(d + [e], h))


def test_dtp_algorithm1():
    net = paper_net()
    step, sigma = 0.3, 0.2
    rule = make_rule("dtp", net, seed=5, target_step=step, inverse_noise=sigma)
    x, y = batch()
    Ws, h, a = np_forward(net, x)
    V = [(g.weight.detach().numpy(), g.bias.detach().numpy()) for g in rule.inverses]
    M = len(Ws)
    e = np_error(h, y, 4)
    g = lambda i, z: np.tanh(z @ V[i - 2][0].T + V[i - 2][1])  # noqa: E731  g_i, i = 2..M-1
    hat = {M - 1: h[M - 1] - step * (e @ Ws[M - 1])}
    for i in range(M - 1, 1, -1):
        hat[i - 1] = h[i - 1] - g(i, h[i]) + g(i, hat[i])
    d = [2 * (h[i] - hat[i]) * (1 - h[i] ** 2) for i in range(1, M)] + [e]
    teaching = rule.teach(x, net.targets(y))
    check(rule.gradients(x, y)[: 2 * M], np_grads(d, h))
    # inverse maps: autograd of L_inv = ‖g_i(f_i(h_{i-1}+ε)) − (h_{i-1}+ε)‖² w.r.t. V_i, c_i, same noise
    for term, i in zip(teaching.terms[M:], range(2, M)):
        z = term.inp  # f_i(h_{i-1} + ε)
        Vt = rule.inverses[i - 2].weight.detach().clone().requires_grad_(True)
        ct = rule.inverses[i - 2].bias.detach().clone().requires_grad_(True)
        r = torch.tanh(z @ Vt.t() + ct)
        # recover the noisy source from the definition of δ: δ = 2(r − src) ⊙ (1 − r²)
        src = r.detach() - term.delta / (2 * (1 - r.detach() ** 2))
        noise = src - torch.from_numpy(h[i - 1])
        assert 0.15 < float(noise.std()) < 0.25  # ε ~ N(0, σ²), σ = 0.2
        fi = torch.tanh(src @ net.layers[i - 1].weight.t() + net.layers[i - 1].bias)
        assert rel_err(z, fi.detach()) < 1e-12
        L = ((r - src) ** 2).sum()
        gV, gc = torch.autograd.grad(L, [Vt, ct])
        assert rel_err(term.delta.t() @ term.inp, gV) < 1e-10
        assert rel_err(term.delta.sum(0), gc) < 1e-10


def test_dtp_single_hidden_layer_is_scaled_bp():
    net = MLP([6, 9, 4], seed=0, dtype=D)
    x, y = batch()
    step = 0.25
    dtp = make_rule("dtp", net, target_step=step).gradients(x, y)
    bp = autograd_grads(net, x, y)
    assert rel_err(dtp[0], 2 * step * bp[0]) < 1e-10  # hidden layer: BP scaled by 2η̂
    assert rel_err(dtp[2], bp[2]) < 1e-10  # output layer: the global loss
    assert len(list(make_rule("dtp", net).parameters())) == 0  # no inverses on one hidden layer


def test_fa_with_transposed_weights_is_bp_and_fa_dfa_ifa_agree_on_one_hidden_layer():
    net = paper_net()
    x, y = batch()
    fa = make_rule("fa", net, seed=1)
    for B, W in zip(fa.feedback, [l.weight for l in net.layers[1:]]):
        B.copy_(W.detach().t())
    for a, b in zip(fa.gradients(x, y), autograd_grads(net, x, y)):
        assert rel_err(a, b) < 1e-10
    net1 = MLP([6, 9, 4], seed=0, dtype=D)
    f, d, i = make_rule("fa", net1, seed=3), make_rule("dfa", net1, seed=3), make_rule("ifa", net1, seed=3)
    assert torch.equal(f.feedback[0], d.feedback[0]) and torch.equal(i.feedback[0], d.feedback[0])
    for a, b, c in zip(f.gradients(x, y), d.gradients(x, y), i.gradients(x, y)):
        assert torch.equal(a, b) and torch.equal(c, b)


def test_feedback_is_seeded_fixed_and_scaled():
    net = MLP([6, 8, 8, 4], seed=0, dtype=D)
    a = make_rule("dfa", net, seed=11)
    b = make_rule("dfa", net, seed=11)
    c = make_rule("dfa", net, seed=12)
    assert all(torch.equal(p, q) for p, q in zip(a.feedback, b.feedback))
    assert not torch.equal(a.feedback[0], c.feedback[0])
    assert not torch.equal(a.feedback[0], a.feedback[1])
    bound = 1 / np.sqrt(4)
    assert float(a.feedback[0].abs().max()) <= bound and float(a.feedback[0].abs().max()) > 0.8 * bound
    s = make_rule("dfa", net, seed=11, feedback_scale=3.0)
    assert torch.allclose(s.feedback[0], 3 * a.feedback[0])
    shared = make_rule("dfa", net, seed=11, shared_feedback=True)
    assert shared.feedback[0] is shared.feedback[1]
    with pytest.raises(UserError, match="equal hidden widths"):
        make_rule("dfa", MLP([6, 8, 5, 4]), shared_feedback=True)
    assert make_rule("bp", net).feedback == []
    # feedback does not move when the network trains
    before = [f.clone() for f in a.feedback]
    x, y = batch(d=6, k=4)
    a.step_grads(x, net.targets(y))
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert all(torch.equal(p, q) for p, q in zip(before, a.feedback))
    assert all(not f.requires_grad for f in a.feedback)


def test_registry_errors_list_valid_rules_and_options():
    net = MLP([6, 5, 4])
    with pytest.raises(UserError) as e:
        make_rule("hebbian", net)
    assert "bp, fa, dfa, ifa, dtp" in str(e.value)
    with pytest.raises(UserError, match="rule 'bp' has no option 'target_step'"):
        make_rule("bp", net, target_step=0.1)
    assert set(RULES) == {"bp", "fa", "dfa", "ifa", "dtp"}


def test_write_grads_fills_param_grad_for_torch_optim():
    for name in RULES:
        net = MLP([6, 7, 5, 4], seed=0, dtype=D)
        rule = make_rule(name, net, seed=0)
        x, y = batch()
        expected = rule.gradients(x, y)
        rule._noise_gen = None  # DTP: same inverse noise draw again
        rule.step_grads(x, net.targets(y))
        for p, g in zip(net.parameters(), expected):
            assert rel_err(p.grad, g) < 1e-12
        for p in rule.parameters():
            assert p.grad is not None and p.grad.shape == p.shape


@pytest.mark.parametrize("hidden,output,loss,reduction", COMBOS)
def test_error_and_loss_share_work_but_equal_the_separate_definitions(hidden, output, loss, reduction):
    net = MLP([6, 5, 4], hidden=hidden, output=output, loss=loss, reduction=reduction, seed=1, dtype=D)
    x, y = batch()
    rec, t = net.record(x), net.targets(y)
    e, L = net.error_and_loss(rec, t)
    assert rel_err(L, net.per_example_loss(rec, t).sum() * net.loss_scale(x.shape[0])) < 1e-12
    assert rel_err(e, net.output_error(rec, t)) == 0.0


@pytest.mark.parametrize("hidden", ["tanh", "relu", "sigmoid", "leaky-relu"])
def test_times_derivative_is_g_times_f_prime(hidden):
    from bioplausible.network import activate, derivative, times_derivative

    g0 = torch.Generator().manual_seed(0)
    a = torch.randn(9, 7, generator=g0, dtype=D) * 2
    g = torch.randn(9, 7, generator=g0, dtype=D)
    h = activate(hidden, a)
    a.requires_grad_(True)
    (ref,) = torch.autograd.grad((activate(hidden, a) * g).sum(), a)  # autograd's g ⊙ f'(a)
    a = a.detach()
    assert rel_err(times_derivative(hidden, g.clone(), a, h), ref) < 1e-14
    assert rel_err(g * derivative(hidden, a, h), ref) < 1e-14


@pytest.mark.parametrize("name", RULES)
def test_fused_sgd_step_equals_write_grads_then_torch_sgd(name):
    """The training loop's fast path for plain SGD (one addmm_ per layer) takes the same step as
    writing param.grad and calling torch.optim.SGD, with separate rates for a rule's own layers."""
    from bioplausible.training import plain_sgd_rates

    x, y = batch()
    nets = [MLP([6, 7, 5, 4], seed=0, dtype=D) for _ in range(2)]
    rules = [make_rule(name, n, seed=0) for n in nets]
    opts = []
    for net, rule in zip(nets, rules):
        groups = [{"params": list(net.parameters()), "lr": 0.1}]
        if list(rule.parameters()):
            groups.append({"params": list(rule.parameters()), "lr": 0.03})
        opts.append(torch.optim.SGD(groups, lr=0.1))
    from bioplausible.privacy import Plain

    rates = plain_sgd_rates(opts[1], Plain())
    assert rates is not None and len(rates) == len(list(nets[1].parameters())) + len(list(rules[1].parameters()))
    rules[0].step_grads(x, nets[0].targets(y))
    opts[0].step()
    rules[1].sgd_step(rules[1].teach(x, nets[1].targets(y)), rates)
    for m0, m1 in ((nets[0], nets[1]), (rules[0], rules[1])):
        for p0, p1 in zip(m0.parameters(), m1.parameters()):
            assert torch.allclose(p0, p1, rtol=0, atol=1e-14)
    assert all(p.grad is None for p in nets[1].parameters())  # nothing materialised


def test_fused_sgd_only_for_plain_sgd_on_exact_gradients():
    from bioplausible.config import resolve
    from bioplausible.privacy import Plain, make_pipeline
    from bioplausible.training import plain_sgd_rates

    params = [torch.nn.Parameter(torch.zeros(3))]
    assert plain_sgd_rates(torch.optim.SGD(params, lr=0.1), Plain()) == {id(params[0]): 0.1}
    for opt in (torch.optim.SGD(params, lr=0.1, momentum=0.9), torch.optim.SGD(params, lr=0.1, weight_decay=1e-4),
                torch.optim.Adam(params, lr=0.1)):
        assert plain_sgd_rates(opt, Plain()) is None
    noisy = make_pipeline(resolve(update_noise=0.1), 1000, torch.device("cpu"))
    assert plain_sgd_rates(torch.optim.SGD(params, lr=0.1), noisy) is None


def test_mean_reduction_divides_by_batch():
    x, y = batch()
    for name in RULES:
        s = MLP([6, 7, 5, 4], reduction="sum", seed=0, dtype=D)
        m = MLP([6, 7, 5, 4], reduction="mean", seed=0, dtype=D)
        gs = make_rule(name, s, seed=1).gradients(x, y)
        gm = make_rule(name, m, seed=1).gradients(x, y)
        for a, b in zip(gs, gm):
            assert rel_err(a / x.shape[0], b) < 1e-12


def test_alignment_diagnostics():
    net = paper_net()
    x, y = batch(n=50)
    t = net.targets(y)
    bp = alignment(make_rule("bp", net), x, t)
    assert set(bp) == {"angle_1", "angle_2", "angle_3"}
    assert all(v < 1e-5 for v in bp.values())
    fa = make_rule("fa", net, seed=0)
    d = alignment(fa, x, t)
    assert set(d) == {f"angle_{i}" for i in (1, 2, 3)} | {f"feedback_angle_{i}" for i in (1, 2, 3)}
    # random feedback in high dimension: close to orthogonal at initialisation
    assert all(45 < d[f"feedback_angle_{i}"] < 135 for i in (1, 2, 3))
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    dfa = alignment(make_rule("dfa", net, seed=0), x, t)
    assert {"feedback_angle_1", "feedback_angle_2", "feedback_angle_3"} <= set(dfa)
    ifa = alignment(make_rule("ifa", net, seed=0), x, t)
    assert "feedback_angle_1" in ifa and "feedback_angle_2" not in ifa


@pytest.mark.parametrize("name", ["bp", "fa", "dfa", "ifa", "dtp"])
def test_every_rule_descends_on_a_tiny_problem(name):
    """A few hundred full-batch steps on a separable toy problem must reduce the loss by a lot."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g, dtype=D)
    y = (x[:, :4].argmax(1))
    net = MLP([10, 32, 32, 4], hidden="tanh", output="softmax", loss="ce", reduction="mean", seed=0, dtype=D)
    rule = make_rule(name, net, seed=0)
    opt = torch.optim.Adam(list(net.parameters()) + list(rule.parameters()), lr=1e-2)
    t = net.targets(y)
    first = None
    for _ in range(300):
        teaching = rule.step_grads(x, t)
        first = first if first is not None else float(teaching.loss)
        opt.step()
    last = float(net.batch_loss(net.record(x), t).detach())
    assert last < 0.3 * first
