"""CDRL (ebmcmc.estimators.CooperativeRecoveryLikelihood): every formula of the training step
and of generation pinned against a computation written out by hand from the paper's code
(docs/methods/cdrl.md), in the paper's own indexing (pairs t = 1..T, network output f = -E,
variances alpha, alpha_bar), independently of ebmcmc.diffusion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ebmcmc.diffusion import CDRLSchedule, DRLSchedule
from ebmcmc.estimators import CooperativeRecoveryLikelihood, guided
from ebmcmc.nn import CDRLEnergyMLP, CDRLInitializerMLP, CooperativeModel

torch.set_num_threads(1)
T, D = 6, 3


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- by hand
def _paper_constants():
    """The schedule from its definition (logsnr_max 9.8, logsnr_min -5.1, T = 6), float64."""
    b = math.atan(math.exp(-9.8 / 2))
    a = math.atan(math.exp(5.1 / 2)) - b
    lam = [-2 * math.log(math.tan(a * k / T + b)) for k in range(T + 1)]
    abar = [1 / (1 + math.exp(-v)) for v in lam]
    c = {}
    for t in range(1, T + 1):  # paper pair t: (x_{t-1}, x_t)
        as_t = abar[t] / abar[t - 1]
        sigma = math.sqrt(1 - as_t)
        c[t] = dict(
            as_t=as_t,
            as_mul=1.0 if t == T else as_t,
            sigma=sigma,
            beta_tilde=(1 - abar[t - 1]) / (1 - abar[t]) * (1 - as_t),
            c_t=math.sqrt(1 - abar[t - 1]) / math.sqrt(1 - 1 / (1 + math.exp(-9.8))),
            is_top=float(t == T),
        )
    sigma_1 = c[1]["sigma"]
    for t in c:
        c[t]["w"] = sigma_1 / c[t]["sigma"]
    return abar, c


class QuadEnergy(nn.Module):
    """E(y, t[, labels]) = 10 * sum((theta_t * y - b - 0.05 label)^2); records its calls."""

    def __init__(self, num_levels=T, conditional=False):
        super().__init__()
        g = _g(11)
        self.theta = nn.Parameter(1 + 0.1 * torch.randn(num_levels, D, generator=g))
        self.b = nn.Parameter(0.1 * torch.randn(D, generator=g))
        self.conditional = conditional
        self.calls: list = []

    def forward(self, y, t, labels=None):
        self.calls.append((t.clone(), None if labels is None else labels.clone(), self.training))
        shift = 0.0 if labels is None else 0.05 * labels[:, None].to(y.dtype)
        return 10 * ((self.theta[t] * y - self.b - shift) ** 2).sum(-1)


class AffineInit(nn.Module):
    """g(x, t[, labels]) = c_t x + d + 0.1 label; records its calls."""

    def __init__(self, num_levels=T + 1):
        super().__init__()
        g = _g(12)
        self.c = nn.Parameter(0.9 + 0.05 * torch.randn(num_levels, generator=g))
        self.d = nn.Parameter(0.1 * torch.randn(D, generator=g))
        self.calls: list = []

    def forward(self, x, t, labels=None):
        self.calls.append((t.clone(), None if labels is None else labels.clone(), self.training))
        shift = 0.0 if labels is None else 0.1 * labels[:, None].to(x.dtype)
        return self.c[t][:, None] * x + self.d + shift


def _model(conditional=False):
    return CooperativeModel(QuadEnergy(conditional=conditional), AffineInit()).double()


def _hand_loss(model, x, seed, K, variance_reduction=True):
    """The paper code's training step (docs/methods/cdrl.md), same random draws in order."""
    abar, C = _paper_constants()
    f = lambda y, lv: -model.energy(y, lv)  # noqa: E731
    g = _g(seed)
    n = x.shape[0]
    lower = torch.randint(0, T, (n,), generator=g)
    t = lower + 1  # the paper's t
    col = lambda key: torch.tensor([C[int(k)][key] for k in t], dtype=x.dtype)[:, None]  # noqa
    sab = lambda k: torch.tensor([math.sqrt(abar[int(i)]) for i in k], dtype=x.dtype)[:, None]  # noqa
    sb = lambda k: torch.tensor([math.sqrt(1 - abar[int(i)]) for i in k], dtype=x.dtype)[:, None]  # noqa
    eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
    if variance_reduction:
        x_t = sab(t) * x + sb(t) * eps
        x_tm1 = sab(lower) * x + sb(lower) * eps
    else:  # x_{t-1} from the data, x_t by one forward step from it
        x_tm1 = sab(lower) * x + sb(lower) * eps
        eps2 = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x_t = col("as_t").sqrt() * x_tm1 + col("sigma") * eps2
    pos = f(x_tm1 * col("as_mul").sqrt(), lower)
    torch.randint(0, 2**62, (1,), generator=g)  # the seed of the initializer's dropout
    y0 = model.initializer(x_t, t) + torch.sqrt(col("beta_tilde") * col("as_mul")) * torch.randn(
        x.shape, generator=g, dtype=x.dtype
    )
    y = y0.detach().clone()
    c_t, is_top = col("c_t"), col("is_top")
    for _ in range(K):
        y.requires_grad_(True)
        en = f(y, lower) - ((y - x_t) ** 2).sum(-1) * c_t[:, 0] * 2e-4 * (1 - is_top[:, 0])
        (grad,) = torch.autograd.grad(en.sum(), y)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
        y = y.detach() + 0.5 * grad + torch.sqrt(4e-4 * c_t * col("sigma") ** 2) * noise
    neg = f(y, lower)
    w = col("w")[:, 0]
    loss_ebm = -(pos * w).mean() + (neg * w).mean()
    loss_init = ((y - y0) ** 2).sum(-1).mean()
    return lower, loss_ebm, loss_init, y / col("as_mul").sqrt()


