"""Random-walk Metropolis: gradient-free, one energy evaluation per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..energy import evaluate
from .base import (
    Info,
    Kernel,
    State,
    check_positive,
    expand_event,
    finite_batch,
    metropolis,
    per_chain,
    randn_like,
    where_batch,
)

__all__ = ["RandomWalk"]


@dataclass(frozen=True)
class RandomWalk(Kernel):
    """Gaussian random-walk Metropolis: ``x' = x + step_size * xi``.

    Args:
        step_size: proposal scale ``> 0``, scalar or per-chain tensor (batch shape).

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import RandomWalk
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = RandomWalk(step_size=1.0)
        >>> s = k.init(energy, torch.zeros(4, 3))
        >>> s, info = k.step(energy, s, torch.Generator().manual_seed(0))
        >>> s.grad is None
        True
    """

    step_size: float | Tensor = 0.1
    needs_grad: ClassVar[bool] = False
    default_target_accept: ClassVar[float] = 0.234

    def __post_init__(self):
        check_positive("step_size", self.step_size)

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        self._validate_state(state)
        x, e = state.position, state.energy
        scale: Tensor = expand_event(
            per_chain(self.step_size, state.batch_shape, x, "step_size"), state.event_ndim
        )
        x_new = x + scale * randn_like(x, generator)
        e_new = evaluate(energy, x_new)
        ok = finite_batch(e_new, x_new)
        accept_prob, accepted = metropolis(e - e_new, ok, generator)
        new_state = State(where_batch(accepted, x_new, x), torch.where(accepted, e_new, e), None)
        return new_state, Info(accept_prob, accepted, ~ok)
