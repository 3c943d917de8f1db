"""Deprecation helpers: old names keep working for one release, with a ``DeprecationWarning``.

Everything renamed or moved in 0.2 keeps its old spelling until 0.3. The warning names the new
spelling, so a user fixes the call without opening the docs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["warn_deprecated", "pop_renamed", "renamed_kwargs", "deprecated_alias", "REMOVED_IN"]

REMOVED_IN = "0.3"


def warn_deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Emit the one deprecation message ebmcmc uses: ``old`` is deprecated, use ``new``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     warn_deprecated("ebmcmc.data", "ebmcmc.datasets")
        >>> "use ebmcmc.datasets" in str(w[0].message)
        True
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in ebmcmc {REMOVED_IN}; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def pop_renamed(kwargs: dict[str, Any], renames: dict[str, str], where: str) -> dict[str, Any]:
    """Move deprecated keyword arguments in ``kwargs`` to their new names (with a warning).

    Raises ``TypeError`` if both spellings are given.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     pop_renamed({"num_steps": 5}, {"num_steps": "num_leapfrog_steps"}, "HMC")
        {'num_leapfrog_steps': 5}
    """
    out = dict(kwargs)
    for old, new in renames.items():
        if old in out:
            if new in out:
                raise TypeError(f"{where}: give {new}= only ({old}= is its deprecated spelling)")
            warn_deprecated(f"{where}({old}=...)", f"{new}=", stacklevel=4)
            out[new] = out.pop(old)
    return out


def renamed_kwargs(**renames: str) -> Callable:
    """Decorator: accept the deprecated keyword names ``old=new`` of a function.

    Example:
        >>> import warnings
        >>> @renamed_kwargs(steps="num_mcmc_steps")
        ... def f(num_mcmc_steps=1):
        ...     return num_mcmc_steps
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     f(steps=3)
        3
    """

    def wrap(fn: Callable) -> Callable:
        where = getattr(fn, "__qualname__", getattr(fn, "__name__", "function"))

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if any(k in kwargs for k in renames):
                kwargs = pop_renamed(kwargs, renames, where)
            return fn(*args, **kwargs)

        return inner

    return wrap


def deprecated_alias(new: Callable, old_name: str, new_name: str) -> Callable:
    """A function under a deprecated name that warns and calls ``new``.

    Example:
        >>> import warnings
        >>> old = deprecated_alias(abs, "ebmcmc.old_abs", "abs")
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     old(-2)
        2
    """

    @functools.wraps(new)
    def alias(*args, **kwargs):
        warn_deprecated(old_name, new_name)
        return new(*args, **kwargs)

    alias.__doc__ = f"Deprecated alias of ``{new_name}`` (removed in ebmcmc {REMOVED_IN})."
    return alias
