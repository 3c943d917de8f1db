"""Dual averaging of ``log(step_size)`` towards a target acceptance rate, as pure functions.

Hoffman & Gelman (2014), algorithm 5, with Stan's constants. The state may hold Python floats
(one shared step size: the cheapest path) or tensors (elementwise: one step size per chain,
per replica, per level).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DualAveragingState",
    "dual_averaging_init",
    "dual_averaging_update",
    "dual_averaging_final",
    "DualAveraging",
]

Value = float | Tensor


class DualAveragingState(NamedTuple):
    """The running quantities of dual averaging (floats or tensors of one shape).

    Attributes:
        log_step: the current ``log`` step size.
        log_step_avg: the iterate average of ``log_step`` (used after warm-up).
        h_bar: the running average of ``target - accept``.
        mu: the shrinkage point, ``log(10 * step_size)`` at (re)start.
        num_updates: updates so far.

    Example:
        >>> s = dual_averaging_init(0.5)
        >>> s.num_updates, round(s.mu, 4)
        (0, 1.6094)
    """

    log_step: Value
    log_step_avg: Value
    h_bar: Value
    mu: Value
    num_updates: int


def _log(v: Value) -> Value:
    return math.log(v) if isinstance(v, float) else torch.log(v)


def _exp(v: Value) -> Value:
    return math.exp(v) if isinstance(v, float) else torch.exp(v)


def dual_averaging_init(step_size: Value) -> DualAveragingState:
    """Start (or restart, as Stan does after each mass-matrix window) around ``10 * step``.

    Args:
        step_size: a Python float (one shared step) or a tensor (elementwise).

    Example:
        >>> import torch
        >>> dual_averaging_init(torch.tensor([0.1, 1.0])).h_bar
        tensor([0., 0.])
    """
    log_step = _log(step_size)
    zero: Value = torch.zeros_like(log_step) if isinstance(log_step, Tensor) else 0.0
    return DualAveragingState(log_step, zero, zero, math.log(10.0) + log_step, 0)


def dual_averaging_update(
    state: DualAveragingState,
    accept_prob: Value,
    target_accept: float,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> tuple[DualAveragingState, Value]:
    """One update from an acceptance figure (a float, or a tensor shaped like the state).

    NaN acceptance counts as 0; values are clamped to ``[0, 1]``.

    Returns:
        ``(new_state, next_step_size)``.

    Example:
        >>> s = dual_averaging_init(1.0)
        >>> for _ in range(50):
        ...     s, step = dual_averaging_update(s, 0.3, target_accept=0.8)
        >>> dual_averaging_final(s) < 1.0   # accepting too little: the step shrinks
        True
    """
    t = state.num_updates + 1
    w = 1.0 / (t + t0)
    a: Value
    if isinstance(state.log_step, float):
        af = float(accept_prob)
        a = 0.0 if math.isnan(af) else min(max(af, 0.0), 1.0)
    else:
        a = torch.nan_to_num(torch.as_tensor(accept_prob), nan=0.0).clamp(0, 1)
    h_bar = (1 - w) * state.h_bar + w * (target_accept - a)
    log_step = state.mu - math.sqrt(t) / gamma * h_bar
    eta = t ** (-kappa)
    log_step_avg = eta * log_step + (1 - eta) * state.log_step_avg
    new = DualAveragingState(log_step, log_step_avg, h_bar, state.mu, t)
    return new, _exp(log_step)


def dual_averaging_final(state: DualAveragingState) -> Value:
    """The averaged step size to sample with after warm-up (the current one before any
    update).

    Example:
        >>> dual_averaging_final(dual_averaging_init(0.25))
        0.25
    """
    if state.num_updates == 0:
        return _exp(state.log_step)
    return _exp(state.log_step_avg)


class DualAveraging:
    """Dual averaging as an object: :func:`dual_averaging_init` / ``update`` / ``final`` with
    the state kept inside (the form warm-up loops find convenient).

    Args:
        step_size: initial step size, a float or a tensor (elementwise).
        target_accept: the acceptance probability to aim for, in ``(0, 1)``.
        gamma: regularization scale (0.05, as in Stan).
        t0: iteration offset that damps the first updates (10, as in Stan).
        kappa: decay exponent of the iterate averaging (0.75, as in Stan).

    Example:
        >>> import torch
        >>> da = DualAveraging(torch.tensor(1.0), target_accept=0.8)
        >>> for _ in range(50):
        ...     _ = da.update(torch.tensor(0.3))  # too low: the step size shrinks
        >>> bool(da.final_step_size() < 1.0)
        True
    """

    def __init__(
        self,
        step_size: Value,
        target_accept: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
        self.target_accept, self.gamma, self.t0, self.kappa = target_accept, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: Value) -> None:
        """Start afresh around ``10 * step_size`` (as Stan does after each window)."""
        self.state = dual_averaging_init(step_size)

    @property
    def scalar(self) -> bool:
        """Whether one shared step size is adapted (Python floats)."""
        return isinstance(self.state.log_step, float)

    @property
    def log_step(self) -> Value:
        """The current ``log`` step size."""
        return self.state.log_step

    @property
    def count(self) -> int:
        """Updates since the (re)start."""
        return self.state.num_updates

    @property
    def mu(self) -> Value:
        """The shrinkage point ``log(10 * step_size)`` of the (re)start."""
        return self.state.mu

    def update(self, accept_prob: Value) -> Value:
        """Take one acceptance figure; return the next step size."""
        self.state, step = dual_averaging_update(
            self.state, accept_prob, self.target_accept, self.gamma, self.t0, self.kappa
        )
        return step

    def current_step_size(self) -> Value:
        """The step size of the latest update (or of the start)."""
        return _exp(self.state.log_step)

    def final_step_size(self) -> Value:
        """The averaged step size to use after warm-up."""
        return dual_averaging_final(self.state)
