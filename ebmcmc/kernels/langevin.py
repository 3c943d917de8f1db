"""Langevin kernels: unadjusted (``Langevin``) and Metropolis-adjusted (``MALA``).

Both use the step-size convention ``x' = x - eps * M⁻¹ grad E(x) + sqrt(2 eps) M^{-½} xi``,
``xi ~ N(0, I)``, i.e. an Euler step of length ``eps`` of the (preconditioned) Langevin
diffusion whose stationary density is ``exp(-E)``. (Papers that write ``s^2/2 * grad`` use
``eps = s^2/2``.) ``M⁻¹`` is a preconditioner (``inverse_mass_matrix``; ``None``: the
identity), diagonal, or dense for MALA, that warm-up adaptation can estimate from the chains'
variances or covariance. One step costs one energy+gradient evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..energy import energy_and_grad
from .base import Info, Kernel, State, inverse_mass
from .integrators import langevin_euler, langevin_reverse_term
from .proposal import (
    as_factor,
    as_hyperparameter,
    check_positive,
    metropolis_clean,
    randn_like,
    sum_event,
    where_batch,
)

__all__ = ["Langevin", "MALA", "DENSE_AUTO_MAX_DIM", "check_dense_mass"]


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
    acceptance 0.574) and ``inverse_mass_matrix`` (the chains' variances or covariance, in
    Stan's windows).

    Args:
        step_size: ``eps > 0``, scalar or per-chain tensor (batch shape).
        inverse_mass_matrix: the preconditioner ``M⁻¹``; ``None`` means the identity.
            Diagonal (``dense_mass`` not ``True``): shape ``event`` or ``(*batch, *event)``.
            Dense (``dense_mass=True``): a symmetric positive definite ``(d, d)`` matrix
            shared by every chain, for flat events ``(d,)``.
        dense_mass: whether ``inverse_mass_matrix`` is a dense matrix. ``None`` (the
            default) reads it as diagonal, and lets warm-up choose: it adapts a dense matrix
            (the chains' covariance) when the event is flat with at most
            ``DENSE_AUTO_MAX_DIM`` (64) coordinates and all chains share the preconditioner,
            a diagonal one otherwise. ``False``: always diagonal; ``True``: always dense.
            Correlated posteriors need the dense one: a diagonal preconditioner leaves their
            narrowest direction setting the step size.

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
    dense_mass: bool | None = None
    default_target_accept: ClassVar[float] = 0.574

    def __post_init__(self):
        check_positive("step_size", self.step_size)
        if self.dense_mass is not None and not isinstance(self.dense_mass, bool):
            raise ValueError(f"dense_mass must be True, False or None, got {self.dense_mass!r}")
        if self.dense_mass and self.inverse_mass_matrix is not None:
            check_dense_mass(self.inverse_mass_matrix)
        else:
            self._check_tensor_field("inverse_mass_matrix")
        # (dtype, device) -> (Σ, its Cholesky factor) there: made at the first step, not at each
        object.__setattr__(self, "_dense_factors", {})

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        state = self._check_state(state)
        if self.dense_mass and self.inverse_mass_matrix is not None:
            return self._dense_step(energy, state, generator)
        x, e, g = state.position, state.energy, state.grad
        assert g is not None
        ne = x.ndim - e.ndim
        inv_m = inverse_mass(self.inverse_mass_matrix, x)
        noise = randn_like(x, generator)
        consts = _float_step_constants(self.step_size, x) if inv_m is None else None
        eps: float | Tensor
        four_eps: float | Tensor
        if consts is not None:
            # a float step size: 0-dim tensors made once instead of a Python number wrapped
            # into a tensor by every operation (the same numbers: see _float_step_constants)
            eps, scale, four_eps = consts
            x_new = x - eps * g  # langevin_euler's arithmetic, op for op
            x_new += scale * noise
        else:
            bs = e.shape
            eps = as_factor(self.step_size, bs, x, ne, "step_size")
            four_eps = 4 * (eps if isinstance(eps, float) else eps.reshape(bs))
            x_new = langevin_euler(x, g, eps, noise, inv_m)
        e_new, g_new = energy_and_grad(energy, x_new)
        # log q(x | x') - log q(x' | x) + E(x) - E(x'); the forward term is ½|xi|² exactly
        # (alpha=0.5 scales exactly, so this is the sum's half added, bit for bit)
        log_ratio = e - e_new
        if log_ratio.dtype != x.dtype:  # an energy of another precision: as out of place
            log_ratio = log_ratio.to(torch.promote_types(log_ratio.dtype, x.dtype))
        log_ratio -= langevin_reverse_term(x, x_new, g_new, eps, four_eps, ne, inv_m)
        noise *= noise  # (noise is not needed any more)
        log_ratio.add_(sum_event(noise, ne), alpha=0.5)
        return self._decide(state, x_new, e_new, g_new, log_ratio, ne, generator)

    def _decide(self, state: State, x_new, e_new, g_new, log_ratio: Tensor, ne: int, generator):
        """Accept or reject every chain's proposal by its log Metropolis–Hastings ratio."""
        x, e, g = state.position, state.energy, state.grad
        assert g is not None
        # e_new enters log_ratio directly and g_new through the reverse term: a non-finite
        # energy or gradient makes log_ratio non-finite, so one check per chain suffices;
        # cleaned (NaN and ±inf to -inf, never accepted), -inf marks exactly those chains
        inf = torch.inf
        log_ratio.nan_to_num_(nan=-inf, posinf=-inf, neginf=-inf)
        accept_prob, accepted = metropolis_clean(log_ratio, generator)
        keep = accepted.unsqueeze(-1) if ne == 1 else accepted.reshape(accepted.shape + (1,) * ne)
        new_state = State(
            torch.where(keep, x_new, x),
            torch.where(accepted, e_new, e),
            torch.where(keep, g_new, g),
        )
        return new_state, Info(accept_prob, accepted, torch.isneginf(log_ratio), self.step_size)

    def _dense_step(self, energy, state: State, generator: torch.Generator | None):
        """One step with a dense ``M⁻¹ = Σ = L Lᵀ``: ``x' = x − ε Σ g + √(2ε) L ξ``."""
        x, e, g = state.position, state.energy, state.grad
        assert g is not None and self.inverse_mass_matrix is not None
        ne = x.ndim - e.ndim
        m = self.inverse_mass_matrix
        if ne != 1 or m.shape != (x.shape[-1], x.shape[-1]):
            raise ValueError(
                f"a dense inverse_mass_matrix of shape {tuple(m.shape)} needs flat events of "
                f"{m.shape[-1]} coordinates; the positions have shape {tuple(x.shape)} "
                f"({ne} event dimension(s))"
            )
        factors: dict = self._dense_factors  # type: ignore[attr-defined]
        found = factors.get((x.dtype, x.device))
        if found is None:
            with torch.inference_mode(False):  # usable in any mode later
                cov = m.to(dtype=x.dtype, device=x.device)
                found = factors[(x.dtype, x.device)] = (cov, torch.linalg.cholesky(cov))
        cov, chol = found
        eps = as_factor(self.step_size, e.shape, x, ne, "step_size")
        scale = math.sqrt(2 * eps) if isinstance(eps, float) else torch.sqrt(2 * eps)
        noise = randn_like(x, generator)
        x_new = x - eps * (g @ cov) + scale * (noise @ chol.T)
        e_new, g_new = energy_and_grad(energy, x_new)
        # the reverse move's Gaussian term: |L⁻¹(x − x' + ε Σ g')|² / (4ε); the forward one is
        # ½|ξ|² exactly, as in the diagonal case
        r = x - x_new + eps * (g_new @ cov)
        w = torch.linalg.solve_triangular(chol, r.unsqueeze(-1), upper=False).squeeze(-1)
        four_eps = 4 * (eps if isinstance(eps, float) else eps.reshape(e.shape))
        log_ratio = (e - e_new).to(torch.promote_types(e_new.dtype, x.dtype))
        log_ratio = log_ratio - (w * w).sum(-1) / four_eps + 0.5 * (noise * noise).sum(-1)
        return self._decide(state, x_new, e_new, g_new, log_ratio, ne, generator)


