"""Warm-up adaptation, its own layer between the kernels and the driver.

Pure building blocks over floats and tensors — dual averaging
(:func:`dual_averaging_init` / :func:`dual_averaging_update` / :func:`dual_averaging_final`),
Welford variances (:func:`welford_init` / :func:`welford_update` / :func:`welford_variance`)
and covariances (:func:`welford_covariance_update` / :func:`welford_covariance`),
Stan's windows (:func:`warmup_schedule`) — and :class:`WindowAdaptation`, which applies them
to any kernel, or to the inner kernels of a composite, by one rule
(:mod:`ebmcmc.adaptation.tuning`): it tunes the ``step_size`` and ``inverse_mass_matrix`` of
every leaf kernel, and a value is shared or per chain as its shape says.

Example:
    >>> import torch, ebmcmc
    >>> from ebmcmc.kernels import HMC
    >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), HMC(1.0, 5), torch.zeros(16, 3),
    ...                    50, num_warmup=200, adaptation=WindowAdaptation(), generator=0,
    ...                    progress=False)
    >>> 0.1 < float(tr.kernel.step_size) < 2.0
    True
"""

from .dual_averaging import (
    DualAveraging,
    DualAveragingState,
    dual_averaging_final,
    dual_averaging_init,
    dual_averaging_update,
)
from .level_steps import LEVEL_STEP_RULES, LevelStepAdaptation
from .tuning import Leaf, kernel_at, leaves, pool_dims, replace_at
from .welford import (
    Welford,
    WelfordState,
    welford_covariance,
    welford_covariance_update,
    welford_init,
    welford_update,
    welford_variance,
)
from .window_adaptation import Adapter, WindowAdaptation
from .windows import warmup_schedule

__all__ = [
    "WindowAdaptation",
    "Adapter",
    "DualAveraging",
    "DualAveragingState",
    "dual_averaging_init",
    "dual_averaging_update",
    "dual_averaging_final",
    "Welford",
    "WelfordState",
    "welford_init",
    "welford_update",
    "welford_variance",
    "welford_covariance_update",
    "welford_covariance",
    "warmup_schedule",
    "LevelStepAdaptation",
    "LEVEL_STEP_RULES",
    "Leaf",
    "leaves",
    "kernel_at",
    "replace_at",
    "pool_dims",
]
