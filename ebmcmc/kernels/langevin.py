"""Langevin kernels: unadjusted (``Langevin``) and Metropolis-adjusted (``MALA``).

Both use the step-size convention ``x' = x - eps * M⁻¹ grad E(x) + sqrt(2 eps) M^{-½} xi``,
``xi ~ N(0, I)``, i.e. an Euler step of length ``eps`` of the (preconditioned) Langevin
diffusion whose stationary density is ``exp(-E)``. (Papers that write ``s^2/2 * grad`` use
``eps = s^2/2``.) ``M⁻¹`` is a diagonal preconditioner (``inverse_mass_matrix``; ``None``: the
identity) that warm-up adaptation can estimate from the chains' variances. One step costs one
energy+gradient evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..energy import energy_and_grad
from .base import Info, Kernel, State, inverse_mass
from .integrators import langevin_euler, langevin_log_density
from .proposal import (
    as_factor,
    as_hyperparameter,
    check_positive,
    metropolis,
    randn_like,
    sum_event,
    where_batch,
)

__all__ = ["Langevin", "MALA"]


@dataclass(frozen=True)
class Langevin(Kernel):
    """Unadjusted Langevin algorithm (ULA): every finite proposal is accepted.

    ``x' = x - eps * M⁻¹ grad E(x) + noise_scale * sqrt(2 eps) M^{-½} xi``. Its stationary law
    is biased by ``O(eps)``; ``noise_scale < 1`` (e.g. DRL's 0.99 at evaluation) sharpens it
    further.

    Args:
        step_size: ``eps > 0``, scalar or per-chain tensor (batch shape).
        noise_scale: ``lambda >= 0``, scalar or per-chain tensor.
        inverse_mass_matrix: diagonal preconditioner ``M⁻¹``, shape ``event`` or
            ``(*batch, *event)``; ``None`` means the identity.

    Shapes: state position ``(*batch, *event)``; info fields ``batch``.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import Langevin
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = Langevin(step_size=0.1)
        >>> s = k.init(energy, torch.zeros(8, 2))
        >>> s, info = k.step(energy, s, torch.Generator().manual_seed(0))
        >>> s.position.shape
        torch.Size([8, 2])
    """

    step_size: float | Tensor = 0.01
    noise_scale: float | Tensor = 1.0
    inverse_mass_matrix: Tensor | None = None

    def __post_init__(self):
        check_positive("step_size", self.step_size)
        ns = as_hyperparameter("noise_scale", self.noise_scale)
        if not torch.isfinite(ns).all() or (ns < 0).any():
            raise ValueError(f"noise_scale must be finite and >= 0, got {self.noise_scale!r}")
        self._check_tensor_field("inverse_mass_matrix")

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        state = self._check_state(state)
        x, g = state.position, state.grad
        assert g is not None
        bs, ne = state.batch_shape, state.event_ndim
        eps = as_factor(self.step_size, bs, x, ne, "step_size")
        lam = as_factor(self.noise_scale, bs, x, ne, "noise_scale")
        noise = randn_like(x, generator)
        x_new = langevin_euler(x, g, eps, noise, inverse_mass(self.inverse_mass_matrix, x), lam)
        e_new, g_new = energy_and_grad(energy, x_new)
        # one number per chain: non-finite energy or gradient anywhere makes it non-finite
        ok = torch.isfinite(e_new + (g_new.flatten(start_dim=len(bs)).sum(-1) if ne else g_new))
        new_state = State(
            where_batch(ok, x_new, x),
            torch.where(ok, e_new, state.energy),
            where_batch(ok, g_new, g),
        )
        return new_state, Info(ok.to(x.dtype), ok, ~ok, self.step_size)


@dataclass(frozen=True)
class MALA(Kernel):
    """Metropolis-adjusted Langevin algorithm, optionally preconditioned.

    Proposal ``x' = x - eps * M⁻¹ grad E(x) + sqrt(2 eps) M^{-½} xi``, accepted with the
    Metropolis–Hastings probability for the asymmetric Gaussian proposal. Exact for
    ``exp(-E)`` at any step size; non-finite proposals are rejected and flagged diverging.
    With warm-up, :func:`ebmcmc.sample`'s default adaptation tunes ``step_size`` (to
    acceptance 0.574) and ``inverse_mass_matrix`` (the chains' variances, in Stan's windows).

    Args:
        step_size: ``eps > 0``, scalar or per-chain tensor (batch shape).
        inverse_mass_matrix: diagonal preconditioner ``M⁻¹``, shape ``event`` or
            ``(*batch, *event)``; ``None`` means the identity.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = MALA(step_size=0.5)
        >>> s = k.init(energy, torch.zeros(8, 2))
        >>> s, info = k.step(energy, s, torch.Generator().manual_seed(0))
        >>> info.accept_prob.shape
        torch.Size([8])
    """

    step_size: float | Tensor = 0.01
    inverse_mass_matrix: Tensor | None = None
    default_target_accept: ClassVar[float] = 0.574

    def __post_init__(self):
        check_positive("step_size", self.step_size)
        self._check_tensor_field("inverse_mass_matrix")

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        state = self._check_state(state)
        x, e, g = state.position, state.energy, state.grad
        assert g is not None
        bs, ne = state.batch_shape, state.event_ndim
        eps = as_factor(self.step_size, bs, x, ne, "step_size")
        eps_b = eps if isinstance(eps, float) else eps.reshape(bs)
        inv_m = inverse_mass(self.inverse_mass_matrix, x)
        noise = randn_like(x, generator)
        x_new = langevin_euler(x, g, eps, noise, inv_m)
        e_new, g_new = energy_and_grad(energy, x_new)
        # log q(x | x') - log q(x' | x); the forward term is ½|xi|² exactly
        fwd = sum_event(noise**2, ne) * 0.5
        log_ratio = e - e_new + langevin_log_density(x, x_new, g_new, eps, eps_b, ne, inv_m) + fwd
        # e_new enters log_ratio directly and g_new through the reverse term: a non-finite
        # energy or gradient makes log_ratio non-finite, so one check per chain suffices
        accept_prob, accepted = metropolis(log_ratio, None, generator)
        keep = accepted.reshape(accepted.shape + (1,) * ne)
        new_state = State(
            torch.where(keep, x_new, x),
            torch.where(accepted, e_new, e),
            torch.where(keep, g_new, g),
        )
        return new_state, Info(accept_prob, accepted, ~torch.isfinite(log_ratio), self.step_size)
