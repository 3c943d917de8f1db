"""Composite kernels against exact answers: Masked samples the conditional of the free
coordinates, a Cycle of Masked blocks samples the joint, a Cycle of HMC and random walk keeps a
mixture invariant. Tolerances are 4 Monte Carlo standard errors (ArviZ's MCSE of the mean, on
the draws or on their centred products for covariances), with R-hat < 1.01."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ebmcmc
from ebmcmc.diagnostics import summary
from ebmcmc.kernels import HMC, MALA, Cycle, Masked, RandomWalk
from ebmcmc.targets import Gaussian, GaussianMixture

DT = torch.float64
# a 4-D Gaussian with strong correlations between the free and the fixed coordinates
MU = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=DT)
A = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0], [0.3, -0.5, 0.8, 0.0], [0.2, 0.4, 0.3, 0.7]],
    dtype=DT,
)
SIGMA = A @ A.T
TARGET = Gaussian(MU, SIGMA)


def _conditional(free: torch.Tensor, value: torch.Tensor):
    """Exact mean and covariance of x[free] given x[~free] = value[~free]."""
    a, b = free, ~free
    s_ab = SIGMA[a][:, b]
    s_bb_inv = torch.linalg.inv(SIGMA[b][:, b])
    mean = MU[a] + s_ab @ s_bb_inv @ (value[b] - MU[b])
    cov = SIGMA[a][:, a] - s_ab @ s_bb_inv @ s_ab.T
    return mean, cov


def _check_moments(draws: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = 4.0):
    """Means and (co)variances within z MCSE, R-hat < 1.01. ``draws``: (chain, draw, d)."""
    d = draws.shape[-1]
    arrays = {f"x{i}": draws[..., i].numpy() for i in range(d)}
    centred = draws - mean
    for i in range(d):
        for j in range(i, d):
            arrays[f"c{i}{j}"] = (centred[..., i] * centred[..., j]).numpy()
    table = summary(arrays)
    assert float(table["r_hat"].max()) < 1.01, table
    for i in range(d):
        row = table.loc[f"x{i}"]
        err = (row["mean"] - float(mean[i])) / row["mcse_mean"]
        assert abs(err) < z, (
            f"mean of x{i}: {row['mean']:.4f} vs {float(mean[i]):.4f} ({err:+.2f} MCSE)"
        )
        for j in range(i, d):
            row = table.loc[f"c{i}{j}"]
            err = (row["mean"] - float(cov[i, j])) / row["mcse_mean"]
            assert abs(err) < z, (
                f"cov[{i},{j}]: {row['mean']:.4f} vs {float(cov[i, j]):.4f} ({err:+.2f} MCSE)"
            )


def test_masked_mala_recovers_the_exact_conditional():
    free = torch.tensor([True, False, True, False])
    value = torch.tensor([0.0, 0.3, 0.0, 2.5], dtype=DT)
    x0 = value.expand(64, 4).clone()
    tr = ebmcmc.sample(TARGET, Masked(MALA(0.5), free), x0, 2000, num_warmup=500, generator=0,
                       progress=False)  # fmt: skip
    assert torch.equal(tr.draws[..., ~free], value[~free].expand(64, 2000, 2))  # never moved
    mean, cov = _conditional(free, value)
    _check_moments(tr.draws[..., free], mean, cov)


def test_masked_check_fails_for_the_marginal():
    """The same moments test rejects the wrong answer: the draws are not the marginal."""
    free = torch.tensor([True, False, True, False])
    value = torch.tensor([0.0, 0.3, 0.0, 2.5], dtype=DT)
    tr = ebmcmc.sample(TARGET, Masked(MALA(0.5), free), value.expand(64, 4).clone(), 2000,
                       num_warmup=500, generator=0, progress=False)  # fmt: skip
    with pytest.raises(AssertionError, match="MCSE"):
        _check_moments(tr.draws[..., free], MU[free], SIGMA[free][:, free])


def test_per_chain_masks_with_different_free_counts():
    """Half the chains free coordinates {0, 2}, half only {3}: each half samples its own exact
    conditional (the shorter chains carry a padded standard-normal slot)."""
    n = 64
    value = torch.tensor([0.0, 0.3, 0.0, 2.5], dtype=DT)
    m1 = torch.tensor([True, False, True, False])
    m2 = torch.tensor([False, False, False, True])
    mask = torch.stack([m1] * (n // 2) + [m2] * (n // 2))
    x0 = value.expand(n, 4).clone()
    tr = ebmcmc.sample(TARGET, Masked(HMC(0.3, 8), mask), x0, 1500, num_warmup=500,
                       generator=1, progress=False)  # fmt: skip
    a, b = tr.draws[: n // 2], tr.draws[n // 2 :]
    assert torch.equal(a[..., ~m1], value[~m1].expand(n // 2, 1500, 2))
    assert torch.equal(b[..., ~m2], value[~m2].expand(n // 2, 1500, 3))
    _check_moments(a[..., m1], *_conditional(m1, value))
    _check_moments(b[..., m2], *_conditional(m2, value))


def test_cycle_of_masked_blocks_recovers_the_joint():
    """Gibbs blocks {0, 1} and {2, 3}, each moved by HMC given the other: the joint."""
    m = torch.tensor([True, True, False, False])
    k = Cycle(Masked(HMC(0.3, 5, jitter=0.5), m), Masked(HMC(0.3, 5, jitter=0.5), ~m))
    x0 = TARGET.sample(32, generator=2)
    tr = ebmcmc.sample(TARGET, k, x0, 1200, num_warmup=300, generator=3, progress=False)
    _check_moments(tr.draws, MU, SIGMA)


def test_cycle_of_hmc_and_random_walk_keeps_a_mixture_invariant():
    """From exact draws of a two-component mixture, Cycle(HMC, RandomWalk) keeps the weights,
    the means and the variance: 4,000 independent chains after 20 steps, checked with the
    standard errors of iid draws."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=DT)
    mix = GaussianMixture(means, 0.5 * torch.eye(2, dtype=DT), torch.tensor([0.3, 0.7], dtype=DT))
    n = 4000
    x = mix.sample(n, generator=4)
    k = Cycle(HMC(0.3, 5), RandomWalk(0.7))
    g = torch.Generator().manual_seed(5)
    s = k.init(mix, x)
    for _ in range(20):
        s, _ = k.step(mix, s, g)
    y = s.position
    right = (y[:, 0] > 0).to(DT)
    p = 0.7  # the mass of the right-hand component (the left one's tail past 0 is 2e-3)
    p_exact = float(
        0.3 * 0.5 * math.erfc(2 / math.sqrt(2 * 0.5)) + 0.7 * (1 - 0.5 * math.erfc(2 / 1.0))
    )
    assert abs(p - p_exact) < 0.01
    z_w = (right.mean() - p_exact) / math.sqrt(p_exact * (1 - p_exact) / n)
    assert abs(float(z_w)) < 4
    mean = mix.mean.to(DT)
    sd = mix.cov.diagonal().sqrt()
    z_m = (y.mean(0) - mean) / (sd / math.sqrt(n))
    assert z_m.abs().max() < 4, z_m
    assert not torch.equal(y, x)


