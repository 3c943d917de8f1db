"""Independence Metropolis–Hastings with a Gaussian proposal centred per chain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .base import Info, Kernel, State
from .proposal import (
    as_hyperparameter,
    check_positive,
    evaluate_like,
    expand_event,
    finite_batch,
    metropolis,
    per_chain,
    randn_like,
    sum_event,
    where_batch,
)

__all__ = ["IndependenceMetropolis"]


@dataclass(frozen=True)
class IndependenceMetropolis(Kernel):
    """Propose ``x' ~ N(center, scale^2 I)`` independently of ``x``; accept by Metropolis–Hastings.

    The acceptance ratio is ``exp(-E(x') + E(x)) q(x) / q(x')`` with ``q`` the proposal
    density, so the kernel leaves ``exp(-E)`` invariant for any centre and scale. Because the
    proposal does not depend on the current point, a chain can jump between modes that a
    gradient-based kernel cannot cross. It is useful when the target is a known Gaussian
    times something else: for DRL's recovery energy ``E / s^2 + |y - x_{t+1}|^2 /
    (2 sigma^2)``, proposing from the tether ``N(x_{t+1}, sigma^2)`` leaves only the model's
    energy difference in the ratio (see ``DiffusionRecoveryLikelihood(jump_every=...)``).
    Compose it with a local kernel (alternate steps); alone it mixes only when the proposal
    covers the target well.

    One energy evaluation per step; when the incoming state carries a gradient (it comes
    from a gradient-based kernel), the gradient at the proposal is computed in the same pass
    so the state stays usable by that kernel.

    Args:
        center: proposal means, shape ``(*batch, *event)`` (or broadcastable to it).
        scale: proposal standard deviation ``> 0``, scalar or per-chain tensor (batch shape).

    Example:
        >>> import torch
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = IndependenceMetropolis(center=torch.zeros(4, 2), scale=1.0)
        >>> s = k.init(energy, torch.full((4, 2), 3.0))
        >>> s, info = k.step(energy, s, torch.Generator().manual_seed(0))
        >>> bool(info.accept_prob.eq(1).all())  # the proposal is the target: always accepted
        True
    """

    center: Tensor | float = 0.0
    scale: float | Tensor = 1.0
    needs_grad: ClassVar[bool] = False
    default_target_accept: ClassVar[float | None] = None

    def __post_init__(self):
        check_positive("scale", self.scale)
        if not bool(torch.isfinite(as_hyperparameter("center", self.center)).all()):
            raise ValueError(f"center must be finite, got {self.center!r}")

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        state = self._check_state(state)
        x, e = state.position, state.energy
        ne = state.event_ndim
        center = torch.as_tensor(self.center, dtype=x.dtype, device=x.device).expand_as(x)
        sigma = expand_event(per_chain(self.scale, state.batch_shape, x, "scale"), ne)
        x_new = center + sigma * randn_like(x, generator)
        e_new, g_new = evaluate_like(energy, x_new, state.grad is not None)
        ok = finite_batch(e_new, x_new, g_new)

        def log_q(z):  # the proposal's log density, up to its constant
            return -0.5 * sum_event(((z - center) / sigma) ** 2, ne)

        log_ratio = (e - e_new) + (log_q(x) - log_q(x_new))
        accept_prob, accepted = metropolis(log_ratio, ok, generator)
        grad = None
        if g_new is not None and state.grad is not None:
            grad = where_batch(accepted, g_new, state.grad)
        new_state = State(where_batch(accepted, x_new, x), torch.where(accepted, e_new, e), grad)
        return new_state, Info(accept_prob, accepted, ~ok)
