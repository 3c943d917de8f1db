"""Small argument checks shared across ebmcmc, each raising a clear error naming the argument."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_nonneg", "check_pos", "check_int", "check_real", "check_flag"]


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
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_real(
    name: str,
    value,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (an end excluded where ``*_open``).

    Bools and strings are not numbers here (``TypeError``); a one-element tensor is.

    Example:
        >>> check_real("jitter", 0.25, 0, 1, high_open=True)
        0.25
    """
    boolean = "bool" in str(getattr(value, "dtype", ""))  # numpy / torch bools
    if isinstance(value, bool | str | bytes) or value is None or boolean:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if not math.isfinite(v) or below or above:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return v


def check_flag(name: str, value) -> bool:
    """``value`` as a bool: ``True``/``False`` (or a NumPy bool), nothing else.

    A string such as ``"no"`` would otherwise count as true.

    Example:
        >>> check_flag("progress", False)
        False
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")
