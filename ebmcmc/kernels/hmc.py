"""Hamiltonian Monte Carlo with a leapfrog integrator and a diagonal mass matrix."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import check_real
from .._deprecation import warn_deprecated
from .base import Info, Kernel, State, inverse_mass
from .integrators import kinetic_energy, leapfrog, leapfrog_per_chain, sample_momentum
from .proposal import (
    as_hyperparameter,
    check_positive,
    expand_event,
    finite_batch,
    metropolis,
    per_chain,
    rand_batch,
    where_batch,
)

__all__ = ["HMC", "HMCInfo"]


@dataclass
class HMCInfo(Info):
    """What one HMC transition did, per chain (shape ``batch``).

    Attributes:
        accept_prob: ``min(1, exp(-(H' - H)))`` (0 for diverging trajectories).
        accepted: whether the trajectory's end was taken.
        diverging: the energy error exceeded the threshold or a value turned non-finite.
        step_size: the step size each chain used (after jitter).
        energy_error: ``H' - H``, the Hamiltonian's change along the trajectory.
        num_integration_steps: leapfrog steps taken (per chain).

    Example:
        >>> import torch
        >>> i = HMCInfo(torch.ones(2), torch.ones(2, dtype=torch.bool),
        ...             torch.zeros(2, dtype=torch.bool), 0.1, torch.zeros(2), torch.full((2,), 5))
        >>> i.num_integration_steps.tolist()
        [5, 5]
    """

    energy_error: Tensor | None = None
    num_integration_steps: Tensor | None = None


@dataclass(frozen=True)
class HMC(Kernel):
    """Hamiltonian Monte Carlo: ``num_leapfrog_steps`` leapfrog steps, then a Metropolis
    correction.

    Momentum ``p ~ N(0, M)`` with diagonal ``M = 1 / inverse_mass_matrix``; kinetic energy
    ``K(p) = 0.5 * sum(inverse_mass_matrix * p**2)``. A trajectory whose Hamiltonian error
    exceeds ``divergence_threshold`` or turns non-finite is rejected and flagged diverging.
    One step costs ``num_leapfrog_steps`` energy+gradient evaluations.

    Args:
        step_size: leapfrog step ``> 0``, scalar or per-chain tensor (batch shape).
        num_leapfrog_steps: leapfrog steps per transition, int ``>= 1`` or per-chain integer
            tensor.
        inverse_mass_matrix: diagonal of ``M^{-1}``, shape ``event`` or ``(*batch, *event)``;
            ``None`` means the identity.
        divergence_threshold: Hamiltonian error beyond which a trajectory counts as divergent.
        jitter: each transition multiplies every chain's step size by an independent draw from
            ``Uniform(1 - jitter, 1 + jitter)`` (``0 <= jitter < 1``; 0 = off). A random
            trajectory length breaks the resonances of a fixed one (e.g. on Gaussians, where
            some directions return to their start) and keeps the kernel exact.
        num_steps: deprecated spelling of ``num_leapfrog_steps`` (removed in 0.3).

    Info: :class:`HMCInfo` (energy error and leapfrog steps per chain).

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import HMC
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = HMC(step_size=0.3, num_leapfrog_steps=5)
        >>> s = k.init(energy, torch.zeros(16, 2))
        >>> s, info = k.step(energy, s, torch.Generator().manual_seed(0))
        >>> s.position.shape, info.accepted.shape
        (torch.Size([16, 2]), torch.Size([16]))
    """

    step_size: float | Tensor = 0.1
    num_leapfrog_steps: int | Tensor = 10
    inverse_mass_matrix: Tensor | None = None
    divergence_threshold: float = 1000.0
    jitter: float = 0.0
    num_steps: InitVar[int | Tensor | None] = None
    default_target_accept: ClassVar[float] = 0.8

    def __post_init__(self, num_steps=None):
        if num_steps is not None:
            if not (isinstance(self.num_leapfrog_steps, int) and self.num_leapfrog_steps == 10):
                raise TypeError("give num_leapfrog_steps= only (num_steps= is its old spelling)")
            warn_deprecated("HMC(num_steps=...)", "HMC(num_leapfrog_steps=...)")
            object.__setattr__(self, "num_leapfrog_steps", num_steps)
        check_positive("step_size", self.step_size)
        n = as_hyperparameter("num_leapfrog_steps", self.num_leapfrog_steps)
        if n.is_floating_point() or bool((n < 1).any()) or n.numel() == 0:
            raise ValueError(
                f"num_leapfrog_steps must be an integer >= 1, got {self.num_leapfrog_steps!r}"
            )
        self._check_tensor_field("inverse_mass_matrix")
        check_positive("divergence_threshold", self.divergence_threshold)
        check_real("jitter", self.jitter, 0, 1, high_open=True)

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        """Energy+gradient evaluations per transition (the largest ``num_leapfrog_steps``)."""
        return int(torch.as_tensor(self.num_leapfrog_steps).max())

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        state = self._check_state(state)
        x0, e0, g0 = state.position, state.energy, state.grad
        assert g0 is not None
        bs, ne = state.batch_shape, state.event_ndim
        eps_b = per_chain(self.step_size, bs, x0, "step_size")
        if self.jitter:
            u = rand_batch(bs, x0, generator)
            eps_b = eps_b * (1 + self.jitter * (2 * u - 1))
        eps = expand_event(eps_b, ne)
        inv_m = inverse_mass(self.inverse_mass_matrix, x0)
        p0 = sample_momentum(x0, inv_m, generator)
        k0 = kinetic_energy(p0, inv_m, ne)
        n = torch.as_tensor(self.num_leapfrog_steps)
        if n.numel() == 1:
            # Lean path: a non-finite value anywhere on the trajectory propagates into the
            # final state and Hamiltonian error, so one check per transition suffices.
            x, p, e, g = leapfrog(energy, x0, p0, g0, eps, int(n), inv_m)
            h_err = (e + kinetic_energy(p, inv_m, ne)) - (e0 + k0)
            diverging = ~finite_batch(h_err, x, g) | (h_err > self.divergence_threshold)
            steps = n.to(x0.device).expand(bs)
        else:
            try:
                steps = torch.broadcast_to(n.to(x0.device), bs)
            except RuntimeError as err:
                raise ValueError(
                    f"num_leapfrog_steps of shape {tuple(n.shape)} does not broadcast to the "
                    f"chains' batch shape {tuple(bs)}"
                ) from err
            x, p, e, g, alive = leapfrog_per_chain(energy, x0, p0, e0, g0, eps, steps, inv_m)
            h_err = (e + kinetic_energy(p, inv_m, ne)) - (e0 + k0)
            diverging = ~alive | ~torch.isfinite(h_err) | (h_err > self.divergence_threshold)
        accept_prob, accepted = metropolis(-h_err, ~diverging, generator)
        new_state = State(
            where_batch(accepted, x, x0), torch.where(accepted, e, e0), where_batch(accepted, g, g0)
        )
        info = HMCInfo(accept_prob, accepted, diverging, eps_b, h_err, steps)
        return new_state, info
