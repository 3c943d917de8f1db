"""Out-of-distribution image sets for a model of MNIST, built from what is on disk.

Every set is float32 ``(N, 1, 28, 28)`` in ``[-1, 1]``, like :func:`~ebmcmc.datasets.load_mnist`:

* ``digits``: scikit-learn's 8 x 8 digits (:func:`~ebmcmc.datasets.load_digits`) resized to
  28 x 28 (bilinear);
* ``inverted``: MNIST with the intensities inverted (``x -> -x`` in ``[-1, 1]``);
* ``rotated``: MNIST rotated by 90 degrees (counter-clockwise);
* ``uniform``: independent uniform noise on ``[-1, 1]`` per pixel;
* ``constant``: images of one grey value each, uniform on ``[-1, 1]``.

:func:`mnist_ood_sets` builds them from MNIST images already in memory and
:func:`load_mnist_ood_sets` from the IDX files in a directory. Score them with
:func:`ebmcmc.evaluation.ood_auroc_table`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from .._random import Generatorish, make_generator
from .images import load_digits, load_mnist

__all__ = ["OOD_SETS", "resize_images", "mnist_ood_sets", "load_mnist_ood_sets"]

#: the names of the sets :func:`mnist_ood_sets` builds, in its order
OOD_SETS = ("digits", "inverted", "rotated", "uniform", "constant")


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize images ``(N, C, H, W)`` to ``(N, C, size, size)`` by bilinear interpolation
    (``align_corners=False``), clamped to the input's range.

    Example:
        >>> import torch
        >>> resize_images(torch.zeros(2, 1, 8, 8), 28).shape
        torch.Size([2, 1, 28, 28])
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("images must be a floating-point tensor of shape (N, C, H, W)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp(float(images.min()), float(images.max())) if images.numel() else out


def mnist_ood_sets(
    images: Tensor,
    num: int | None = None,
    generator: Generatorish = 0,
    *,
    sets: tuple[str, ...] = OOD_SETS,
) -> dict[str, Tensor]:
    """The out-of-distribution sets of :data:`OOD_SETS` for MNIST-like ``images``.

    Made for MNIST; square grey images of another size ``S`` (the 8 x 8 digits) get the same
    sets at their size (``digits`` resized to ``S``, which for the digits themselves is no
    longer out of distribution: leave it out with ``sets``).

    Args:
        images: MNIST images ``(N, 1, 28, 28)`` in ``[-1, 1]`` (usually the test split), from
            which ``inverted`` and ``rotated`` are made; or other ``(N, 1, S, S)`` images.
        num: images per set (default: ``N``; ``digits`` has at most 1,797).
        generator: seeds the noise sets and the choice of images when ``num < N``.
        sets: which sets to build (a subset of :data:`OOD_SETS`).

    Returns:
        ``name -> images (num, 1, S, S)`` float32 in ``[-1, 1]``.

    Example:
        >>> import torch
        >>> mnist = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
        >>> ood = mnist_ood_sets(mnist)
        >>> list(ood), tuple(ood["digits"].shape)
        (['digits', 'inverted', 'rotated', 'uniform', 'constant'], (10, 1, 28, 28))
        >>> torch.equal(ood["inverted"], -mnist), ood["constant"][3].unique().numel()
        (True, 1)
    """
    ok = isinstance(images, Tensor) and images.ndim == 4 and images.shape[1] == 1
    if not ok or images.shape[2] != images.shape[3]:
        raise ValueError(
            "images must have shape (N, 1, S, S), e.g. (N, 1, 28, 28), got "
            f"{tuple(getattr(images, 'shape', ()))}"
        )
    unknown = set(sets) - set(OOD_SETS)
    if unknown:
        raise ValueError(f"unknown OOD sets {sorted(unknown)}; choose from {OOD_SETS}")
    n_all = images.shape[0]
    n = n_all if num is None else int(num)
    if not 1 <= n <= n_all:
        raise ValueError(f"num must lie in [1, {n_all}] (the images given), got {num!r}")
    g = make_generator(generator)
    pick = torch.randperm(n_all, generator=g)[:n] if n < n_all else torch.arange(n_all)
    base = images[pick].to(torch.float32)
    side = int(images.shape[-1])
    shape = (n, 1, side, side)
    out: dict[str, Tensor] = {}
    for name in sets:
        if name == "digits":
            digits = resize_images(load_digits()[0], side)
            out[name] = digits[torch.randperm(digits.shape[0], generator=g)[: min(n, 1797)]]
        elif name == "inverted":
            out[name] = -base
        elif name == "rotated":
            out[name] = torch.rot90(base, 1, dims=(2, 3)).contiguous()
        elif name == "uniform":
            out[name] = torch.rand(shape, generator=g) * 2 - 1
        else:  # constant
            out[name] = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1).expand(shape).contiguous()
    return out


def load_mnist_ood_sets(
    path: str | os.PathLike,
    num: int | None = None,
    generator: Generatorish = 0,
    *,
    split: str = "test",
    sets: tuple[str, ...] = OOD_SETS,
) -> dict[str, Tensor]:
    """:func:`mnist_ood_sets` of the MNIST ``split`` read from the IDX files in ``path``
    (see :func:`~ebmcmc.datasets.load_mnist`; nothing is downloaded).

    Raises:
        FileNotFoundError: the MNIST files are not in ``path``.

    Example:
        >>> import gzip, os, struct, tempfile
        >>> d = tempfile.mkdtemp()  # three blank images in MNIST's own format
        >>> with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        ...     _ = f.write(struct.pack(">HBB3I", 0, 0x08, 3, 3, 28, 28) + bytes(3 * 28 * 28))
        >>> with gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        ...     _ = f.write(struct.pack(">HBBI", 0, 0x08, 1, 3) + bytes([7, 2, 1]))
        >>> float(load_mnist_ood_sets(d)["inverted"].min())
        1.0
    """
    images, _ = load_mnist(path, split)
    return mnist_ood_sets(images, num, generator, sets=sets)
