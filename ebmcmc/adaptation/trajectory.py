"""Trajectory-length adaptation by the ChEES criterion, as pure functions.

ChEES (Hoffman, Radul & Sountsov 2021) is the Change in the Estimator of the Expected Square:
``¼ E[(|x' − E x|² − |x − E x|²)²]`` over the chains, ``x`` a trajectory's start and ``x'`` its
end. Its gradient with respect to the trajectory length ``T`` is estimated per chain as
``u (|x̃'|² − |x̃|²) (x̃' · v')`` (``x̃`` centred across chains, ``v'`` the velocity at the end,
``u`` the step's jitter) and pooled as an acceptance-weighted mean; ``log T`` follows it with
an RMSProp-normalised step clipped to ±0.35, and the value used after warm-up is an iterate
average of ``log T``. With a diagonal mass matrix the criterion is computed in the whitened
coordinates ``x / sqrt(M⁻¹)``, where the warmed-up target is close to isotropic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "TrajectoryState",
    "trajectory_init",
    "chees_gradient",
    "trajectory_update",
    "trajectory_final",
]

#: chains whose acceptance is below this carry no weight in the pooled gradient
MIN_ACCEPT = 1e-4
#: the largest change of log T in one update (about log(2) / 2)
MAX_LOG_UPDATE = 0.35


class TrajectoryState(NamedTuple):
    """The running quantities of trajectory-length adaptation (Python floats).

    Attributes:
        log_length: the current ``log T``.
        log_length_avg: its iterate average (what sampling uses after warm-up).
        avg_sq_grad: the running mean of squared gradients (RMSProp).
        num_updates: updates since the (re)start.

    Example:
        >>> round(math.exp(trajectory_init(0.5).log_length), 6)
        0.5
    """

    log_length: float
    log_length_avg: float
    avg_sq_grad: float
    num_updates: int


def trajectory_init(length: float) -> TrajectoryState:
    """Start at trajectory length ``length``.

    Example:
        >>> trajectory_init(1.0).num_updates
        0
    """
    return TrajectoryState(math.log(length), math.log(length), 0.0, 0)


def chees_gradient(
    initial: Tensor,
    proposal: Tensor,
    momentum: Tensor,
    accept_prob: Tensor,
    diverging: Tensor,
    jitter: float,
    inverse_mass: Tensor | None = None,
) -> float:
    """The pooled ChEES gradient with respect to the trajectory length.

    Args:
        initial: the trajectories' starts ``(*batch, *event)``.
        proposal: their ends (before the accept decision).
        momentum: the momenta at the ends.
        accept_prob: acceptance probabilities, ``batch``.
        diverging: divergence flags, ``batch``.
        jitter: the step's jitter factor ``u``.
        inverse_mass: diagonal ``M⁻¹`` broadcasting against positions, or ``None``.

    Returns:
        The acceptance-weighted mean of the chains' gradients (0 when no chain counts).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x0 = torch.randn(64, 2, generator=g)
        >>> # trajectories that spread the chains out: the criterion grows with T
        >>> chees_gradient(x0, 2 * x0, x0, torch.ones(64), torch.zeros(64, dtype=torch.bool),
        ...                1.0) > 0
        True
    """
    n = accept_prob.numel()
    x = initial.reshape(n, -1).double()
    xp = proposal.reshape(n, -1).double()
    v = momentum.reshape(n, -1).double()
    if inverse_mass is not None:
        m = torch.broadcast_to(inverse_mass.double(), initial.shape).reshape(n, -1)
        scale = m.sqrt()
        x, xp, v = x / scale, xp / scale, v * scale  # velocity M⁻¹p, whitened: sqrt(M⁻¹) p
    a = accept_prob.reshape(n).double()
    finite = torch.isfinite(xp).all(-1) & torch.isfinite(v).all(-1) & torch.isfinite(a)
    valid = finite & ~diverging.reshape(n) & (a >= MIN_ACCEPT)
    if not bool(valid.any()):
        return 0.0
    w = torch.where(valid, a, torch.zeros_like(a))
    xp = torch.where(valid[:, None], xp, torch.zeros_like(xp))
    v = torch.where(valid[:, None], v, torch.zeros_like(v))
    x_c = x - x.mean(0)
    xp_c = xp - (w[:, None] * xp).sum(0) / (w.sum() + 1e-20)
    g = jitter * ((xp_c**2).sum(-1) - (x_c**2).sum(-1)) * (xp_c * v).sum(-1)
    g = torch.where(valid & torch.isfinite(g), g, torch.zeros_like(g))
    return float((w * g).sum() / (w.sum() + 1e-20))


def trajectory_update(
    state: TrajectoryState,
    gradient: float,
    learning_rate: float = 0.025,
    sq_grad_rate: float = 0.05,
) -> TrajectoryState:
    """One RMSProp-normalised step of ``log T`` up the ChEES gradient, clipped to ±0.35, with
    the iterate average updated (weight ``k^{-1/2}`` at update ``k``).

    Example:
        >>> s = trajectory_update(trajectory_init(1.0), 3.0)
        >>> math.exp(s.log_length) > 1.0
        True
    """
    k = state.num_updates + 1
    if not math.isfinite(gradient):
        gradient = 0.0
    avg_sq = (1 - sq_grad_rate) * state.avg_sq_grad + sq_grad_rate * gradient**2
    adjusted = avg_sq / (1 - (1 - sq_grad_rate) ** k)
    step = learning_rate / math.sqrt(adjusted + 1e-20) * gradient
    log_length = state.log_length + min(max(step, -MAX_LOG_UPDATE), MAX_LOG_UPDATE)
    w = k**-0.5
    avg = w * log_length + (1 - w) * state.log_length_avg
    return TrajectoryState(log_length, avg, avg_sq, k)


def trajectory_final(state: TrajectoryState) -> float:
    """The averaged trajectory length to sample with after warm-up.

    Example:
        >>> trajectory_final(trajectory_init(2.0))
        2.0
    """
    return math.exp(state.log_length_avg)
