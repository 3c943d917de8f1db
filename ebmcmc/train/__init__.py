"""Training: a small trainer any estimator plugs into, data-parallel runs under ``torchrun``,
and bf16 / ``torch.compile`` wrappers.

Example:
    >>> import torch
    >>> from ebmcmc.estimators import ContrastiveDivergence
    >>> from ebmcmc.kernels import Langevin
    >>> from ebmcmc.nn import TimeMLP
    >>> from ebmcmc.train import TrainConfig, Trainer
    >>> tr = Trainer(TimeMLP(2, hidden=8), ContrastiveDivergence(Langevin(0.01), 2),
    ...              torch.randn(64, 2), TrainConfig(batch_size=16), progress=False)
    >>> tr.fit(3)[-1]["step"]
    3
"""

from .distributed import DistributedContext, DistributedTrainer
from .precision import AutocastEnergy, WrappedEstimator, autocast_wrapper
from .trainer import ParamGroup, TrainConfig, Trainer, load_checkpoint, save_atomic

__all__ = [
    "ParamGroup",
    "TrainConfig",
    "Trainer",
    "save_atomic",
    "load_checkpoint",
    "DistributedContext",
    "DistributedTrainer",
    "AutocastEnergy",
    "autocast_wrapper",
    "WrappedEstimator",
]
