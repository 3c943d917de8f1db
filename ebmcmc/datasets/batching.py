"""Minibatches and augmentation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .._checks import check_nonneg as _check_nonneg
from .._random import Generatorish, make_generator

__all__ = ["batches", "random_hflip"]


def batches(
    x: Tensor | Sequence[Tensor],
    batch_size: int,
    generator: Generatorish = None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[Tensor | tuple[Tensor, ...]]:
    """Yield minibatches of ``x`` (one pass, shuffled with ``generator``).

    Args:
        x: a tensor ``(N, ...)`` or a sequence of tensors with the same leading size ``N``
            (e.g. ``(images, labels)``), batched together.
        batch_size: positive int.
        generator: ``torch.Generator`` or int seed for the permutation.
        shuffle: ``False`` keeps the original order.
        drop_last: drop a final batch smaller than ``batch_size``.

    Yields:
        tensors ``(B, ...)`` (or tuples of them when ``x`` is a sequence).

    Example:
        >>> import torch
        >>> [b.tolist() for b in batches(torch.arange(5), 2, shuffle=False)]
        [[0, 1], [2, 3], [4]]
    """
    single = isinstance(x, Tensor)
    xs = (x,) if single else tuple(x)
    if not xs or not all(isinstance(t, Tensor) for t in xs):
        raise TypeError("x must be a tensor or a non-empty sequence of tensors")
    if any(t.ndim == 0 for t in xs):
        raise ValueError("x must have a leading (sample) dimension")
    n = xs[0].shape[0]
    if any(t.shape[0] != n for t in xs):
        raise ValueError(f"x: tensors must share the leading size, got {[t.shape[0] for t in xs]}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if shuffle:
        g = make_generator(generator)
        order = torch.randperm(n, generator=g, device=g.device)
    else:
        order = torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        out = tuple(t[idx.to(t.device)] for t in xs)
        yield out[0] if single else out


def random_hflip(x: Tensor, generator: Generatorish = None, p: float = 0.5) -> Tensor:
    """Flip each image left-right with probability ``p`` (the last dimension is the width).

    Args:
        x: images ``(N, ..., W)``, e.g. ``(N, C, H, W)``.
        generator: ``torch.Generator`` or int seed.
        p: flip probability in ``[0, 1]``.

    Returns:
        a new tensor like ``x``.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> random_hflip(x, p=1.0)[0, 0].tolist()
        [[1.0, 0.0], [3.0, 2.0]]
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, ..., W), got {tuple(x.shape)}")
    p = _check_nonneg("p", p)
    if p > 1:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    g = make_generator(generator)
    u = torch.rand(x.shape[0], generator=g, device=g.device).to(x.device)
    mask = (u < p).reshape((-1,) + (1,) * (x.ndim - 1))
    return torch.where(mask, x.flip(-1), x)
