"""Integrators shared by the gradient-based kernels, with a diagonal mass matrix.

* :func:`kinetic_energy` and :func:`sample_momentum`: ``K(p) = ½ Σ M⁻¹ p²`` and
  ``p ~ N(0, M)`` for a diagonal inverse mass matrix ``M⁻¹`` (``None``: the identity).
* :func:`leapfrog`: ``L`` leapfrog steps of Hamiltonian dynamics, the same ``L`` for every
  chain (one check for non-finite values per transition: they propagate to the end).
* :func:`leapfrog_per_chain`: per-chain trajectory lengths; each chain stops at its own ``L``
  or at its first non-finite value, which it never takes.
* :func:`langevin_euler`: one Euler–Maruyama step of the (preconditioned) overdamped Langevin
  diffusion, ``x' = x − ε M⁻¹ ∇E + λ √(2ε) M^{-½} ξ``, and :func:`langevin_log_density` of its
  Gaussian proposal, used by MALA's Metropolis–Hastings ratio.

Positions, momenta and gradients have shape ``(*batch, *event)``; step sizes are Python floats
or tensors that broadcast against positions (``expand_event`` of a per-chain tensor).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..energy import energy_and_grad
from .proposal import finite_batch, randn_like, sum_event, where_batch

__all__ = [
    "kinetic_energy",
    "sample_momentum",
    "leapfrog",
    "leapfrog_per_chain",
    "langevin_euler",
    "langevin_log_density",
    "langevin_reverse_term",
]


def kinetic_energy(p: Tensor, inv_mass: Tensor | None, event_ndim: int) -> Tensor:
    """``½ Σ_event M⁻¹ p²``, shape ``batch``.

    Example:
        >>> import torch
        >>> kinetic_energy(torch.ones(2, 3), None, 1)
        tensor([1.5000, 1.5000])
    """
    k = p**2 if inv_mass is None else inv_mass * p**2
    return 0.5 * sum_event(k, event_ndim)


def sample_momentum(
    like: Tensor, inv_mass: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    """``p ~ N(0, M)`` with ``M = 1 / inv_mass`` (diagonal), shaped like ``like``.

    Example:
        >>> import torch
        >>> sample_momentum(torch.zeros(4, 2), None, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """
    xi = randn_like(like, generator)
    return xi if inv_mass is None else xi / torch.sqrt(inv_mass)


def leapfrog(
    energy, x: Tensor, p: Tensor, g: Tensor, step, num_steps: int, inv_mass: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``num_steps`` leapfrog steps from ``(x, p)`` with gradient ``g = ∇E(x)``.

    Args:
        energy: the energy.
        x: positions ``(*batch, *event)``.
        p: momenta like ``x``.
        g: ``∇E(x)``.
        step: step size, a float or a tensor broadcasting against ``x``.
        num_steps: ``L >= 1``, shared by all chains.
        inv_mass: diagonal ``M⁻¹`` broadcasting against ``x``, or ``None``.

    Returns:
        ``(x', p', E(x'), ∇E(x'))``. A non-finite value anywhere on a chain's trajectory ends
        up in its final values (the caller rejects such chains).

    Example:
        >>> import torch
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> x, p = torch.ones(1, 1), torch.zeros(1, 1)
        >>> x1, p1, e1, g1 = leapfrog(energy, x, p, x.clone(), 0.1, 10, None)
        >>> abs(float(e1 + 0.5 * p1.pow(2).sum()) - 0.5) < 1e-2   # energy nearly conserved
        True
    """
    p = p - 0.5 * step * g
    e = g.new_zeros(())
    for _ in range(num_steps):
        x = x + step * (p if inv_mass is None else inv_mass * p)
        e, g = energy_and_grad(energy, x)
        p = p - step * g
    p = p + 0.5 * step * g  # the last update was a full step; make it a half step
    return x, p, e, g


def leapfrog_per_chain(
    energy,
    x: Tensor,
    p: Tensor,
    e: Tensor,
    g: Tensor,
    step,
    num_steps: Tensor,
    inv_mass: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Leapfrog with per-chain lengths ``num_steps`` (integer tensor of the batch shape).

    Every chain takes the batch's longest trajectory in lock step; a chain stops moving at its
    own length, or at the first step whose position, energy or gradient is not finite (that
    step is not taken and the chain is reported not ``alive``).

    Returns:
        ``(x', p', E(x'), ∇E(x'), alive)``; ``alive`` is ``batch``-shaped.

    Example:
        >>> import torch
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> x = torch.ones(2, 1)
        >>> out = leapfrog_per_chain(energy, x, torch.zeros(2, 1), energy(x), x.clone(), 0.1,
        ...                          torch.tensor([0, 5]), None)
        >>> out[0][0].item(), bool(out[4].all())
        (1.0, True)
    """
    alive = torch.ones(num_steps.shape, dtype=torch.bool, device=x.device)
    total = int(num_steps.max()) if num_steps.numel() else 0
    p = p - 0.5 * step * g
    for i in range(total):
        active = alive & (num_steps > i)
        velocity = p if inv_mass is None else inv_mass * p
        x_try = x + step * velocity
        e_try, g_try = energy_and_grad(energy, x_try)
        finite = finite_batch(e_try, x_try, g_try)
        alive = alive & (finite | ~active)
        move = active & finite
        x = where_batch(move, x_try, x)
        e = torch.where(move, e_try, e)
        g = where_batch(move, g_try, g)
        p = where_batch(move, p - step * g_try, p)
    p = p + 0.5 * step * g  # the last update was a full step; make it a half step
    return x, p, e, g, alive


def langevin_euler(
    x: Tensor,
    g: Tensor,
    step,
    noise: Tensor,
    inv_mass: Tensor | None = None,
    noise_scale=1.0,
) -> Tensor:
    """One Euler–Maruyama step ``x − ε M⁻¹ g + λ √(2ε) M^{-½} ξ`` of overdamped Langevin.

    Args:
        x: positions ``(*batch, *event)``.
        g: ``∇E(x)``.
        step: ``ε``, a float or a tensor broadcasting against ``x``.
        noise: ``ξ ~ N(0, I)`` like ``x``.
        inv_mass: diagonal preconditioner ``M⁻¹`` (``None``: the identity).
        noise_scale: ``λ`` (1 for the exact diffusion), a float or a broadcasting tensor.

    Example:
        >>> import torch
        >>> langevin_euler(torch.ones(1, 2), torch.ones(1, 2), 0.5, torch.zeros(1, 2))
        tensor([[0.5000, 0.5000]])
    """
    scale = math.sqrt(2 * step) if isinstance(step, float) else torch.sqrt(2 * step)
    if not (isinstance(noise_scale, float | int) and noise_scale == 1.0):
        scale = scale * noise_scale
    if inv_mass is None:
        return x - step * g + scale * noise
    return x - step * (inv_mass * g) + scale * torch.sqrt(inv_mass) * noise


def langevin_log_density(
    x_to: Tensor,
    x_from: Tensor,
    g_from: Tensor,
    step,
    step_b,
    event_ndim: int,
    inv_mass: Tensor | None = None,
) -> Tensor:
    """``log q(x_to | x_from)`` of the Langevin proposal, up to a constant shared by both
    directions: ``−Σ (x_to − x_from + ε M⁻¹ g_from)² / (4 ε M⁻¹)``.

    Args:
        x_to: the proposal's end point.
        x_from: its start.
        g_from: ``∇E(x_from)``.
        step: ``ε`` broadcasting against positions.
        step_b: ``ε`` as a float or of the batch shape.
        event_ndim: event dimensions.
        inv_mass: diagonal ``M⁻¹`` or ``None``.

    Example:
        >>> import torch
        >>> langevin_log_density(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1),
        ...                      0.5, 0.5, 1)
        tensor([-0.])
    """
    # -(S / c) is bit for bit (-S) / c: IEEE rounding is symmetric in the sign
    return -langevin_reverse_term(x_to, x_from, g_from, step, 4 * step_b, event_ndim, inv_mass)


def langevin_reverse_term(
    x_to: Tensor,
    x_from: Tensor,
    g_from: Tensor,
    step,
    four_step_b,
    event_ndim: int,
    inv_mass: Tensor | None = None,
) -> Tensor:
    """``Σ (x_to − x_from + ε M⁻¹ g_from)² / (4 ε M⁻¹)``, the negative of
    :func:`langevin_log_density`, with ``4 ε`` given (a float, a tensor of the batch shape, or
    a 0-dim tensor of the positions' dtype), so that a ratio can subtract it in one operation.

    Example:
        >>> import torch
        >>> langevin_reverse_term(torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1),
        ...                       0.5, 2.0, 1)
        tensor([0.5000])
    """
    d = x_to - x_from
    d += step * (g_from if inv_mass is None else inv_mass * g_from)
    d = d * d  # bit for bit d**2, without the Python-level power operator
    return sum_event(d if inv_mass is None else d / inv_mass, event_ndim) / four_step_b
