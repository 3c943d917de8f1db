"""Data sets: 2-D toys with exact densities, scikit-learn digits, MNIST (IDX) and CIFAR-10.

Everything returns ``torch`` tensors. Images are float32 of shape ``(N, C, H, W)`` scaled to
``[-1, 1]`` (the convention of DRL and its relatives); labels are int64 of shape ``(N,)``.
Nothing here downloads: the file loaders read what is already on disk and raise
``FileNotFoundError`` naming the files they expect.

**2-D toy sets** (float32 ``(n, 2)``; all roughly within ``[-4, 4]^2``):

- ``eight_gaussians``: 8 equal Gaussians centred on the circle of radius 2 at angles
  ``k pi / 4``, isotropic sd 0.1 (FFJORD-style at radius 2 with sd = 0.05 x radius, sharper
  than FFJORD's 0.125 x radius).
- ``grid25``: 5 x 5 equal Gaussians centred on ``{-2, -1, 0, 1, 2}^2``, sd 0.1.
- ``rings``: 4 concentric rings of radii 1, 2, 3, 4 (DAEBM's toy, ``toy_radius = 1``), equal
  mass per ring, uniform angle, isotropic Gaussian noise sd 0.01.
- ``checkerboard``: uniform on the 8 "black" unit squares of a 4 x 4 board on ``[-2, 2]^2``
  (lower-left corner ``(i, j)`` with ``i + j`` even).
- ``swiss_roll``: ``t ~ U(1.5 pi, 4.5 pi)``, point ``(t cos t, t sin t) * 2 / (4.5 pi)``
  (outer radius 2), plus isotropic noise sd 0.05.

The Gaussian-mixture sets and the rings have exact densities:
:func:`eight_gaussians_target`, :func:`grid25_target` (``ebmcmc.targets.GaussianMixture``) and
:func:`rings_target` (:class:`RingsTarget`). Their ``noise_std`` argument convolves the data
density with isotropic Gaussian noise, e.g. DRL's level-0 noise ``sigma_bar_0 = 0.01``.

**Pickle safety.** CIFAR-10 batches are pickles. They are read with a restricted unpickler that
resolves only the handful of globals a plain numpy array needs; anything else (``os.system``,
``builtins.eval``, ...) raises ``pickle.UnpicklingError`` before it can run.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._random import as_generator
from .targets import GaussianMixture, Target, _check_n

__all__ = [
    "TOY_DATASETS",
    "toy_dataset",
    "eight_gaussians",
    "grid25",
    "rings",
    "checkerboard",
    "swiss_roll",
    "eight_gaussians_target",
    "grid25_target",
    "rings_target",
    "RingsTarget",
    "TOY_TARGETS",
    "toy_target",
    "load_digits",
    "read_idx",
    "load_mnist",
    "MNIST_FILES",
    "load_cifar10",
    "CIFAR10_CLASSES",
    "RestrictedUnpickler",
    "batches",
    "random_hflip",
]

Generatorish = torch.Generator | int | None


# --------------------------------------------------------------------------- helpers


_generator = as_generator  # a torch.Generator, an int seed, or None


def _device(g: torch.Generator | None) -> torch.device:
    return g.device if g is not None else torch.device("cpu")


def _check_nonneg(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def _check_pos(name: str, value) -> float:
    v = _check_nonneg(name, value)
    if v == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


# --------------------------------------------------------------------------- 2-D toys


def _eight_centres(radius: float) -> Tensor:
    ang = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return radius * torch.stack([torch.cos(ang), torch.sin(ang)], dim=-1)


def _grid_centres(spacing: float) -> Tensor:
    ticks = (torch.arange(5, dtype=torch.float64) - 2) * spacing
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)


def _mixture_samples(centres: Tensor, std: float, n: int, g) -> Tensor:
    dev = _device(g)
    idx = torch.randint(centres.shape[0], (n,), generator=g, device=dev)
    z = torch.randn(n, 2, generator=g, device=dev, dtype=torch.float64)
    return (centres.to(dev)[idx] + std * z).to(torch.float32)


def eight_gaussians(
    n: int, generator: Generatorish = None, *, radius: float = 2.0, std: float = 0.1
) -> Tensor:
    """Eight equal Gaussians on a circle.

    Centres ``radius * (cos(k pi/4), sin(k pi/4))``, ``k = 0..7``; isotropic sd ``std``.

    Args:
        n: number of points.
        generator: ``torch.Generator`` or int seed (``None``: torch's default generator).
        radius: radius of the circle of centres (default 2).
        std: standard deviation of each component (default 0.1).

    Returns:
        float32 tensor of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> eight_gaussians(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """
    n = _check_n(n)
    radius, std = _check_pos("radius", radius), _check_pos("std", std)
    return _mixture_samples(_eight_centres(radius), std, n, _generator(generator))


def grid25(
    n: int, generator: Generatorish = None, *, spacing: float = 1.0, std: float = 0.1
) -> Tensor:
    """A 5 x 5 grid of equal Gaussians centred on ``spacing * {-2, -1, 0, 1, 2}^2``.

    Args:
        n: number of points.
        generator: ``torch.Generator`` or int seed.
        spacing: distance between neighbouring centres (default 1).
        std: standard deviation of each component (default 0.1).

    Returns:
        float32 tensor of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> grid25(3, 0).shape
        torch.Size([3, 2])
    """
    n = _check_n(n)
    spacing, std = _check_pos("spacing", spacing), _check_pos("std", std)
    return _mixture_samples(_grid_centres(spacing), std, n, _generator(generator))


_RING_RADII = (1.0, 2.0, 3.0, 4.0)


def rings(
    n: int,
    generator: Generatorish = None,
    *,
    radii: Sequence[float] = _RING_RADII,
    std: float = 0.01,
) -> Tensor:
    """Concentric rings (DAEBM's 2-D toy): radii 1, 2, 3, 4 with noise sd 0.01.

    A ring is picked uniformly (equal mass per ring), then an angle uniformly, and isotropic
    Gaussian noise of sd ``std`` is added to the point on the circle. (DAEBM perturbs the
    radius only; at sd 0.01 the two are indistinguishable, and the isotropic version has the
    closed-form density of :class:`RingsTarget`.)

    Args:
        n: number of points.
        generator: ``torch.Generator`` or int seed.
        radii: ring radii (default ``(1, 2, 3, 4)``).
        std: noise standard deviation (default 0.01).

    Returns:
        float32 tensor of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> x = rings(1000, 0)
        >>> bool((x.norm(dim=-1) - 2.5).abs().max() < 1.6)
        True
    """
    r = _check_radii(radii)
    std = _check_pos("std", std)
    return _ring_points(r, std, _check_n(n), _generator(generator)).to(torch.float32)


def _ring_points(radii: Tensor, scale: float, n: int, g) -> Tensor:
    dev = _device(g)
    k = torch.randint(radii.numel(), (n,), generator=g, device=dev)
    theta = 2 * math.pi * torch.rand(n, generator=g, device=dev, dtype=torch.float64)
    z = torch.randn(n, 2, generator=g, device=dev, dtype=torch.float64)
    rad = radii.to(dev)[k]
    return torch.stack([rad * torch.cos(theta), rad * torch.sin(theta)], dim=-1) + scale * z


def checkerboard(n: int, generator: Generatorish = None) -> Tensor:
    """Uniform on the 8 black squares of a 4 x 4 checkerboard covering ``[-2, 2]^2``.

    The unit square with lower-left corner ``(i, j)`` (``i, j`` in ``{-2, -1, 0, 1}``) is black
    when ``i + j`` is even; the density is ``1/8`` there and 0 elsewhere.

    Args:
        n: number of points.
        generator: ``torch.Generator`` or int seed.

    Returns:
        float32 tensor of shape ``(n, 2)``.

    Example:
        >>> x = checkerboard(100, 0)
        >>> bool(((x.floor().sum(-1) % 2) == 0).all())
        True
    """
    n = _check_n(n)
    g = _generator(generator)
    dev = _device(g)
    i = torch.randint(-2, 2, (n,), generator=g, device=dev)
    # j ranges over the two values in {-2..1} with the parity of i: j = 2*m + (i mod 2) - 2
    m = torch.randint(0, 2, (n,), generator=g, device=dev)
    j = 2 * m + torch.remainder(i, 2) - 2
    u = torch.rand(n, 2, generator=g, device=dev, dtype=torch.float64)
    corner = torch.stack([i, j], dim=-1).to(torch.float64)
    return (corner + u).to(torch.float32)


def swiss_roll(n: int, generator: Generatorish = None, *, noise: float = 0.05) -> Tensor:
    """A 2-D Swiss roll: ``t ~ U(1.5 pi, 4.5 pi)``, ``x = (t cos t, t sin t) * 2 / (4.5 pi)``.

    The outer end lies at radius 2; isotropic Gaussian noise of sd ``noise`` is added.

    Args:
        n: number of points.
        generator: ``torch.Generator`` or int seed.
        noise: noise standard deviation (default 0.05; 0 allowed).

    Returns:
        float32 tensor of shape ``(n, 2)``.

    Example:
        >>> swiss_roll(5, 0).dtype
        torch.float32
    """
    n = _check_n(n)
    noise = _check_nonneg("noise", noise)
    g = _generator(generator)
    dev = _device(g)
    t = math.pi * (1.5 + 3.0 * torch.rand(n, generator=g, device=dev, dtype=torch.float64))
    z = torch.randn(n, 2, generator=g, device=dev, dtype=torch.float64)
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1) * (2.0 / (4.5 * math.pi))
    return (pts + noise * z).to(torch.float32)


TOY_DATASETS: dict[str, Callable[..., Tensor]] = {
    "eight_gaussians": eight_gaussians,
    "grid25": grid25,
    "rings": rings,
    "checkerboard": checkerboard,
    "swiss_roll": swiss_roll,
}
"""Registry of the 2-D toy sets: name -> ``fn(n, generator=None, **options) -> (n, 2)``."""


def toy_dataset(name: str, n: int, generator: Generatorish = None, **options) -> Tensor:
    """Draw ``n`` points of the 2-D toy set ``name`` (a key of :data:`TOY_DATASETS`).

    Args:
        name: one of ``eight_gaussians``, ``grid25``, ``rings``, ``checkerboard``,
            ``swiss_roll``.
        n: number of points.
        generator: ``torch.Generator`` or int seed.
        **options: keyword options of the set's function (e.g. ``std``).

    Returns:
        float32 tensor of shape ``(n, 2)``.

    Example:
        >>> toy_dataset("grid25", 8, 0).shape
        torch.Size([8, 2])
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"name must be one of {', '.join(sorted(TOY_DATASETS))}; got {name!r}")
    return TOY_DATASETS[name](n, generator, **options)


def _iso_mixture(centres: Tensor, std: float, noise_std) -> GaussianMixture:
    noise_std = _check_nonneg("noise_std", noise_std)
    var = std**2 + noise_std**2
    return GaussianMixture(centres, var * torch.eye(2, dtype=torch.float64))


def eight_gaussians_target(
    noise_std: float = 0.0, *, radius: float = 2.0, std: float = 0.1
) -> GaussianMixture:
    """Exact density of :func:`eight_gaussians`, convolved with ``N(0, noise_std^2 I)``.

    Args:
        noise_std: sd of extra isotropic Gaussian noise (e.g. DRL's ``sigma_bar_0 = 0.01``);
            each component's variance becomes ``std^2 + noise_std^2``.
        radius: as in :func:`eight_gaussians`.
        std: as in :func:`eight_gaussians`.

    Returns:
        a ``GaussianMixture`` with 8 components on ``(2,)`` events.

    Example:
        >>> t = eight_gaussians_target()
        >>> t.means.shape, round(float(t.cov[0, 0]), 4)
        (torch.Size([8, 2]), 2.01)
    """
    radius, std = _check_pos("radius", radius), _check_pos("std", std)
    return _iso_mixture(_eight_centres(radius), std, noise_std)


def grid25_target(
    noise_std: float = 0.0, *, spacing: float = 1.0, std: float = 0.1
) -> GaussianMixture:
    """Exact density of :func:`grid25`, convolved with ``N(0, noise_std^2 I)``.

    Args:
        noise_std: sd of extra isotropic Gaussian noise.
        spacing: as in :func:`grid25`.
        std: as in :func:`grid25`.

    Returns:
        a ``GaussianMixture`` with 25 components on ``(2,)`` events.

    Example:
        >>> t = grid25_target(0.01)
        >>> t.means.shape
        torch.Size([25, 2])
    """
    spacing, std = _check_pos("spacing", spacing), _check_pos("std", std)
    return _iso_mixture(_grid_centres(spacing), std, noise_std)


def _check_radii(radii) -> Tensor:
    try:
        r = torch.as_tensor(radii, dtype=torch.float64)
    except (TypeError, ValueError):
        raise TypeError(f"radii must be a sequence of numbers, got {radii!r}") from None
    if r.ndim != 1 or r.numel() == 0 or not torch.isfinite(r).all() or (r <= 0).any():
        raise ValueError(f"radii must be a non-empty sequence of positive numbers, got {radii!r}")
    return r


class RingsTarget(Target):
    """Exact density of :func:`rings`: equal-mass rings blurred by isotropic Gaussian noise.

    With ``s^2 = std^2 + noise_std^2``, ring ``k`` (radius ``r_k``) has density
    ``exp(-(rho^2 + r_k^2) / (2 s^2)) I_0(rho r_k / s^2) / (2 pi s^2)`` at distance ``rho`` from
    the origin (a point uniform on the circle plus ``N(0, s^2 I)``); it is evaluated stably as
    ``exp(-(rho - r_k)^2 / (2 s^2)) i0e(rho r_k / s^2) / (2 pi s^2)``. Energy ``-log p``, so
    ``log_z = 0``; mean 0, covariance ``(mean_k r_k^2 / 2 + s^2) I``.

    Args:
        radii: ring radii, shape ``(K,)``.
        std: sd of the data's own noise.
        noise_std: sd of extra convolved noise.

    Example:
        >>> import torch
        >>> t = RingsTarget()
        >>> t.sample(3, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self, radii: Sequence[float] = _RING_RADII, std: float = 0.01, noise_std: float = 0.0
    ):
        super().__init__()
        self.radii = _check_radii(radii)
        self.std = _check_pos("std", std)
        self.noise_std = _check_nonneg("noise_std", noise_std)
        self.scale = math.sqrt(self.std**2 + self.noise_std**2)
        self.event_shape = (2,)
        self.log_z = 0.0
        k = self.radii.numel()
        self.log_w = torch.full((k,), -math.log(k), dtype=torch.float64)
        self.mean = torch.zeros(2, dtype=torch.float64)
        var = float((self.radii**2).mean()) / 2 + self.scale**2
        self.cov = var * torch.eye(2, dtype=torch.float64)

    def energy(self, x: Tensor) -> Tensor:
        """``-log p(x)``; shape ``(*batch, 2) -> batch``; differentiable in ``x``."""
        self._check(x)
        s2 = self.scale**2
        rho = torch.linalg.vector_norm(x, dim=-1)[..., None]
        r = self._p("radii", x)
        comp = (
            self._p("log_w", x)
            - math.log(2 * math.pi * s2)
            - (rho - r) ** 2 / (2 * s2)
            + torch.log(torch.special.i0e(rho * r / s2))
        )
        return -torch.logsumexp(comp, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws, shape ``(n, 2)``, float64."""
        return _ring_points(self.radii, self.scale, _check_n(n), _generator(generator))


def rings_target(
    noise_std: float = 0.0, *, radii: Sequence[float] = _RING_RADII, std: float = 0.01
) -> RingsTarget:
    """Exact density of :func:`rings`, convolved with ``N(0, noise_std^2 I)``.

    Args:
        noise_std: sd of extra isotropic Gaussian noise.
        radii: as in :func:`rings`.
        std: as in :func:`rings`.

    Returns:
        a :class:`RingsTarget`.

    Example:
        >>> import torch
        >>> t = rings_target(0.01)
        >>> bool(torch.isfinite(t.log_prob(torch.tensor([[1.0, 0.0]]))).all())
        True
    """
    return RingsTarget(radii, std, noise_std)


# --------------------------------------------------------------------------- digits


TOY_TARGETS: dict[str, Callable[..., Target]] = {
    "eight_gaussians": eight_gaussians_target,
    "grid25": grid25_target,
    "rings": rings_target,
}
"""The toy sets with an exact density: name -> ``fn(noise_std=0.0, **options) -> Target``."""


def toy_target(name: str, noise_std: float = 0.0, **options) -> Target:
    """The exact density of the 2-D toy set ``name``, convolved with ``N(0, noise_std^2 I)``.

    The twin of :func:`toy_dataset` for the sets in :data:`TOY_TARGETS` (checkerboard and
    swiss roll have no closed-form density).

    Args:
        name: ``eight_gaussians``, ``grid25`` or ``rings``.
        noise_std: sd of extra isotropic Gaussian noise.
        **options: the set's options (e.g. ``std``), as for :func:`toy_dataset`.

    Returns:
        A target with ``log_prob(x)`` for points ``(N, 2)``.

    Example:
        >>> t = toy_target("eight_gaussians", 0.02)
        >>> t.log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
    """
    if name not in TOY_TARGETS:
        raise ValueError(
            f"no exact density for {name!r}; toy sets with one: {', '.join(sorted(TOY_TARGETS))}"
        )
    return TOY_TARGETS[name](noise_std, **options)


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
        g = _generator(generator)
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

_IDX_DTYPES = {
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
        >>> x, y = load_mnist("/work/shared/data/mnist", "test")  # doctest: +SKIP
        >>> x.shape, y.dtype  # doctest: +SKIP
        (torch.Size([10000, 1, 28, 28]), torch.int64)
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


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""CIFAR-10 label names, index = label."""

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TAR = "cifar-10-python.tar.gz"
_CIFAR_SPLITS = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_CIFAR_MEMBERS = frozenset(
    [*_CIFAR_SPLITS["train"], *_CIFAR_SPLITS["test"], "batches.meta", "readme.html"]
)
_MAX_MEMBER_BYTES = 256 * 2**20


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


def _latin1_encode(obj, encoding="latin1", *args):
    """``_codecs.encode`` restricted to what Python 3 writes for ``bytes`` at protocol < 3."""
    if args or not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(
            "restricted unpickler: _codecs.encode is allowed only as encode(str, 'latin1')"
        )
    return obj.encode("latin1")


def _empty_bytes(*args):
    if args:
        raise pickle.UnpicklingError("restricted unpickler: builtins.bytes takes no arguments")
    return b""


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild plain numpy arrays.

    Allowed: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar`` (and its
    ``numpy._core`` twin), plus ``_codecs.encode(str, 'latin1')`` and ``bytes()``, which
    Python 3 emits for ``bytes`` objects at pickle protocol 2. Containers (dict, list, tuple),
    strings, bytes and numbers need no globals. Every other global raises
    ``pickle.UnpicklingError`` before anything is called.

    Example:
        >>> import io, pickle, numpy as np
        >>> blob = pickle.dumps({b"a": np.arange(3, dtype=np.uint8)}, protocol=2)
        >>> RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()[b"a"].tolist()
        [0, 1, 2]
        >>> import os
        >>> class Evil:
        ...     def __reduce__(self):
        ...         return (os.system, ("echo pwned",))
        >>> try:
        ...     RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
        ... except pickle.UnpicklingError as e:
        ...     print("rejected:", e)
        rejected: restricted unpickler: global '...system' is not allowed ...
    """

    def find_class(self, module: str, name: str):
        """Resolve ``module.name`` from the allow-list, else raise ``UnpicklingError``."""
        reconstruct, scalar = _np_reconstruct()
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.multiarray", "scalar"): scalar,
            ("numpy._core.multiarray", "scalar"): scalar,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
            ("builtins", "bytes"): _empty_bytes,
        }
        obj = allowed.get((module, name))
        if obj is None:
            raise _ForbiddenGlobal(
                f"restricted unpickler: global '{module}.{name}' is not allowed (only plain "
                "numpy arrays and containers may be loaded from a data file)"
            )
        return obj


def _unpickle_batch(blob: bytes, where: str, n_expected: int | None = None):
    try:
        d = RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise pickle.UnpicklingError(f"{where}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, struct.error) as e:
        raise ValueError(f"{where}: corrupt pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{where}: expected a dict with keys b'data' and b'labels'")
    data, labels = d[b"data"], d[b"labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        desc = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise ValueError(f"{where}: b'data' must be a uint8 array (N, 3072), got {desc}")
    try:
        lab = np.asarray(labels)
    except (TypeError, ValueError):
        lab = np.asarray([], dtype=object)
    if (
        lab.ndim != 1
        or lab.shape[0] != data.shape[0]
        or (lab.size and (lab.dtype.kind not in "iu" or lab.min() < 0 or lab.max() > 9))
    ):
        raise ValueError(f"{where}: b'labels' must be {data.shape[0]} integers in 0..9")
    return data, lab.astype(np.int64)


def _locate_cifar(path: Path, names: tuple[str, ...]) -> tuple[str, Path]:
    expected = (
        f"{_CIFAR_TAR}, or a directory {_CIFAR_DIR}/ holding {', '.join(names)} "
        "(path may be the archive, its directory, or the batches directory)"
    )
    if path.is_file():
        return "tar", path
    if path.is_dir():
        if any((path / n).is_file() for n in _CIFAR_MEMBERS - {"readme.html"}):
            return "dir", path
        if (path / _CIFAR_DIR).is_dir():
            return "dir", path / _CIFAR_DIR
        if (path / _CIFAR_TAR).is_file():
            return "tar", path / _CIFAR_TAR
        raise FileNotFoundError(f"no CIFAR-10 data in {path}; expected {expected}")
    raise FileNotFoundError(f"CIFAR-10 path not found: {path}; expected {expected}")


def _read_cifar_tar(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                name = name.rstrip("/")
                if name == _CIFAR_DIR:
                    if not m.isdir():
                        raise ValueError(f"{path}: member {m.name!r} should be a directory")
                    continue
                prefix, _, base = name.partition("/")
                if prefix != _CIFAR_DIR or base not in _CIFAR_MEMBERS:
                    raise ValueError(
                        f"{path}: unexpected archive member {m.name!r}; a CIFAR-10 archive "
                        f"holds only {_CIFAR_DIR}/{{{', '.join(sorted(_CIFAR_MEMBERS))}}}"
                    )
                if not m.isfile():
                    raise ValueError(f"{path}: member {m.name!r} is not a regular file")
                if base not in names:
                    continue
                if m.size > _MAX_MEMBER_BYTES:
                    raise ValueError(f"{path}: member {m.name!r} is implausibly large")
                f = tar.extractfile(m)
                found[base] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable tar archive ({e})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise FileNotFoundError(
            f"{path}: archive lacks {', '.join(_CIFAR_DIR + '/' + n for n in missing)}"
        )
    return found


def load_cifar10(path: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """CIFAR-10 in its "python version" format (no download).

    ``path`` may be the archive ``cifar-10-python.tar.gz``, a directory holding it or the
    extracted ``cifar-10-batches-py/``, or ``cifar-10-batches-py/`` itself. The archive is
    read in memory (never extracted); members other than the known ``cifar-10-batches-py/``
    files are rejected. Each batch is a pickled dict whose ``b"data"`` is a uint8 array
    ``(N, 3072)`` -- per row the red plane (1024 values), then green, then blue, each a
    row-major 32 x 32 image -- and ``b"labels"`` a list of N ints. Batches are read with
    :class:`RestrictedUnpickler`.

    Args:
        path: see above.
        split: ``"train"`` (``data_batch_1`` .. ``data_batch_5``, in that order) or ``"test"``
            (``test_batch``).

    Returns:
        ``(images, labels)``: float32 ``(N, 3, 32, 32)`` scaled by ``v / 127.5 - 1`` to
        ``[-1, 1]``, and int64 ``(N,)``.

    Raises:
        FileNotFoundError: nothing CIFAR-like at ``path`` (the message names the files).
        pickle.UnpicklingError: a batch references anything but numpy array internals.
        ValueError: corrupt archive or batch, unexpected archive member.

    Example:
        >>> x, y = load_cifar10("~/data/cifar-10-python.tar.gz", "test")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([10000, 3, 32, 32])
    """
    if split not in _CIFAR_SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = _CIFAR_SPLITS[split]
    kind, where = _locate_cifar(Path(path).expanduser(), names)
    if kind == "tar":
        blobs = _read_cifar_tar(where, names)
    else:
        missing = [n for n in names if not (where / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{where}: missing CIFAR-10 batch file(s) {', '.join(missing)} "
                f"(split {split!r} needs {', '.join(names)})"
            )
        blobs = {n: (where / n).read_bytes() for n in names}
    xs, ys = [], []
    for n in names:
        data, lab = _unpickle_batch(blobs[n], f"{where}:{n}")
        xs.append(data)
        ys.append(lab)
    data = np.concatenate(xs) if len(xs) > 1 else xs[0]
    x = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    x = x.to(torch.float32).div_(127.5).sub_(1.0)
    y = torch.from_numpy(np.concatenate(ys))
    return x, y


# --------------------------------------------------------------------------- batching


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
        g = _generator(generator)
        order = torch.randperm(n, generator=g, device=_device(g))
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
    g = _generator(generator)
    u = torch.rand(x.shape[0], generator=g, device=_device(g)).to(x.device)
    mask = (u < p).reshape((-1,) + (1,) * (x.ndim - 1))
    return torch.where(mask, x.flip(-1), x)
