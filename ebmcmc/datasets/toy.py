"""2-D toy data sets and their exact densities.

Every sampler returns float32 ``(n, 2)`` points, all roughly within ``[-4, 4]^2``:

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
:func:`rings_target` (:class:`ebmcmc.targets.Rings`). Their ``noise_std`` argument convolves
the data density with isotropic Gaussian noise, e.g. DRL's level-0 noise
``sigma_bar_0 = 0.01``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._checks import check_nonneg as _check_nonneg
from .._checks import check_pos as _check_pos
from .._random import Generatorish, make_generator
from ..targets import RING_RADII as _RING_RADII
from ..targets import GaussianMixture, Rings, Target, _check_n, _check_radii, _ring_points

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
    "TOY_TARGETS",
    "toy_target",
]


def _generator(generator) -> torch.Generator:
    return make_generator(generator)


def _device(g: torch.Generator) -> torch.device:
    return g.device


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


def rings_target(
    noise_std: float = 0.0, *, radii: Sequence[float] = _RING_RADII, std: float = 0.01
) -> Rings:
    """Exact density of :func:`rings`, convolved with ``N(0, noise_std^2 I)``.

    Args:
        noise_std: sd of extra isotropic Gaussian noise.
        radii: as in :func:`rings`.
        std: as in :func:`rings`.

    Returns:
        a :class:`ebmcmc.targets.Rings`.

    Example:
        >>> import torch
        >>> t = rings_target(0.01)
        >>> bool(torch.isfinite(t.log_prob(torch.tensor([[1.0, 0.0]]))).all())
        True
    """
    return Rings(radii, std, noise_std)


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
