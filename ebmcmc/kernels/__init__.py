"""MCMC kernels: hyperparameters only, ``init(energy, x)`` and ``step(energy, state, generator)``,
typed states and infos, and composites that build kernels from kernels.

* single-position kernels: :class:`Langevin`, :class:`MALA`, :class:`HMC`,
  :class:`ChEES` (HMC tuned across many chains), :class:`NUTS`, :class:`RandomWalk`,
  :class:`IndependenceMetropolis`;
* composites: :class:`Cycle` (kernels in turn), :class:`Masked` (some coordinates:
  conditional sampling, Gibbs blocks), :class:`ChainMask` (some chains),
  :class:`ReplicaExchange` (tempering), :class:`LevelGibbs` (Gibbs over a discrete level);
* shared pieces: :mod:`~ebmcmc.kernels.integrators` (leapfrog, Langevin steps, kinetic
  energy) and :mod:`~ebmcmc.kernels.proposal` (Metropolis accept, finite masks, per-chain
  hyperparameters).

Example:
    >>> import torch
    >>> from ebmcmc.kernels import MALA
    >>> energy = lambda x: 0.5 * (x**2).sum(-1)
    >>> k = MALA(step_size=0.5)
    >>> state = k.init(energy, torch.zeros(4, 2))
    >>> state, info = k.step(energy, state, torch.Generator().manual_seed(1))
"""

from .base import ChainState, Info, Kernel, State
from .chees import ChEES, ChEESInfo, ChEESState
from .composite import (
    ChainMask,
    ChainMaskInfo,
    Cycle,
    CycleInfo,
    CycleState,
    Masked,
    MaskedInfo,
    MaskedState,
)
from .hmc import HMC, HMCInfo
from .independence import IndependenceMetropolis
from .langevin import MALA, Langevin
from .level_gibbs import LevelGibbs, LevelInfo, LevelState
from .nuts import NUTS, NUTSInfo
from .random_walk import RandomWalk
from .replica_exchange import ReplicaExchange, ReplicaInfo, ReplicaState

__all__ = [
    "Kernel",
    "ChainState",
    "State",
    "Info",
    "Langevin",
    "MALA",
    "HMC",
    "HMCInfo",
    "NUTS",
    "NUTSInfo",
    "ChEES",
    "ChEESState",
    "ChEESInfo",
    "RandomWalk",
    "IndependenceMetropolis",
    "Cycle",
    "CycleState",
    "CycleInfo",
    "Masked",
    "MaskedState",
    "MaskedInfo",
    "ChainMask",
    "ChainMaskInfo",
    "ReplicaExchange",
    "ReplicaState",
    "ReplicaInfo",
    "LevelGibbs",
    "LevelState",
    "LevelInfo",
]