# ----------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("variance_reduction", [True, False])
def test_training_step_matches_the_paper_code_by_hand(variance_reduction):
    model = _model()
    x = torch.randn(64, D, generator=_g(1), dtype=torch.float64)
    est = CooperativeRecoveryLikelihood(
        CDRLSchedule(), num_langevin_steps=3, variance_reduction=variance_reduction
    )
    out = est.loss(model, x, _g(7))
    lower, loss_ebm, loss_init, negatives = _hand_loss(model, x, 7, 3, variance_reduction)
    assert set(lower.tolist()) == set(range(T))  # every level, the untethered top included
    torch.testing.assert_close(out.loss, loss_ebm + loss_init, rtol=1e-10, atol=1e-10)
    assert out.stats["loss_ebm"] == pytest.approx(float(loss_ebm.detach()), rel=1e-9)
    assert out.stats["loss_init"] == pytest.approx(float(loss_init.detach()), rel=1e-9)
    torch.testing.assert_close(out.negatives, negatives, rtol=1e-10, atol=1e-10)
    # the energy sees the lower level, the initializer the upper one
    e_levels = torch.cat([c[0] for c in model.energy.calls])
    assert set(e_levels.tolist()) == set(range(T))
    (init_call,) = model.initializer.calls[:1]
    torch.testing.assert_close(init_call[0], lower + 1)


