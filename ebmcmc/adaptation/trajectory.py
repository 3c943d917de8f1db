"""Trajectory-length adaptation by the ChEES criterion, as pure functions.

ChEES (Hoffman, Radul & Sountsov 2021) is the Change in the Estimator of the Expected Square:
``¼ E[(|x' − E x|² − |x − E x|²)²]`` over the chains, ``x`` a trajectory's start and ``x'`` its
end. Its gradient with respect to the trajectory length ``T`` is estimated per chain as
``u (|x̃'|² − |x̃|²) (x̃' · v')`` (``x̃`` centred across chains, ``v'`` the velocity at the end,
``u`` the step's jitter) and pooled as an acceptance-weighted mean; ``log T`` follows it
(taken with respect to ``log T`` and divided by the squared spread of the chains, so that it is
free of the target's scale) with an RMSProp-normalised step clipped to ±0.35, and the value
used after warm-up is an iterate average of ``log T``. With a diagonal mass matrix the
criterion is computed in the whitened coordinates ``x / sqrt(M⁻¹)``, where the warmed-up
target is close to isotropic.
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
    "trajectory_restart",
    "trajectory_final",
]

#: chains whose acceptance is below this carry no weight in the pooled gradient
MIN_ACCEPT = 1e-4
#: the largest change of log T in one update (about log(2) / 2)
MAX_LOG_UPDATE = 0.35
#: the largest gradient relative to the root-mean-square of those before it
MAX_GRAD_RATIO = 10.0
#: the largest first gradient (scale-free units, where gradients are of order T / sqrt(dim))
MAX_FIRST_GRAD = 1.0


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
    length: float | None = None,
) -> float:
    """The pooled ChEES gradient with respect to the trajectory length.

    With ``length`` (the current ``T``) the gradient is made scale-free: it is taken with
    respect to ``log T`` and divided by the square of the chains' mean squared distance from
    their centre. The raw gradient grows as the fourth power of the chains' spread, so while
    chains far from the bulk close in during warm-up it falls by many orders of magnitude, and
    an RMSProp normaliser remembering the early values would freeze ``T``; the scale-free one
    keeps the same sign and stays of order one.

    Args:
        initial: the trajectories' starts ``(*batch, *event)``.
        proposal: their ends (before the accept decision).
        momentum: the momenta at the ends.
        accept_prob: acceptance probabilities, ``batch``.
        diverging: divergence flags, ``batch``.
        jitter: the step's jitter factor ``u``.
        inverse_mass: diagonal ``M⁻¹`` broadcasting against positions, or ``None``.
        length: the current trajectory length ``T`` (``None``: the raw gradient).

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
    grad = float((w * g).sum() / (w.sum() + 1e-20))
    if length is None:
        return grad
    spread = float((x_c[valid] ** 2).sum(-1).mean())
    return length * grad / spread**2 if spread > 0 and math.isfinite(spread) else 0.0


def _mean_sq_grad(avg_sq: float, num_updates: int, sq_grad_rate: float) -> float:
    """The bias-corrected mean square of the gradients (Adam's correction of the running
    average that starts at 0)."""
    return avg_sq / (1 - (1 - sq_grad_rate) ** num_updates)


def trajectory_update(
    state: TrajectoryState,
    gradient: float,
    learning_rate: float = 0.025,
    sq_grad_rate: float = 0.05,
) -> TrajectoryState:
    """One RMSProp-normalised step of ``log T`` up the ChEES gradient, clipped to ±0.35, with
    the iterate average updated (weight ``k^{-1/2}`` at update ``k``). A gradient larger than
    ten root-mean-squares of the earlier ones (the first: larger than 1) is clipped first.

    Example:
        >>> s = trajectory_update(trajectory_init(1.0), 3.0)
        >>> math.exp(s.log_length) > 1.0
        True
    """
    k = state.num_updates + 1
    if not math.isfinite(gradient):
        gradient = 0.0
    # One chain thrown far out can make the pooled gradient 10^8 times its usual size; let no
    # gradient exceed MAX_GRAD_RATIO root-mean-squares of the ones before it (the first one:
    # MAX_FIRST_GRAD), or the normaliser would remember it for hundreds of iterations and
    # freeze T.
    if state.avg_sq_grad > 0:
        bound = MAX_GRAD_RATIO * math.sqrt(
            _mean_sq_grad(state.avg_sq_grad, state.num_updates, sq_grad_rate)
        )
    else:
        bound = MAX_FIRST_GRAD
    gradient = min(max(gradient, -bound), bound)
    avg_sq = (1 - sq_grad_rate) * state.avg_sq_grad + sq_grad_rate * gradient**2
    adjusted = _mean_sq_grad(avg_sq, k, sq_grad_rate)
    step = learning_rate / math.sqrt(adjusted + 1e-20) * gradient
    log_length = state.log_length + min(max(step, -MAX_LOG_UPDATE), MAX_LOG_UPDATE)
    w = k**-0.5
    avg = w * log_length + (1 - w) * state.log_length_avg
    return TrajectoryState(log_length, avg, avg_sq, k)


def trajectory_restart(state: TrajectoryState, sq_grad_rate: float = 0.05) -> TrajectoryState:
    """Keep ``log T``, restart the iterate average there and fold the gradient history into
    one update of its root-mean-square: warm-up calls this when the mass matrix changes, as
    gradients measured in the old geometry (often while the chains were still far from the
    bulk, and many orders of magnitude larger) would otherwise dominate the RMSProp
    normaliser and freeze ``T``. The folded history still bounds the next gradients (see
    :func:`trajectory_update`) and fades within a few tens of updates.

    Example:
        >>> s = trajectory_restart(trajectory_update(trajectory_init(1.0), 0.5))
        >>> s.num_updates, round(s.avg_sq_grad, 4), s.log_length == s.log_length_avg
        (1, 0.0125, True)
    """
    if state.num_updates == 0:
        return TrajectoryState(state.log_length, state.log_length, 0.0, 0)
    adjusted = _mean_sq_grad(state.avg_sq_grad, state.num_updates, sq_grad_rate)
    return TrajectoryState(state.log_length, state.log_length, sq_grad_rate * adjusted, 1)


def trajectory_final(state: TrajectoryState) -> float:
    """The averaged trajectory length to sample with after warm-up.

    Example:
        >>> trajectory_final(trajectory_init(2.0))
        2.0
    """
    return math.exp(state.log_length_avg)
