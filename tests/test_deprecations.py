"""Every name moved or renamed in 0.2 keeps working for one release, with a
``DeprecationWarning`` that names the new spelling (docs/architecture.md lists them)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("ebmcmc.data", "ebmcmc.datasets", "toy_dataset"),
        ("ebmcmc.metrics", "ebmcmc.evaluation", "mmd"),
        ("ebmcmc.toy", "ebmcmc.app.setups", "toy_setup"),
        ("ebmcmc.demo", "ebmcmc.app.demo", "run_demo"),
        ("ebmcmc.cli", "ebmcmc.app.cli", "main"),
    ],
)
def test_moved_modules_warn_and_reexport(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"use {new}"):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)


def test_rings_target_is_now_targets_rings():
    sys.modules.pop("ebmcmc.data", None)
    with pytest.warns(DeprecationWarning):
        from ebmcmc.data import RingsTarget
    from ebmcmc.targets import Rings

    assert RingsTarget is Rings


@pytest.mark.parametrize("name", ["stability", "StabilityResult", "report_stability"])
def test_diagnostics_stability_names_moved_to_studies(name):
    import ebmcmc.diagnostics as d
    import ebmcmc.studies as s

    with pytest.warns(DeprecationWarning, match=f"ebmcmc.studies.{name}"):
        assert getattr(d, name) is getattr(s, name)
    with pytest.raises(AttributeError):
        d.no_such_name  # noqa: B018


def test_hmc_num_steps_is_num_leapfrog_steps():
    from ebmcmc.kernels import HMC

    with pytest.warns(DeprecationWarning, match="num_leapfrog_steps"):
        k = HMC(0.1, num_steps=7)
    assert k.num_leapfrog_steps == 7 and k == HMC(0.1, num_leapfrog_steps=7)
    with pytest.raises(TypeError, match="num_leapfrog_steps= only"):
        HMC(0.1, num_leapfrog_steps=5, num_steps=7)
    # replace() keeps the value without a warning
    assert k.replace(step_size=0.2).num_leapfrog_steps == 7


def test_estimator_step_counts_renamed():
    from ebmcmc.diffusion import DRLSchedule
    from ebmcmc.estimators import (
        ContrastiveDivergence,
        DiffusionRecoveryLikelihood,
        PersistentContrastiveDivergence,
        ShortRunML,
    )
    from ebmcmc.kernels import Langevin

    with pytest.warns(DeprecationWarning, match="num_langevin_steps"):
        drl = DiffusionRecoveryLikelihood(DRLSchedule(6), langevin_steps=4)
    assert drl.num_langevin_steps == 4
    with pytest.warns(DeprecationWarning, match="num_langevin_steps"):
        assert drl.langevin_steps == 4
    for cls in (ContrastiveDivergence, ShortRunML, PersistentContrastiveDivergence):
        with pytest.warns(DeprecationWarning, match="num_mcmc_steps"):
            est = cls(Langevin(0.01), steps=3)
        assert est.num_mcmc_steps == 3
    with pytest.warns(DeprecationWarning, match="num_mcmc_steps"):
        assert est.steps == 3


def test_drl_sample_conditional_num_steps_renamed():
    from ebmcmc.diffusion import DRLSchedule
    from ebmcmc.estimators import DiffusionRecoveryLikelihood

    est = DiffusionRecoveryLikelihood(DRLSchedule(3))
    model = lambda y, t: 0.5 * (y**2).sum(-1)  # noqa: E731
    t, x = torch.tensor([0, 1]), torch.zeros(2, 2)
    g = torch.Generator
    new = est.sample_conditional(model, t, x, g().manual_seed(0), num_langevin_steps=2)
    with pytest.warns(DeprecationWarning, match="num_langevin_steps"):
        old = est.sample_conditional(model, t, x, g().manual_seed(0), num_steps=2)
    assert torch.equal(old, new)


def test_setups_k_is_num_langevin_steps():
    from ebmcmc.app.setups import toy_setup

    with pytest.warns(DeprecationWarning, match="num_langevin_steps"):
        s = toy_setup("drl", hidden=8, K=3)
    assert s.estimator.num_langevin_steps == 3
    with pytest.raises(TypeError, match="unexpected"):
        toy_setup("drl", hidden=8, KK=3)


def test_log_prob_on_grid_moved_to_evaluation():
    from ebmcmc.diffusion import DRLSchedule
    from ebmcmc.estimators import DiffusionRecoveryLikelihood
    from ebmcmc.evaluation import recovery_log_prob_on_grid

    est = DiffusionRecoveryLikelihood(DRLSchedule(2), step_size_b2=1e-2)
    s2 = est.step_sizes**2
    model = lambda y, t: 0.5 * (y**2).sum(-1) * s2[t]  # noqa: E731
    new = recovery_log_prob_on_grid(est, model, 3.0, 20, num_ancestors=50, generator=0)
    with pytest.warns(DeprecationWarning, match="recovery_log_prob_on_grid"):
        old = est.log_prob_on_grid(model, 3.0, 20, num_ancestors=50, generator=0)
    assert torch.equal(old.log_prob, new.log_prob)


def test_one_generator_rule():
    """None is a fresh generator everywhere (never torch's global one)."""
    from ebmcmc import make_generator
    from ebmcmc.datasets import toy_dataset

    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    toy_dataset("rings", 5)  # generator=None: a fresh generator, the global state untouched
    assert torch.equal(torch.random.get_rng_state(), state)
    assert make_generator(None) is not make_generator(None)
    with pytest.raises(TypeError, match="generator"):
        make_generator(True)