def test_schedule_constants_of_the_pieces_match_the_paper_tables():
    est = CooperativeRecoveryLikelihood()
    _, C = _paper_constants()
    # proposal noise sqrt(beta~_t as_t'), Langevin noise sqrt(4e-4 c_t sigma_t^2), weights
    want_prop = [math.sqrt(C[t]["beta_tilde"] * C[t]["as_mul"]) for t in range(1, T + 1)]
    want_s = [math.sqrt(4e-4 * C[t]["c_t"] * C[t]["sigma"] ** 2) for t in range(1, T + 1)]
    want_w = [C[t]["w"] for t in range(1, T + 1)]
    torch.testing.assert_close(est.proposal_std, torch.tensor(want_prop, dtype=torch.float64))
    torch.testing.assert_close(est.step_sizes, torch.tensor(want_s, dtype=torch.float64))
    torch.testing.assert_close(est.loss_weight, torch.tensor(want_w, dtype=torch.float64))
    # as printed in docs/methods/cdrl.md
    assert [round(v, 2) for v in est.proposal_std.tolist()] == [0.01, 0.2, 0.32, 0.4, 0.42, 0.92]
    assert [round(v, 3) for v in est.step_sizes.tolist()] == [
        0.005,
        0.049,
        0.089,
        0.128,
        0.172,
        0.219,
    ]
    assert [round(v, 3) for v in est.loss_weight.tolist()] == [
        1.0, 0.595, 0.458, 0.376, 0.312, 0.26
    ]  # fmt: skip
    assert [round(C[t]["c_t"], 1) for t in range(1, T + 1)] == [1.0, 33.9, 64.7, 91.6, 112.8, 127.2]


def test_each_network_gets_gradients_only_from_its_own_term():
    x = torch.randn(32, D, generator=_g(1), dtype=torch.float64)

    def grads(weight):
        model = _model()
        est = CooperativeRecoveryLikelihood(num_langevin_steps=2, initializer_weight=weight)
        out = est.loss(model, x, _g(3))
        out.loss.backward()
        e = [p.grad for p in model.energy.parameters()]
        i = [p.grad for p in model.initializer.parameters()]
        return out, e, i

    out1, e1, i1 = grads(1.0)
    out0, e0, i0 = grads(0.0)
    out2, e2, i2 = grads(2.0)
    assert all(g is not None and g.abs().sum() > 0 for g in e1 + i1)
    for a, b, c in zip(e0, e1, e2, strict=True):  # the initializer's term never reaches E
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(c, b, rtol=0, atol=0)
    for a, b, c in zip(i0, i1, i2, strict=True):  # the EBM's term never reaches g
        assert a is None or a.abs().max() == 0
        torch.testing.assert_close(c, 2 * b)
    # and the initializer's gradient is that of its regression alone
    model = _model()
    est = CooperativeRecoveryLikelihood(num_langevin_steps=2)
    est.loss(model, x, _g(3))  # same draws: the same proposal and target
    _, _, loss_init, _ = _hand_loss(model, x, 3, 2)
    want = torch.autograd.grad(loss_init, list(model.initializer.parameters()))
    for a, b in zip(i1, want, strict=True):
        torch.testing.assert_close(a, b)


def test_sampler_runs_the_energy_in_eval_mode_and_restores_it():
    model = _model()
    model.train()
    est = CooperativeRecoveryLikelihood(num_langevin_steps=2)
    est.loss(model, torch.randn(8, D, generator=_g(), dtype=torch.float64), _g(1))
    modes = [c[2] for c in model.energy.calls]
    assert modes[0] is True and not any(modes[1:])  # positive: train; chain + negative: eval
    assert model.energy.training and model.initializer.training
    assert all(c[2] for c in model.initializer.calls)  # dropout of the proposal as in training
    model.energy.calls.clear()
    CooperativeRecoveryLikelihood(num_langevin_steps=2, sampler_eval_mode=False).loss(
        model, torch.randn(8, D, generator=_g(), dtype=torch.float64), _g(1)
    )
    assert all(c[2] for c in model.energy.calls)


