"""Randomness arguments: a ``torch.Generator``, an int seed, or ``None``.

One rule everywhere in ebmcmc: a generator is used as given, an int seeds a new generator, and
``None`` makes a new generator seeded from fresh entropy (a run that is not reproducible). The
process-wide default generator is never used.
"""

from __future__ import annotations

import torch

__all__ = ["make_generator", "Generatorish"]

Generatorish = torch.Generator | int | None
"""What every ``generator`` argument accepts."""


def make_generator(
    generator: Generatorish = None, device: torch.device | str = "cpu", name: str = "generator"
) -> torch.Generator:
    """A ``torch.Generator`` from a generator, an int seed, or ``None`` (fresh random seed).

    Args:
        generator: a ``torch.Generator`` (returned as is), an int seed, or ``None``.
        device: where a new generator lives (ignored for a given generator).
        name: the argument's name in error messages.

    Returns:
        A ``torch.Generator``.

    Raises:
        TypeError: for anything else (``True`` is not a seed).

    Example:
        >>> make_generator(0).initial_seed()
        0
        >>> g = torch.Generator().manual_seed(1)
        >>> make_generator(g) is g
        True
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is not None and (isinstance(generator, bool) or not isinstance(generator, int)):
        raise TypeError(
            f"{name} must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    if generator is not None and not -(2**63) <= generator < 2**64:
        raise ValueError(f"{name} must be a seed in [-2**63, 2**64), got {generator}")
    g = torch.Generator(device=device)
    if generator is None:
        g.seed()
    else:
        g.manual_seed(generator)
    return g
