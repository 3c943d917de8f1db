"""Training estimators: ``loss(model, batch, generator) -> LossOutput``, interchangeable in
any PyTorch training loop.

Example:
    >>> import torch
    >>> from ebmcmc.estimators import DiffusionRecoveryLikelihood
    >>> from ebmcmc.diffusion import DRLSchedule
    >>> est = DiffusionRecoveryLikelihood(DRLSchedule(6))
    >>> est.num_langevin_steps
    30
"""

from .base import Estimator, LossOutput
from .contrastive import (
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    ShortRunML,
    uniform_noise,
)
from .daebm import GENERATION_RULES, DAEBMSamples, DiffusionAssistedEBM
from .recovery import DiffusionRecoveryLikelihood, RecoveryEnergy

__all__ = [
    "Estimator",
    "LossOutput",
    "DiffusionRecoveryLikelihood",
    "RecoveryEnergy",
    "ContrastiveDivergence",
    "ShortRunML",
    "PersistentContrastiveDivergence",
    "uniform_noise",
    "DiffusionAssistedEBM",
    "DAEBMSamples",
    "GENERATION_RULES",
]
