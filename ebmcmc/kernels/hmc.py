"""Hamiltonian Monte Carlo with a leapfrog integrator and a diagonal mass matrix."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._deprecation import warn_deprecated
from ..energy import energy_and_grad
from .base import (
    Info,
    Kernel,
    State,
    check_positive,
    expand_event,
    finite_batch,
    metropolis,
    per_chain,
    rand_batch,
    randn_like,
    where_batch,
)

__all__ = ["HMC"]


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
    adaptable: ClassVar[tuple[str, ...]] = ("step_size", "inverse_mass_matrix")

    def __post_init__(self, num_steps=None):
        if num_steps is not None:
            if not (isinstance(self.num_leapfrog_steps, int) and self.num_leapfrog_steps == 10):
                raise TypeError("give num_leapfrog_steps= only (num_steps= is its old spelling)")
            warn_deprecated("HMC(num_leapfrog_steps=...)", "HMC(num_leapfrog_steps=...)")
            object.__setattr__(self, "num_leapfrog_steps", num_steps)
        check_positive("step_size", self.step_size)
        n = torch.as_tensor(self.num_leapfrog_steps)
        if n.is_floating_point() or n.is_complex() or bool((n < 1).any()) or n.numel() == 0:
            raise ValueError(
                f"num_leapfrog_steps must be an integer >= 1, got {self.num_leapfrog_steps!r}"
            )
        if self.inverse_mass_matrix is not None:
            check_positive("inverse_mass_matrix", self.inverse_mass_matrix)
        check_positive("divergence_threshold", self.divergence_threshold)
        if not 0 <= float(self.jitter) < 1:
            raise ValueError(f"jitter must lie in [0, 1), got {self.jitter!r}")

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        """Energy+gradient evaluations per transition (the largest ``num_leapfrog_steps``)."""
        return int(torch.as_tensor(self.num_leapfrog_steps).max())

    def _inv_mass(self, x: Tensor) -> Tensor | None:
        if self.inverse_mass_matrix is None:
            return None
        m = torch.as_tensor(self.inverse_mass_matrix, dtype=x.dtype, device=x.device)
        try:
            torch.broadcast_shapes(m.shape, x.shape)
        except RuntimeError as err:
            raise ValueError(
                f"inverse_mass_matrix of shape {tuple(m.shape)} does not broadcast to positions "
                f"of shape {tuple(x.shape)}; give the event shape or (*batch, *event)"
            ) from err
        return m

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        self._validate_state(state)
        x0, e0, g0 = state.position, state.energy, state.grad
        bs, ne = state.batch_shape, state.event_ndim
        eps_b = per_chain(self.step_size, bs, x0, "step_size")
        if self.jitter:
            u = rand_batch(bs, x0, generator)
            eps_b = eps_b * (1 + self.jitter * (2 * u - 1))
        eps = expand_event(eps_b, ne)
        inv_m = self._inv_mass(x0)
        xi = randn_like(x0, generator)
        p = xi if inv_m is None else xi / torch.sqrt(inv_m)

        def kinetic(p: Tensor) -> Tensor:
            k = p**2 if inv_m is None else inv_m * p**2
            return 0.5 * (k.flatten(start_dim=k.ndim - ne).sum(-1) if ne else k)

        k0 = kinetic(p)
        n = torch.as_tensor(self.num_leapfrog_steps)
        per_chain_steps = n.numel() > 1
        if per_chain_steps:
            try:
                n_b = torch.broadcast_to(n.to(x0.device), bs)
            except RuntimeError as err:
                raise ValueError(
                    f"num_leapfrog_steps of shape {tuple(n.shape)} does not broadcast to the "
                    f"chains' "
                    f"batch shape {tuple(bs)}"
                ) from err
            total = int(n.max())
        else:
            total = int(n)

        x, e, g = x0, e0, g0
        p = p - 0.5 * eps * g
        if not per_chain_steps:
            # Lean path: a non-finite value anywhere on the trajectory propagates into the
            # final state and Hamiltonian error, so one check per transition suffices.
            for _ in range(total):
                x = x + eps * (p if inv_m is None else inv_m * p)
                e, g = energy_and_grad(energy, x)
                p = p - eps * g
            p = p + 0.5 * eps * g  # the last update was a full step; make it a half step
            h_err = (e + kinetic(p)) - (e0 + k0)
            finite = finite_batch(h_err, x, g)
            diverging = ~finite | (h_err > self.divergence_threshold)
            accept_prob, accepted = metropolis(-h_err, ~diverging, generator)
            new_state = State(
                where_batch(accepted, x, x0),
                torch.where(accepted, e, e0),
                where_batch(accepted, g, g0),
            )
            return new_state, Info(accept_prob, accepted, diverging)
        # per-chain trajectory lengths: chains stop (and freeze) at their own length
        alive = torch.ones(bs, dtype=torch.bool, device=x0.device)
        for i in range(total):
            active = alive & (n_b > i)
            velocity = p if inv_m is None else inv_m * p
            x_try = x + eps * velocity
            e_try, g_try = energy_and_grad(energy, x_try)
            finite = finite_batch(e_try, x_try, g_try)
            alive = alive & (finite | ~active)
            move = active & finite
            x = where_batch(move, x_try, x)
            e = torch.where(move, e_try, e)
            g = where_batch(move, g_try, g)
            p = where_batch(move, p - eps * g_try, p)
        p = p + 0.5 * eps * g  # the last update was a full step; make it a half step
        h_err = (e + kinetic(p)) - (e0 + k0)
        diverging = ~alive | ~torch.isfinite(h_err) | (h_err > self.divergence_threshold)
        accept_prob, accepted = metropolis(-h_err, ~diverging, generator)
        new_state = State(
            where_batch(accepted, x, x0), torch.where(accepted, e, e0), where_batch(accepted, g, g0)
        )
        return new_state, Info(accept_prob, accepted, diverging)
