"""DRL learns eight Gaussians: a short CPU run that an untrained model fails.

The run is a shortened version of the 2-D configuration of :func:`ebmcmc.toy.toy_setup`
(the one ``examples/toy2d.py`` and the issue's 10-minute acceptance run use): 300 steps
instead of thousands, about 1 minute on one loaded CPU core.

The figure is KL(data ‖ model) in nats of the level-0 EBM, normalised on a 300 x 300 grid
(exact up to the grid), against the data with level 0's noise.

Why KL_BOUND = 0.6. Reference values of this KL (computed once with the same grid): a ring
of the right radius and width with uniform angle 1.32 (what an MLP without Fourier features
plateaus at, measured 1.36 - 1.46 after thousands of steps); the right eight modes with
weights (0.3, 0.1, ...) drawn at random 0.2 - 0.5; the untrained (flat) model about 5. The
run reaches 0.2 - 0.3 at 300 steps. A KL below 0.6 therefore says the model has the eight
angular modes, not just the ring; the acceptance figure (KL <= 0.1 within 10 minutes) is
measured by ``examples/toy2d.py`` and reported in ``docs/training.md``.
"""

from __future__ import annotations

import pytest
import torch

from ebmcmc import datasets as D
from ebmcmc.app.setups import toy_setup
from ebmcmc.evaluation import kl_on_grid
from ebmcmc.train import Trainer

KL_BOUND = 0.6
STEPS = 300


def _kl(setup, model) -> float:
    target = D.eight_gaussians_target(setup.noise_std)
    return kl_on_grid(target.log_prob, lambda x: setup.energy(x, model), 3.0, 300,
                      dtype=torch.float32)  # fmt: skip


@pytest.mark.slow
def test_drl_learns_eight_gaussians():
    setup = toy_setup("drl", seed=0)
    train = D.eight_gaussians(20000, 0) / setup.scale
    trainer = Trainer(setup.model, setup.estimator, train, setup.config, seed=0, progress=False)
    untrained = _kl(setup, trainer.ema_model)
    assert untrained > 3 * KL_BOUND, f"the bound is too loose: untrained KL {untrained:.3g}"
    trainer.fit(STEPS)
    trained = _kl(setup, trainer.ema_model)
    assert trained <= KL_BOUND, f"trained KL {trained:.3g} > {KL_BOUND}"


# ----------------------------------------------------------------------------- CDRL
#: CDRL's bound on the MMD ratio of generated samples (squared MMD to held-out data over the
#: mean squared MMD between independent data sets of the same size; 1 = as good as data).
#: Reference values, computed once with the same statistic: a ring of the right radius and
#: width with uniform angle 14, seven of the eight modes 17, the eight modes with weights
#: (0.3, 0.1, 0.2, 0.05, ...) 39, one Gaussian blob 56, the right modes twice as wide 3.9;
#: the untrained set-up about 450. The run below reaches 3.7 (network seeds 1, 2: 4.2, 3.2).
CDRL_MMD_BOUND = 6.0
CDRL_STEPS = 400


def _mmd_ratio(setup, model, n=2000) -> float:
    from ebmcmc.evaluation import mmd

    ref = D.eight_gaussians(n, 5)
    floor = sum(float(mmd(ref, D.eight_gaussians(n, 6 + k), unbiased=False)) for k in range(4))
    gen = setup.generate(n, torch.Generator().manual_seed(1), model)
    return float(mmd(ref, gen, unbiased=False)) / (floor / 4)


@pytest.mark.slow
def test_cdrl_learns_eight_gaussians():
    """toy_setup("cdrl") (K = 8, b^2 = 4e-4, batch 128), 400 steps: about 40-80 s on one
    loaded CPU core. CDRL's sampler always starts from its initializer, so the figure is the
    quality of generated samples, not the level-0 density (see the set-up's docstring)."""
    setup = toy_setup("cdrl", seed=0, decay_at=int(0.8 * CDRL_STEPS))
    train = D.eight_gaussians(20000, 0) / setup.scale
    trainer = Trainer(setup.model, setup.estimator, train, setup.config, seed=0, progress=False)
    untrained = _mmd_ratio(setup, trainer.ema_model)
    assert untrained > 3 * CDRL_MMD_BOUND, f"the bound is too loose: untrained {untrained:.3g}"
    trainer.fit(CDRL_STEPS)
    trained = _mmd_ratio(setup, trainer.ema_model)
    print(f"CDRL eight Gaussians: MMD ratio {untrained:.3g} untrained -> {trained:.3g}")
    assert trained <= CDRL_MMD_BOUND, f"trained MMD ratio {trained:.3g} > {CDRL_MMD_BOUND}"