def test_masked_needs_a_free_coordinate_and_a_bool_mask():
    with pytest.raises(ValueError, match="at least one"):
        Masked(MALA(0.1), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        Masked(MALA(0.1), torch.ones(3))
    k = Masked(MALA(0.1), torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="neither the event shape"):
        k.init(TARGET, torch.zeros(5, 4, dtype=DT))
    per_chain = torch.tensor([[True, False, False, False], [False, False, False, False]])
    with pytest.raises(ValueError, match="every chain"):
        Masked(MALA(0.1), per_chain).init(TARGET, torch.zeros(2, 4, dtype=DT))


def test_cycle_validates_its_arguments():
    with pytest.raises(ValueError, match="at least one kernel"):
        Cycle()
    with pytest.raises(TypeError, match="Kernel"):
        Cycle(MALA(0.1), "hmc")
    with pytest.raises(ValueError, match="every"):
        Cycle(MALA(0.1), RandomWalk(1.0), every=(1,))
    with pytest.raises(ValueError, match="every"):
        Cycle(MALA(0.1), RandomWalk(1.0), every=(1, 0))
    k = Cycle(MALA(0.1), RandomWalk(1.0), every=(1, 3))
    assert k.replace(every=(2, 3)).kernels == k.kernels


def test_cycle_every_applies_each_kernel_on_its_own_schedule():
    k = Cycle(MALA(0.2), RandomWalk(0.5), every=(1, 3))
    s = k.init(TARGET, torch.zeros(4, 4, dtype=DT))
    g = torch.Generator().manual_seed(0)
    applied = []
    for _ in range(6):
        s, info = k.step(TARGET, s, g)
        applied.append([i is not None for i in info.inners])
    assert applied == [[True, False], [True, False], [True, True]] * 2
    assert s.count == 6


def test_masked_inpainting_keeps_the_known_pixels_of_an_image_energy():
    """Masked on image-shaped events (1, 4, 4): the known pixels never move."""
    energy = lambda x: 0.5 * (x**2).flatten(1).sum(-1)  # noqa: E731
    known = torch.zeros(1, 4, 4, dtype=torch.bool)
    known[:, :2] = True  # the top half is known
    x0 = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    tr = ebmcmc.sample(energy, Masked(MALA(0.5), ~known), x0, 50, generator=1, progress=False)
    assert torch.equal(tr.draws[:, :, :, :2], x0[:, None, :, :2].expand(8, 50, 1, 2, 4))
    assert not torch.equal(tr.draws[:, -1, :, 2:], x0[:, :, 2:])
    np.testing.assert_allclose(tr.stats["energy"][:, -1].numpy(),
                               energy(tr.draws[:, -1]).numpy())  # fmt: skip
