"""Which hyperparameters warm-up tunes, and whether one value is shared or kept per chain.

**The rule.** Adaptation tunes the ``step_size`` and ``inverse_mass_matrix`` fields of every
*leaf* kernel reached from the kernel it is given. A composite kernel says which kernels it
runs, with the state and info that belong to each, through ``kernel.children(state, info)``
(:class:`~ebmcmc.kernels.Cycle` → every kernel of the cycle; :class:`~ebmcmc.kernels.Masked`,
:class:`~ebmcmc.kernels.ChainMask`, :class:`~ebmcmc.kernels.ReplicaExchange`,
:class:`~ebmcmc.kernels.LevelGibbs` → their inner kernel); a kernel without children is a leaf.
A leaf is tuned towards its ``default_target_accept`` (or the configured target). The tuned
value is put back with ``dataclasses.replace`` along the path of ``kernel``/``kernels`` fields.

**Pooling follows the shape.** A step size that is a number (or has size 1 along a batch
dimension) is one value shared by those chains: the acceptance is averaged over them, and the
mass matrix pools their positions. A step size of the full batch shape is tuned per chain.
:class:`~ebmcmc.kernels.ReplicaExchange` keeps one step size per replica (shape ``(R, 1)``),
so its replicas are tuned apart and the chains within a replica together.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from ..kernels.base import Kernel

__all__ = ["Leaf", "leaves", "kernel_at", "replace_at", "pool_dims", "TUNED_FIELDS"]

#: the hyperparameters warm-up adaptation tunes
TUNED_FIELDS = ("step_size", "inverse_mass_matrix")


class Leaf(NamedTuple):
    """A kernel warm-up can tune, where it sits, and its current state and info.

    Attributes:
        path: child indices from the outer kernel to this one (``()``: the kernel itself).
        kernel: the leaf kernel.
        state: its state (``None`` when not given).
        info: its info of the last step (``None`` when not given or when it did not move).

    Example:
        >>> from ebmcmc.kernels import MALA
        >>> leaves(MALA(0.1))[0].path
        ()
    """

    path: tuple[int, ...]
    kernel: Kernel
    state: Any
    info: Any


def _tunable(kernel: Kernel) -> bool:
    names = {f.name for f in dataclasses.fields(kernel)}
    return any(n in names for n in TUNED_FIELDS)


def leaves(kernel: Kernel, state=None, info=None, path: tuple[int, ...] = ()) -> list[Leaf]:
    """Every tunable leaf kernel reached through ``children``, with its state and info.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA, Cycle, RandomWalk
        >>> [type(leaf.kernel).__name__ for leaf in leaves(Cycle(MALA(0.1), RandomWalk(1.0)))]
        ['MALA', 'RandomWalk']
    """
    kids = kernel.children(state, info)
    if kids:
        out: list[Leaf] = []
        for i, (k, s, inf) in enumerate(kids):
            out += leaves(k, s, inf, path + (i,))
        return out
    return [Leaf(path, kernel, state, info)] if _tunable(kernel) else []


def kernel_at(kernel: Kernel, path: tuple[int, ...]) -> Kernel:
    """The kernel at ``path`` (following ``kernel``/``kernels`` fields).

    Example:
        >>> from ebmcmc.kernels import MALA, Cycle, RandomWalk
        >>> kernel_at(Cycle(MALA(0.1), RandomWalk(1.0)), (1,)).step_size
        1.0
    """
    for i in path:
        kernel = kernel.kernels[i] if hasattr(kernel, "kernels") else kernel.kernel  # type: ignore[attr-defined]
    return kernel


def replace_at(kernel: Kernel, path: tuple[int, ...], **changes) -> Kernel:
    """A copy of ``kernel`` with the kernel at ``path`` changed (every level rebuilt with
    ``dataclasses.replace``, so every level is validated).

    Example:
        >>> from ebmcmc.kernels import MALA, Cycle, RandomWalk
        >>> c = replace_at(Cycle(MALA(0.1), RandomWalk(1.0)), (0,), step_size=0.2)
        >>> c.kernels[0].step_size, c.kernels[1].step_size
        (0.2, 1.0)
    """
    if not path:
        return dataclasses.replace(kernel, **changes)
    i, rest = path[0], path[1:]
    if hasattr(kernel, "kernels"):
        inner = list(kernel.kernels)
        inner[i] = replace_at(inner[i], rest, **changes)
        return dataclasses.replace(kernel, kernels=tuple(inner))  # type: ignore[call-arg]
    new = replace_at(kernel.kernel, rest, **changes)  # type: ignore[attr-defined]
    return dataclasses.replace(kernel, kernel=new)  # type: ignore[call-arg]


def pool_dims(value, batch_shape: torch.Size, name: str = "step_size") -> tuple[int, ...]:
    """The batch dimensions along which ``value`` is one shared number (size 1 there).

    Args:
        value: a hyperparameter (number or tensor broadcastable to ``batch_shape``).
        batch_shape: the chains' batch shape.
        name: the hyperparameter's name, for errors.

    Example:
        >>> import torch
        >>> pool_dims(0.1, torch.Size([4, 8])), pool_dims(torch.ones(4, 1), torch.Size([4, 8]))
        ((0, 1), (1,))
    """
    t = torch.as_tensor(value)
    nb = len(batch_shape)
    if t.ndim > nb:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} has more dimensions than the chains' batch "
            f"shape {tuple(batch_shape)}"
        )
    shape = (1,) * (nb - t.ndim) + tuple(t.shape)
    for d, (a, b) in enumerate(zip(shape, batch_shape, strict=True)):
        if a not in (1, b):
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast to the chains' batch "
                f"shape {tuple(batch_shape)} (dimension {d})"
            )
    return tuple(d for d, a in enumerate(shape) if a == 1)
