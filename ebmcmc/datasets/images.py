"""Image data sets on disk: scikit-learn's 8 x 8 digits and MNIST in its IDX format.

Images are float32 ``(N, C, H, W)`` scaled to ``[-1, 1]`` (the convention of DRL and its
relatives); labels are int64 ``(N,)``. Nothing here downloads: the file loaders read what is
already on disk and raise ``FileNotFoundError`` naming the files they expect.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._random import Generatorish, make_generator

__all__ = ["load_digits", "read_idx", "load_mnist", "MNIST_FILES"]


def _split_index(n: int, split, test_fraction: float, generator) -> Tensor:
    if split is None or split == "all":
        return torch.arange(n)
    if split not in ("train", "test"):
        raise ValueError(f"split must be None, 'all', 'train' or 'test', got {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if generator is None:
        g = torch.Generator().manual_seed(0)
    elif isinstance(generator, torch.Generator):
        # a copy, so that train and test drawn with the same generator are complementary
        g = torch.Generator(device=generator.device)
        g.set_state(generator.get_state())
    else:
        g = make_generator(generator)
    perm = torch.randperm(n, generator=g, device=g.device).cpu()
    n_test = int(round(test_fraction * n))
    return perm[:n_test] if split == "test" else perm[n_test:]


def load_digits(
    split: str | None = None, generator: Generatorish = None, *, test_fraction: float = 0.2
) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8 x 8 handwritten digits (1797 images, bundled with scikit-learn).

    Pixel values ``0..16`` are mapped to ``[-1, 1]`` by ``v / 8 - 1``.

    Args:
        split: ``None`` or ``"all"`` (every image, in scikit-learn's order), ``"train"`` or
            ``"test"``: a random split with ``test_fraction`` of the images in the test part.
        generator: decides the split. ``None``: a fixed permutation (seed 0); an int: that
            seed; a ``torch.Generator``: a permutation drawn from a *copy* of its state (the
            generator is not advanced, so ``"train"`` and ``"test"`` taken with the same
            generator are complementary).
        test_fraction: fraction of the images in the test part (default 0.2: 359 of 1797 images).

    Returns:
        ``(images, labels)``: float32 ``(N, 1, 8, 8)`` in ``[-1, 1]`` and int64 ``(N,)``.

    Example:
        >>> x, y = load_digits("test")
        >>> x.shape, y.shape, float(x.min()), float(x.max())
        (torch.Size([359, 1, 8, 8]), torch.Size([359]), -1.0, 1.0)
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.as_tensor(np.asarray(bunch.images), dtype=torch.float32)
    x = (images / 8.0 - 1.0).unsqueeze(1)
    y = torch.as_tensor(np.asarray(bunch.target), dtype=torch.int64)
    idx = _split_index(x.shape[0], split, test_fraction, generator)
    return x[idx].contiguous(), y[idx].contiguous()


# --------------------------------------------------------------------------- MNIST (IDX)

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""The IDX file names (without ``.gz``) of each MNIST split: ``(images, labels)``."""


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt gzip stream ({e})") from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or raw.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per
    dimension; the data follow in C order, big-endian. A file whose payload is not exactly the
    size the header announces is rejected.

    Args:
        path: the file (gzip is detected from its magic bytes, not its name).

    Returns:
        a numpy array of the announced shape in native byte order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad magic number, unknown type code, or payload of the wrong size.

    Example:
        >>> import gzip, os, struct, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x.idx1.gz")
        >>> with gzip.open(p, "wb") as f:
        ...     _ = f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 8, 9]))
        >>> read_idx(p).tolist()
        [7, 8, 9]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    z0, z1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if z0 != 0 or z1 != 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (must start with two zero bytes)"
        )
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header announces 0 dimensions")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {head})")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - head != expected:
        raise ValueError(
            f"{path}: IDX payload is {len(raw) - head} bytes but the header "
            f"(shape {dims}, {dtype.name}) announces {expected}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str, expected: list[str]) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"{stem}(.gz) not found in {root}; load_mnist expects the files {', '.join(expected)}"
    )


def load_mnist(path: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST from its original IDX files in directory ``path`` (no download).

    Expected files (each gzipped or raw): ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz`` for ``split="train"``; ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz`` for ``split="test"``. Images must have magic 0x00000803
    (uint8, 3 dims), labels 0x00000801 (uint8, 1 dim), the same count, labels in ``0..9``.
    Fashion-MNIST uses the same format and names, so it loads too.

    Args:
        path: the directory holding the files.
        split: ``"train"`` (60 000 images) or ``"test"`` (10 000; ``"t10k"`` accepted).

    Returns:
        ``(images, labels)``: float32 ``(N, 1, H, W)`` (28 x 28 for MNIST) scaled by
        ``v / 127.5 - 1`` to ``[-1, 1]``, and int64 ``(N,)``.

    Raises:
        FileNotFoundError: missing directory or file (the message names the expected files).
        ValueError: corrupt header or mismatched sizes.

    Example:
        >>> import gzip, os, struct, tempfile
        >>> import numpy as np
        >>> d = tempfile.mkdtemp()  # three blank images in MNIST's own format
        >>> with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        ...     _ = f.write(struct.pack(">HBB3I", 0, 0x08, 3, 3, 28, 28) + bytes(3 * 28 * 28))
        >>> with gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        ...     _ = f.write(struct.pack(">HBBI", 0, 0x08, 1, 3) + bytes([7, 2, 1]))
        >>> x, y = load_mnist(d, "test")
        >>> x.shape, y.tolist(), float(x.min())
        (torch.Size([3, 1, 28, 28]), [7, 2, 1], -1.0)
    """
    if split == "t10k":
        split = "test"
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(path).expanduser()
    expected = [s + ".gz" for s in MNIST_FILES[split]]
    if not root.is_dir():
        raise FileNotFoundError(
            f"MNIST directory not found: {root}; expected a directory holding {', '.join(expected)}"
        )
    img_path = _find_idx(root, MNIST_FILES[split][0], expected)
    lab_path = _find_idx(root, MNIST_FILES[split][1], expected)
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{img_path}: expected IDX magic 0x00000803 (uint8 images, 3 dims), got "
            f"{images.dtype} with {images.ndim} dims"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{lab_path}: expected IDX magic 0x00000801 (uint8 labels, 1 dim), got "
            f"{labels.dtype} with {labels.ndim} dims"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds "
            f"{labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lab_path}: labels must be in 0..9, found {int(labels.max())}")
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(127.5).sub_(1.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


# --------------------------------------------------------------------------- CIFAR-10
