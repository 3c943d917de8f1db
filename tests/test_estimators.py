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
    est = DiffusionRecoveryLikelihood(DRLSchedule(6), langevin_steps=3)
    out = est.loss(model, torch.randn(32, 2, generator=_gen()), _gen(1))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert not out.negatives.requires_grad and out.negatives.shape == (32, 2)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert set(out.stats) >= {"e_pos", "e_neg"}


def test_drl_langevin_step_matches_paper_update():
    """One step: y' = y - (s^2/2) grad E_cond + lambda * s * xi (algorithms.md section 1)."""
    sched = DRLSchedule(6)
    model = TimeMLP(2, hidden=16, num_levels=6)
    est = DiffusionRecoveryLikelihood(sched, langevin_steps=1, noise_scale=0.7)
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
    est = DiffusionRecoveryLikelihood(DRLSchedule(6), langevin_steps=2)
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
        lambda: ContrastiveDivergence(Langevin(0.01), steps=3),
        lambda: ShortRunML(Langevin(0.01), steps=3),
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
        DiffusionRecoveryLikelihood(DRLSchedule(6), langevin_steps=0)
    with pytest.raises(TypeError, match="schedule"):
        DiffusionRecoveryLikelihood(object())
    with pytest.raises(ValueError, match="steps"):
        ContrastiveDivergence(Langevin(0.01), steps=0)
    with pytest.raises(ValueError, match="init"):
        ContrastiveDivergence(Langevin(0.01), steps=1, init="bogus")
    with pytest.raises(ValueError, match="reinit_prob"):
        PersistentContrastiveDivergence(Langevin(0.01), 1, reinit_prob=2.0)