# ----------------------------------------------------------------------------- generation
def test_generation_and_the_tweedie_step_by_hand():
    model = _model()
    est = CooperativeRecoveryLikelihood(num_langevin_steps=2)
    n = 5
    got = est.generate(model, (n, D), _g(4), clip=None, dtype=torch.float64)
    init_calls, energy_calls = list(model.initializer.calls), list(model.energy.calls)
    abar, C = _paper_constants()
    f = lambda y, lv: -model.energy(y, lv)  # noqa: E731
    g = _g(4)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    for t in range(T, 0, -1):
        c = C[t]
        lv = torch.full((n,), t - 1)
        with torch.no_grad():
            y = model.initializer(x, torch.full((n,), t)) + math.sqrt(
                c["beta_tilde"] * c["as_mul"]
            ) * torch.randn(n, D, generator=g, dtype=torch.float64)
        for _ in range(2):
            y.requires_grad_(True)
            en = f(y, lv) - ((y - x) ** 2).sum(-1) * c["c_t"] * 2e-4 * (1 - c["is_top"])
            (grad,) = torch.autograd.grad(en.sum(), y)
            xi = torch.randn(n, D, generator=g, dtype=torch.float64)
            y = y.detach() + 0.5 * grad + math.sqrt(4e-4 * c["c_t"] * c["sigma"] ** 2) * xi
        x = y / math.sqrt(c["as_mul"])
    # Tweedie: x <- (x + sigmabar_0^2 grad[f(sqrt(as_1) x, 0) / s^2]) / sqrt(abar_0), s^2 with 2e-4
    c = C[1]
    xg = x.clone().requires_grad_(True)
    s2 = 2e-4 * c["c_t"] * c["sigma"] ** 2
    (score,) = torch.autograd.grad(
        (f(xg * math.sqrt(c["as_mul"]), torch.zeros(n, dtype=torch.long)) / s2).sum(), xg
    )
    want = (x + (1 - abar[0]) * score) / math.sqrt(abar[0])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # T initializer calls at levels T..1; energy gradients at levels T-1..0: K + 1 per level
    # (the kernel also evaluates the chain's start), then one for the Tweedie step
    assert [int(c[0][0]) for c in init_calls] == list(range(T, 0, -1))
    assert [int(c[0][0]) for c in energy_calls] == [lv for lv in range(T - 1, -1, -1)
                                                    for _ in range(3)] + [0]  # fmt: skip
    assert not any(c[2] for c in energy_calls + init_calls)  # eval mode
    assert model.energy.training and model.initializer.training  # restored


def test_generation_without_denoising_and_with_clipping():
    model = _model()
    est = CooperativeRecoveryLikelihood(num_langevin_steps=1, denoise=False)
    a = est.generate(model, (4, D), _g(2), clip=None, dtype=torch.float64)
    b = est.generate(model, (4, D), _g(2), clip=None, dtype=torch.float64, denoise=True)
    c = est.generate(model, (4, D), _g(2), dtype=torch.float64)
    assert not torch.equal(a, b) and torch.equal(c, a.clamp(-1, 1))
    seen = []
    est.generate(model, (4, D), _g(2), callback=lambda t, p, r: seen.append(t))
    assert seen == list(range(T - 1, -1, -1))


# ----------------------------------------------------------------------------- guidance
def test_guided_combination_and_label_repetition():
    fn = lambda x, t, y: x.sum(-1) + 10 * y  # noqa: E731
    x, t, y = torch.ones(2, 3), torch.zeros(2, dtype=torch.long), torch.tensor([1, 2])
    torch.testing.assert_close(guided(fn, y, 9, 0.7)(x, t), 1.7 * (3 + 10 * y) - 0.7 * (3 + 90))
    torch.testing.assert_close(guided(fn, y, 9, 0.0)(x, t), 3 + 10.0 * y)
    torch.testing.assert_close(
        guided(lambda x, t: x.sum(-1), None, None)(x, t), torch.full((2,), 3.0)
    )
    x4, t4 = torch.ones(4, 3), torch.zeros(4, dtype=torch.long)  # two copies of the batch
    torch.testing.assert_close(guided(fn, y, 9, 0.0)(x4, t4), 3 + 10.0 * y.repeat(2))
    with pytest.raises(ValueError, match="needs labels"):
        guided(fn, None, 9, 1.0)
    with pytest.raises(ValueError, match="null label"):
        guided(fn, y, None, 1.0)


