"""The quoted configurations of ebmcmc.toy build what they say."""

from __future__ import annotations

import pytest
import torch

from ebmcmc.app.setups import digits_setup
from ebmcmc.estimators import DiffusionRecoveryLikelihood
from ebmcmc.kernels import MALA, Langevin


def test_digits_setup_passes_drl_options_through():
    s = digits_setup("drl", hidden=16, num_langevin_steps=7, b2=4e-3, loss_weight="likelihood",
                     jump_every=2, metropolis=True)  # fmt: skip
    est = s.estimator
    assert isinstance(est, DiffusionRecoveryLikelihood)
    assert (est.num_langevin_steps, est.b2, est.jump_every, est.metropolis) == (7, 4e-3, 2, True)
    sched = est.schedule
    # likelihood weights: s_0^2 / s_t^2
    steps = sched.step_size(4e-3)
    torch.testing.assert_close(est.loss_weight, (steps[0] / steps) ** 2)
    t = torch.zeros(3, dtype=torch.long)
    assert isinstance(est.kernel(t, torch.zeros(3, 64)), MALA)
    # the paper's defaults: b^2 = 2e-4, K = 30, unadjusted Langevin, no jumps
    d = digits_setup("drl", hidden=16).estimator
    assert (d.num_langevin_steps, d.b2, d.jump_every, d.metropolis) == (30, 2e-4, 0, False)
    assert isinstance(d.kernel(t, torch.zeros(3, 64)), Langevin)
    x = s.generate(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 64) and bool(((x >= -1) & (x <= 1)).all())


def test_digits_setup_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="estimator must be one of"):
        digits_setup("gan")
