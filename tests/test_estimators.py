"""Mechanics of the training estimators (learning quality is tested separately)."""

import pytest
import torch

from ebmcmc.diffusion import DRLSchedule
from ebmcmc.estimators import (
    ContrastiveDivergence,
    DiffusionRecoveryLikelihood,
    PersistentContrastiveDivergence,
    RecoveryEnergy,
    ShortRunML,
)
from ebmcmc.kernels import Langevin
from ebmcmc.nn import TimeMLP

torch.set_num_threads(1)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_recovery_energy_matches_formula():
    sched = DRLSchedule(6)
    model = TimeMLP(2, hidden=16, num_levels=6)
    t = torch.tensor([0, 3, 5])
    x_next = torch.randn(3, 2, generator=_gen())
    y = torch.randn(3, 2, generator=_gen(1))
    e = RecoveryEnergy(model, sched, t, x_next)(y)
    s2 = sched.step_size(2e-4)[t].float() ** 2
    r = sched.tether[t + 1].float()
    sig2 = sched.sigma[t + 1].float() ** 2
    want = model(y, t) / s2 + r * ((y - x_next) ** 2).sum(-1) / (2 * sig2)
    torch.testing.assert_close(e, want)
    # top level (t = T-1 -> level T) has no tether
    assert r[-1] == 0


def test_recovery_energy_broadcasts_particles():
    sched = DRLSchedule(6)
    model = TimeMLP(2, hidden=16, num_levels=6)
    t = torch.tensor([1, 2])
    x_next = torch.randn(2, 2, generator=_gen())
    energy = RecoveryEnergy(model, sched, t, x_next)
    y = torch.randn(5, 2, 2, generator=_gen(2))
    out = energy(y)
    assert out.shape == (5, 2)
    torch.testing.assert_close(out[3], energy(y[3]))


def test_drl_loss_gradients_reach_only_parameters_through_energies():
    torch.manual_seed(0)
    model = TimeMLP(2, hidden=16, num_levels=6)
    est = DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=3)
    out = est.loss(model, torch.randn(32, 2, generator=_gen()), _gen(1))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert not out.negatives.requires_grad and out.negatives.shape == (32, 2)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert set(out.stats) >= {"e_pos", "e_neg"}


def test_drl_langevin_step_matches_paper_update():
    """One step: y' = y - (s^2/2) grad E_cond + lambda * s * xi (docs/methods/drl.md)."""
    sched = DRLSchedule(6)
    model = TimeMLP(2, hidden=16, num_levels=6)
    est = DiffusionRecoveryLikelihood(sched, num_langevin_steps=1, noise_scale=0.7)
    t = torch.tensor([0, 4])
    x_next = torch.randn(2, 2, generator=_gen())
    got = est.sample_conditional(model, t, x_next, _gen(5))
    energy = RecoveryEnergy(model, sched, t, x_next)
    y = x_next.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(y).sum(), y)
    s = sched.step_size(2e-4)[t].float()[:, None]
    xi = torch.randn(2, 2, generator=_gen(5))
    want = x_next - s**2 / 2 * g + 0.7 * s * xi
    torch.testing.assert_close(got, want)


def test_drl_generate_shape_and_clip():
    model = TimeMLP(2, hidden=16, num_levels=6)
    est = DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=2)
    x = est.generate(model, (10, 2), generator=_gen())
    assert x.shape == (10, 2) and x.abs().max() <= 1
    tr = est.long_run(
        model,
        torch.randn(4, 2, generator=_gen()),
        level=0,
        num_steps=20,
        generator=_gen(1),
        progress=False,
    )
    assert tr.draws.shape == (4, 20, 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ContrastiveDivergence(Langevin(0.01), num_mcmc_steps=3),
        lambda: ShortRunML(Langevin(0.01), num_mcmc_steps=3),
        lambda: PersistentContrastiveDivergence(Langevin(0.01), 3, buffer_size=50),
    ],
)
def test_contrastive_losses(make):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1), torch.nn.Flatten(0)
    )
    est = make()
    out = est.loss(model, torch.randn(8, 2, generator=_gen()), _gen(1))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.negatives.shape == (8, 2)


def test_pcd_buffer_state_roundtrip_and_reinit():
    est = PersistentContrastiveDivergence(Langevin(0.01), 2, buffer_size=40, reinit_prob=0.0)
    model = lambda x: (x**2).sum(-1)  # noqa: E731
    est.loss(model, torch.randn(8, 2, generator=_gen()), _gen(1))
    state = est.state_dict()
    other = PersistentContrastiveDivergence(Langevin(0.01), 2, buffer_size=40, reinit_prob=0.0)
    other.load_state_dict(state)
    a = est.loss(model, torch.randn(8, 2, generator=_gen()), _gen(3)).negatives
    b = other.loss(model, torch.randn(8, 2, generator=_gen()), _gen(3)).negatives
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="buffer has"):
        PersistentContrastiveDivergence(Langevin(0.01), 2, buffer_size=3).load_state_dict(state)


