"""Langevin kernels: unadjusted (``Langevin``) and Metropolis-adjusted (``MALA``).

Both use the step-size convention ``x' = x - eps * grad E(x) + sqrt(2 eps) * xi``,
``xi ~ N(0, I)``, i.e. an Euler step of length ``eps`` of the Langevin diffusion whose
stationary density is ``exp(-E)``. (Papers that write ``s^2/2 * grad`` use ``eps = s^2/2``.)
One step costs one energy+gradient evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..energy import energy_and_grad
from .base import (
    Info,
    Kernel,
    State,
    check_positive,
    expand_event,
    metropolis,
    per_chain,
    randn_like,
    where_batch,
)

__all__ = ["Langevin", "MALA"]


def _as_factor(value, batch_shape, like: Tensor, event_ndim: int, name: str):
    """A hyperparameter ready to multiply positions: a Python float stays a float (cheapest),
    anything else becomes a ``(*batch, 1, …)`` tensor."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return expand_event(per_chain(value, batch_shape, like, name), event_ndim)


def _sum_event(t: Tensor, event_ndim: int) -> Tensor:
    return t.flatten(start_dim=t.ndim - event_ndim).sum(-1) if event_ndim else t


@dataclass(frozen=True)
class Langevin(Kernel):
    """Unadjusted Langevin algorithm (ULA): every finite proposal is accepted.

    ``x' = x - eps * grad E(x) + noise_scale * sqrt(2 eps) * xi``. Its stationary law is biased
    by ``O(eps)``; ``noise_scale < 1`` (e.g. DRL's 0.99 at evaluation) sharpens it further.

    Args:
        step_size: ``eps > 0``, scalar or per-chain tensor (batch shape).
        noise_scale: ``lambda >= 0``, scalar or per-chain tensor.

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

    def __post_init__(self):
        check_positive("step_size", self.step_size)
        ns = torch.as_tensor(self.noise_scale)
        if not torch.isfinite(ns).all() or (ns < 0).any():
            raise ValueError(f"noise_scale must be finite and >= 0, got {self.noise_scale!r}")

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        self._validate_state(state)
        x, g = state.position, state.grad
        bs, ne = state.batch_shape, state.event_ndim
        eps = _as_factor(self.step_size, bs, x, ne, "step_size")
        lam = _as_factor(self.noise_scale, bs, x, ne, "noise_scale")
        noise = randn_like(x, generator)
        scale = math.sqrt(2 * eps) if isinstance(eps, float) else torch.sqrt(2 * eps)
        scale = scale * lam if not (isinstance(lam, float) and lam == 1.0) else scale
        x_new = x - eps * g + scale * noise
        e_new, g_new = energy_and_grad(energy, x_new)
        # one number per chain: non-finite energy or gradient anywhere makes it non-finite
        ok = torch.isfinite(e_new + (g_new.flatten(start_dim=len(bs)).sum(-1) if ne else g_new))
        new_state = State(
            where_batch(ok, x_new, x),
            torch.where(ok, e_new, state.energy),
            where_batch(ok, g_new, g),
        )
        info = Info(accept_prob=ok.to(x.dtype), accepted=ok, diverging=~ok)
        return new_state, info


@dataclass(frozen=True)
class MALA(Kernel):
    """Metropolis-adjusted Langevin algorithm.

    Proposal ``x' = x - eps * grad E(x) + sqrt(2 eps) * xi``, accepted with the
    Metropolis–Hastings probability for the asymmetric Gaussian proposal. Exact for
    ``exp(-E)`` at any step size; non-finite proposals are rejected and flagged diverging.

    Args:
        step_size: ``eps > 0``, scalar or per-chain tensor (batch shape).

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
    default_target_accept: ClassVar[float] = 0.574

    def __post_init__(self):
        check_positive("step_size", self.step_size)

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        self._validate_state(state)
        x, e, g = state.position, state.energy, state.grad
        bs, ne = state.batch_shape, state.event_ndim
        eps = _as_factor(self.step_size, bs, x, ne, "step_size")
        eps_b = eps if isinstance(eps, float) else eps.reshape(bs)
        noise = randn_like(x, generator)
        scale = math.sqrt(2 * eps) if isinstance(eps, float) else torch.sqrt(2 * eps)
        x_new = x - eps * g + scale * noise
        e_new, g_new = energy_and_grad(energy, x_new)
        # log q(x | x') - log q(x' | x), q(a | b) = N(a; b - eps g(b), 2 eps I)
        fwd = _sum_event(noise**2, ne) * 0.5
        rev = _sum_event((x - x_new + eps * g_new) ** 2, ne) / (4 * eps_b)
        log_ratio = e - e_new - rev + fwd
        # e_new enters log_ratio directly and g_new through the reverse term: a non-finite
        # energy or gradient makes log_ratio non-finite, so one check per chain suffices
        ok = torch.isfinite(log_ratio)
        accept_prob, accepted = metropolis(log_ratio, ok, generator)
        new_state = State(
            where_batch(accepted, x_new, x),
            torch.where(accepted, e_new, e),
            where_batch(accepted, g_new, g),
        )
        return new_state, Info(accept_prob, accepted, ~ok)