def test_guided_proposal_energy_and_denoising():
    model = _model(conditional=True)
    est = CooperativeRecoveryLikelihood(num_classes=4, proposal_noise=False)
    x = torch.randn(3, D, generator=_g(), dtype=torch.float64)
    t = torch.tensor([0, 2, 5])
    y = torch.tensor([1, 3, 0])
    null = torch.full_like(y, 4)
    init, energy = model.initializer, model.energy
    got = est.propose(model, t, x, labels=y, guidance=0.5)
    torch.testing.assert_close(got, 1.5 * init(x, t + 1, y) - 0.5 * init(x, t + 1, null))
    # Tweedie with the guided score
    x0 = torch.randn(3, D, generator=_g(1), dtype=torch.float64)
    got = est.denoise_step(model, x0, y, guidance=2.0)
    _, C = _paper_constants()
    a1, s2 = math.sqrt(C[1]["as_mul"]), 2e-4 * C[1]["sigma"] ** 2
    xg = x0.clone().requires_grad_(True)
    zero = torch.zeros(3, dtype=torch.long)
    e = 3.0 * energy(a1 * xg, zero, y) - 2.0 * energy(a1 * xg, zero, null)
    (grad,) = torch.autograd.grad(e.sum(), xg)
    abar0 = float(CDRLSchedule().alpha_bar[0])
    torch.testing.assert_close(got, (x0 - (1 - abar0) * grad / s2) / math.sqrt(abar0))
    # generation: the chain's energy is the guided one, on the doubled batch
    energy.calls.clear()
    est.generate(model, (3, D), _g(2), labels=y, guidance=0.3, dtype=torch.float64)
    lab = energy.calls[0][1]
    torch.testing.assert_close(lab, torch.cat([y, null]))


def test_label_dropout_rate_and_conditional_validation():
    model = _model(conditional=True)
    est = CooperativeRecoveryLikelihood(num_classes=5, num_langevin_steps=1)
    n = 4000
    labels = torch.randint(0, 5, (n,), generator=_g(5))
    est.loss(model, torch.randn(n, D, generator=_g(6), dtype=torch.float64), _g(7), labels)
    seen = model.energy.calls[0][1]  # the positive energy's labels
    dropped = seen == 5
    assert torch.equal(seen[~dropped], labels[~dropped])
    rate, mcse = float(dropped.double().mean()), math.sqrt(0.1 * 0.9 / n)
    assert abs(rate - 0.1) < 4 * mcse, rate
    # the initializer and the chain get the same (dropped) labels
    torch.testing.assert_close(model.initializer.calls[0][1], seen)
    with pytest.raises(ValueError, match="needs labels"):
        est.loss(model, torch.randn(4, D, dtype=torch.float64), _g())
    with pytest.raises(ValueError, match="unconditional"):
        CooperativeRecoveryLikelihood().loss(_model(), torch.randn(4, D), _g(), torch.zeros(4))
    with pytest.raises(ValueError, match="guidance needs labels"):
        est.generate(model, (2, D), _g(), guidance=1.0)