def test_estimator_validation():
    with pytest.raises(ValueError, match="langevin_steps"):
        DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=0)
    with pytest.raises(TypeError, match="schedule"):
        DiffusionRecoveryLikelihood(object())
    with pytest.raises(ValueError, match="steps"):
        ContrastiveDivergence(Langevin(0.01), num_mcmc_steps=0)
    with pytest.raises(ValueError, match="init"):
        ContrastiveDivergence(Langevin(0.01), num_mcmc_steps=1, init="bogus")
    with pytest.raises(ValueError, match="reinit_prob"):
        PersistentContrastiveDivergence(Langevin(0.01), 1, reinit_prob=2.0)


# ----------------------------------------------------------------------------- DRL options


def test_drl_loss_weights_paper_likelihood_and_custom():
    sched = DRLSchedule(6)
    paper = DiffusionRecoveryLikelihood(sched)
    torch.testing.assert_close(paper.loss_weight, sched.sigma[1] / sched.sigma[1:])
    lik = DiffusionRecoveryLikelihood(sched, step_size_b2=4e-3, loss_weight="likelihood")
    s2 = sched.step_size(4e-3) ** 2
    torch.testing.assert_close(lik.loss_weight, s2[0] / s2)
    w = torch.arange(1.0, 7.0)
    custom = DiffusionRecoveryLikelihood(sched, loss_weight=w)
    torch.testing.assert_close(custom.loss_weight, w.double())
    # the loss is the weighted mean of the energy differences
    model = TimeMLP(2, hidden=8, num_levels=6)
    batch = torch.randn(64, 2, generator=_gen())
    out = custom.loss(model, batch, _gen(3))
    g = _gen(3)
    t = sched.sample_levels(64, generator=g)
    x_t, x_next = sched.training_pair(batch, t, generator=g)
    a = sched.signal_prime[t + 1].float()[:, None]
    y_neg = custom.sample_conditional(model, t, x_next, g)
    want = (w[t] * (model(a * x_t, t) - model(y_neg, t))).mean()
    torch.testing.assert_close(out.loss, want)
    for bad in ("bogus", torch.ones(5), -w, w * float("nan")):
        with pytest.raises(ValueError, match="loss_weight"):
            DiffusionRecoveryLikelihood(sched, loss_weight=bad)


def test_drl_metropolis_uses_mala_and_rejects_a_diverging_step():
    sched = DRLSchedule(6)
    est = DiffusionRecoveryLikelihood(sched, num_langevin_steps=3, metropolis=True)
    from ebmcmc.kernels import MALA

    t = torch.tensor([0, 2])
    k = est.kernel(t, torch.zeros(2, 2))
    assert isinstance(k, MALA)
    torch.testing.assert_close(k.step_size, est.step_sizes[t].float() ** 2 / 2)

    def steep(y, t):  # a network so steep that unadjusted Langevin would fly off
        return 1e4 * (y**2).sum(-1) * est.step_sizes[t].to(y) ** 2

    x_next = torch.ones(2, 2)
    y = est.sample_conditional(steep, t, x_next, _gen())
    assert torch.isfinite(y).all() and y.abs().max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="noise_scale"):
        DiffusionRecoveryLikelihood(sched, metropolis=True, noise_scale=0.9)


def test_drl_jumps_sample_the_conditional_mode_weights():
    """Level-0 energy with two narrow modes; x_{t+1} halfway between them. The exact
    conditional puts its weight in proportion to the modes' weights (0.2 / 0.8: the tether is
    symmetric). Langevin alone keeps each chain in the basin its first steps lead to (here
    nearly all go to the heavier mode, whose component dominates the gradient at the start);
    with jumps from the tether (about 2 % accepted) the fractions reach the truth. 4,000
    chains; standard error of a fraction sqrt(0.16 / 4000) = 0.0063."""
    sched = DRLSchedule(6)
    s0 = 4e-3
    mu = torch.tensor([[-0.3, 0.0], [0.3, 0.0]])
    logw = torch.log(torch.tensor([0.2, 0.8]))
    est_plain = DiffusionRecoveryLikelihood(sched, num_langevin_steps=400, step_size_b2=s0)
    est_jump = DiffusionRecoveryLikelihood(sched, num_langevin_steps=400, step_size_b2=s0,
                                           jump_every=1)  # fmt: skip
    s2 = est_plain.step_sizes[0].float() ** 2
    a1 = float(sched.signal_prime[1])

    def model(y, t):  # level 0: mixture of N(mu_k, 0.03^2) in x_0 = y / a1; scaled by s_0^2
        x = y / a1
        d2 = ((x[:, None, :] - mu) ** 2).sum(-1)
        return -s2 * torch.logsumexp(logw - d2 / (2 * 0.03**2), -1)

    n = 4000
    t = torch.zeros(n, dtype=torch.long)
    x_next = torch.zeros(n, 2)
    frac = {}
    for name, est in (("plain", est_plain), ("jump", est_jump)):
        y = est.sample_conditional(model, t, x_next, _gen(11))
        frac[name] = float((y[:, 0] > 0).float().mean())
    se = (0.16 / n) ** 0.5
    assert abs(frac["jump"] - 0.8) < 4 * se, frac
    assert abs(frac["plain"] - 0.8) > 10 * se, frac