#: the most coordinates for which warm-up adapts a dense preconditioner by itself
#: (``MALA(dense_mass=None)``, the default): a dense step costs O(d²) per chain
DENSE_AUTO_MAX_DIM = 64


def check_dense_mass(m) -> None:
    """Check a dense inverse mass matrix: a finite, symmetric, positive definite ``(d, d)``
    tensor.

    Raises:
        ValueError: naming what is wrong.

    Example:
        >>> import torch
        >>> check_dense_mass(torch.tensor([[1.0, 0.5], [0.5, 1.0]]))
        >>> try:
        ...     check_dense_mass(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
        ... except ValueError as err:
        ...     print(err)
        a dense inverse_mass_matrix must be positive definite (its Cholesky factorisation failed)
    """
    if not isinstance(m, Tensor) or m.ndim != 2 or m.shape[0] != m.shape[1]:
        shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ValueError(f"a dense inverse_mass_matrix must be a square (d, d) tensor, got {shape}")
    if not m.is_floating_point() or not bool(torch.isfinite(m).all()):
        raise ValueError("a dense inverse_mass_matrix must hold finite floating-point values")
    if not torch.allclose(m, m.T, rtol=1e-5, atol=1e-8 * float(m.abs().max())):
        raise ValueError("a dense inverse_mass_matrix must be symmetric")
    if torch.linalg.cholesky_ex(m.double()).info != 0:
        raise ValueError(
            "a dense inverse_mass_matrix must be positive definite (its Cholesky "
            "factorisation failed)"
        )


_STEP_CONSTANTS: dict[tuple[float, torch.dtype], tuple[Tensor, Tensor, Tensor] | None] = {}


def _float_step_constants(step, x: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(eps, sqrt(2 eps), 4 eps)`` as 0-dim CPU tensors of ``x``'s dtype for a Python float
    step size met before and float32/float64 positions on the CPU or CUDA (``None``
    otherwise), cached.

    An operation between a tensor and a Python number converts the number to the tensor's
    dtype (for float32 and float64) and then computes exactly as with a CPU 0-dim tensor
    holding that converted number, on the CPU and on CUDA alike; so these give the same bits
    as the numbers, without wrapping a number into a tensor at every operation. A step size
    met for the first time gets ``None`` (the numbers are used): warm-up tries a new one every
    step, and making tensors for each would cost more than it saves.
    """
    if (
        type(step) is not float
        or x.dtype not in (torch.float32, torch.float64)
        or not (x.is_cpu or x.is_cuda)  # (other devices: the numbers, as before)
    ):
        return None
    key = (step, x.dtype)
    if key not in _STEP_CONSTANTS:  # first met: remember it
        if len(_STEP_CONSTANTS) >= 64:
            _STEP_CONSTANTS.clear()
        _STEP_CONSTANTS[key] = None
        return None
    found = _STEP_CONSTANTS[key]
    if found is None:  # met again: make the tensors
        with torch.inference_mode(False):  # usable in any mode later
            eps, scale, four_eps = (
                torch.tensor(v, dtype=x.dtype) for v in (step, math.sqrt(2 * step), 4 * step)
            )
        found = _STEP_CONSTANTS[key] = (eps, scale, four_eps)
    return found
