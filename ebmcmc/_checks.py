"""Small argument checks shared across ebmcmc, each raising a clear error naming the argument."""

from __future__ import annotations

import math

__all__ = ["check_nonneg", "check_pos", "check_int"]


def check_nonneg(name: str, value) -> float:
    """``value`` as a finite float ``>= 0`` (``TypeError`` for non-numbers and bools).

    Example:
        >>> check_nonneg("noise_std", 0)
        0.0
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def check_pos(name: str, value) -> float:
    """``value`` as a finite float ``> 0``.

    Example:
        >>> check_pos("std", 0.1)
        0.1
    """
    v = check_nonneg(name, value)
    if v == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_int(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int ``>= minimum`` (a bool is not an int here).

    Example:
        >>> check_int("num_samples", 10, 1)
        10
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