def test_drl_jumps_leave_the_top_level_alone():
    sched = DRLSchedule(3)
    est = DiffusionRecoveryLikelihood(sched, num_langevin_steps=4, jump_every=1, noise_scale=0.0)
    ref = DiffusionRecoveryLikelihood(sched, num_langevin_steps=4, noise_scale=0.0)
    model = TimeMLP(2, hidden=8, num_levels=3)
    t = torch.full((8,), 2)
    x_next = torch.randn(8, 2, generator=_gen())
    torch.testing.assert_close(
        est.sample_conditional(model, t, x_next, _gen(1)),
        ref.sample_conditional(model, t, x_next, _gen(1)),
    )
    with pytest.raises(ValueError, match="jump_every"):
        DiffusionRecoveryLikelihood(sched, jump_every=-1)


def test_drl_marginal_energy():
    sched = DRLSchedule(6)
    est = DiffusionRecoveryLikelihood(sched, step_size_b2=4e-3)
    model = TimeMLP(2, hidden=8, num_levels=6)
    x = torch.randn(5, 2, generator=_gen())
    for level in (0, 5):
        a = float(sched.signal_prime[level + 1])
        s2 = float(est.step_sizes[level]) ** 2
        want = model(a * x, torch.full((5,), level)) / s2
        torch.testing.assert_close(est.marginal_energy(model, level)(x), want)
    for bad in (-1, 6, 1.0, True):
        with pytest.raises(ValueError, match="level"):
            est.marginal_energy(model, bad)


def _gaussian_mixture_marginals(sched, mu, w, v):
    from ebmcmc.targets import GaussianMixture

    out = []
    for t in range(sched.num_levels):
        ab, sb = float(sched.signal_bar[t]), float(sched.sigma_bar[t])
        cov = (ab**2 * v + sb**2) * torch.eye(2, dtype=torch.float64).expand(len(w), 2, 2)
        out.append(GaussianMixture(ab * mu, cov, w))
    return out


def test_drl_hierarchical_density_of_the_exact_model_is_the_data_density():
    """If every level's energy is the exact marginal of the noised data (a 0.3 / 0.7 mixture),
    each gridded conditional is the exact posterior, and the hierarchical density of x_0 is
    the data density at level 0: KL ~ 0 up to the Monte Carlo error of the ancestors
    (a mode-weight error of d costs about d^2 / (2 w (1 - w)); 1000 ancestors give
    d ~ 0.015, i.e. ~1e-3 nats; 0.01 nats is a 10x margin). A model with the level-0 mode
    weights swapped is far off (its conditionals pull x_1 near the middle to the wrong mode)."""
    from ebmcmc.evaluation import kl_to_grid_density, recovery_log_prob_on_grid

    sched = DRLSchedule(4)
    est = DiffusionRecoveryLikelihood(sched, step_size_b2=4e-3)
    s2 = est.step_sizes.float() ** 2
    mu = torch.tensor([[-0.5, 0.0], [0.5, 0.0]], dtype=torch.float64)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    margs = _gaussian_mixture_marginals(sched, mu, w, 0.06**2)

    def make(m0):
        def model(y, t):
            out = torch.empty(y.shape[0], dtype=y.dtype)
            for k in range(sched.num_levels):
                sel = t == k
                if sel.any():
                    a = float(sched.signal_prime[k + 1])
                    m = m0 if k == 0 else margs[k]
                    out[sel] = (m.energy((y[sel] / a).double()) * s2[k]).to(y.dtype)
            return out

        return model

    grid = recovery_log_prob_on_grid(est, make(margs[0]), 1.0, 120, num_ancestors=1000,
                                upper_resolution=80, generator=0)  # fmt: skip
    assert grid.log_prob.shape == (120, 120)
    kl = kl_to_grid_density(margs[0].log_prob, grid)
    assert kl < 0.01, kl
    swapped = _gaussian_mixture_marginals(sched, mu, w.flip(0), 0.06**2)[0]
    bad = recovery_log_prob_on_grid(est, make(swapped), 1.0, 120, num_ancestors=1000,
                               upper_resolution=80, generator=0)  # fmt: skip
    assert kl_to_grid_density(margs[0].log_prob, bad) > 10 * max(kl, 0.01)
