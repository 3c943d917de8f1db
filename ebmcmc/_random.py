"""Accepting randomness arguments: a ``torch.Generator``, an int seed, or ``None``."""

from __future__ import annotations

import torch

__all__ = ["as_generator"]


def as_generator(generator, name: str = "generator") -> torch.Generator | None:
    """A ``torch.Generator`` from a generator or an int seed; ``None`` stays ``None`` (torch's
    default generator).

    Example:
        >>> as_generator(3).initial_seed()
        3
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(
        f"{name} must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
    )
