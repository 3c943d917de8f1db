"""MCMC kernels: hyperparameters only, ``init(energy, x)`` and ``step(energy, state, generator)``.

Example:
    >>> import torch
    >>> from ebmcmc.kernels import MALA
    >>> energy = lambda x: 0.5 * (x**2).sum(-1)
    >>> k = MALA(step_size=0.5)
    >>> state = k.init(energy, torch.zeros(4, 2))
    >>> state, info = k.step(energy, state, torch.Generator().manual_seed(1))
"""

from .base import Info, Kernel, State
from .hmc import HMC
from .independence import IndependenceMetropolis
from .langevin import MALA, Langevin
from .level_gibbs import LevelGibbs, LevelState
from .random_walk import RandomWalk
from .replica_exchange import ReplicaExchange, ReplicaState

__all__ = [
    "Kernel",
    "State",
    "Info",
    "Langevin",
    "MALA",
    "HMC",
    "RandomWalk",
    "IndependenceMetropolis",
    "ReplicaExchange",
    "ReplicaState",
    "LevelGibbs",
    "LevelState",
]