# ----------------------------------------------------------------------------- misc
def test_real_networks_any_recovery_schedule_and_validation():
    torch.manual_seed(0)
    model = CooperativeModel(CDRLEnergyMLP(2, hidden=16), CDRLInitializerMLP(2, hidden=16))
    est = CooperativeRecoveryLikelihood(num_langevin_steps=2, step_size_b2=4e-3)
    out = est.loss(model, torch.randn(16, 2, generator=_g()), _g(1))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert out.negatives.shape == (16, 2) and not out.negatives.requires_grad
    assert set(out.stats) == {"e_pos", "e_neg", "loss_ebm", "loss_init", "recovery_mse",
                              "proposal_mse"}  # fmt: skip
    # a DRL schedule works too (the proposal variance is built from the uniform names)
    drl = CooperativeRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=1)
    assert drl.proposal_std.shape == (6,) and drl.proposal_std[-1] > 0
    with pytest.raises(TypeError, match="energy and an initializer"):
        est.loss(torch.nn.Linear(2, 1), torch.randn(4, 2), _g())
    for kw in ({"initializer_weight": -1.0}, {"denoise_b2": 0.0}, {"num_classes": 0},
               {"label_dropout": 1.5}, {"num_langevin_steps": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            CooperativeRecoveryLikelihood(**kw)
    assert est.state_dict() == {}
    f = est.marginal_energy(model, 0)
    assert f(torch.zeros(3, 2)).shape == (3,)


def test_initializer_dropout_draws_from_the_generator_not_the_global_one():
    torch.manual_seed(0)
    init = CDRLInitializerMLP(2, hidden=16, dropout=0.5)
    with torch.no_grad():  # a live residual path, so dropout shows in the output
        init.lin_out.weight.normal_()
        for b in init.blocks:
            b.lin2.weight.normal_()
    model = CooperativeModel(CDRLEnergyMLP(2, hidden=8), init).train()
    est = CooperativeRecoveryLikelihood(proposal_noise=False)
    x, t = torch.randn(6, 2, generator=_g()), torch.tensor([0, 1, 2, 3, 4, 5])
    state = torch.get_rng_state()
    a = est.propose(model, t, x, _g(1))
    b = est.propose(model, t, x, _g(1))
    c = est.propose(model, t, x, _g(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    model.eval()  # no dropout, no draw
    g = _g(3)
    est.propose(model, t, x, g)
    assert torch.equal(g.get_state(), _g(3).get_state())


def test_setups_build_cdrl_with_its_own_defaults_and_pass_options_through():
    from ebmcmc.app.setups import digits_setup, toy_setup
    from ebmcmc.app.setups_cdrl import CDRLToySetup

    s = toy_setup("cdrl", hidden=16)
    assert isinstance(s, CDRLToySetup) and isinstance(s.model, CooperativeModel)
    est = s.estimator
    assert isinstance(est, CooperativeRecoveryLikelihood)
    assert est.num_langevin_steps == 8 and est.recovery.b2 == 4e-4 and est.recovery.jump_every == 0
    torch.testing.assert_close(est.loss_weight, CDRLSchedule(6).loss_weight)
    assert s.config.batch_size == 128 and s.config.param_groups[0].prefix == "initializer."
    assert s.scale == 2.0 and s.noise_std == pytest.approx(2 * float(CDRLSchedule().sigma_bar[0]))
    s2 = toy_setup("cdrl", hidden=16, num_langevin_steps=3, b2=1e-3, loss_weight="likelihood",
                   jump_every=2, lr=5e-4, batch_size=32, scale=1.5, levels=4)  # fmt: skip
    e2 = s2.estimator
    assert e2.num_langevin_steps == 3 and e2.recovery.b2 == 1e-3 and e2.recovery.jump_every == 2
    assert e2.schedule.num_levels == 4 and s2.config.lr == 5e-4 and s2.config.batch_size == 32
    assert s2.scale == 1.5
    x = torch.randn(5, 2, generator=_g())
    assert s.energy(x).shape == (5,) and s.chain_energy()(x).shape == (5,)
    assert s.chain_kernel().step_size == pytest.approx(float(est.step_sizes[0]) ** 2 / 2)
    assert s.generate(4, _g()).shape == (4, 2)
    # the DRL set-up keeps its defaults
    d = toy_setup("drl", hidden=16).estimator
    assert d.num_langevin_steps == 30 and d.b2 == 4e-3 and d.jump_every == 1
    dg = digits_setup("cdrl", hidden=16)
    assert dg.dim == 64 and dg.clip == (-1.0, 1.0) and dg.estimator.num_langevin_steps == 15
    assert dg.config.param_groups[0].lr == pytest.approx(dg.config.lr / 10)
    assert dg.generate(3, _g()).shape == (3, 64)
    assert digits_setup("drl", hidden=16).estimator.b2 == 2e-4
