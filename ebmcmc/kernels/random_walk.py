"""Random-walk Metropolis: gradient-free, one energy evaluation per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .base import Info, Kernel, State
from .proposal import (
    check_positive,
    evaluate_like,
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

    When the incoming state carries a gradient (it comes from a gradient-based kernel it is
    composed with), the gradient at the proposal is computed in the same pass, so the state
    stays usable by that kernel.

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
        state = self._check_state(state)
        x, e = state.position, state.energy
        scale: Tensor = expand_event(
            per_chain(self.step_size, state.batch_shape, x, "step_size"), state.event_ndim
        )
        x_new = x + scale * randn_like(x, generator)
        e_new, g_new = evaluate_like(energy, x_new, state.grad is not None)
        ok = finite_batch(e_new, x_new, g_new)
        accept_prob, accepted = metropolis(e - e_new, ok, generator)
        grad = None
        if g_new is not None and state.grad is not None:
            grad = where_batch(accepted, g_new, state.grad)
        new_state = State(where_batch(accepted, x_new, x), torch.where(accepted, e_new, e), grad)
        return new_state, Info(accept_prob, accepted, ~ok, self.step_size)
