"""Sample-quality figures: MMD, sliced Wasserstein, exact KL on 2-D grids, classifier FID.

* :func:`mmd` -- unbiased squared maximum mean discrepancy with a sum of RBF kernels.
* :func:`sliced_wasserstein` -- sliced p-Wasserstein distance with exact 1-D transport.
* :func:`kl_on_grid` -- ``KL(data || model)`` in nats for a 2-D energy, normalized by
  quadrature; :func:`model_log_prob_on_grid` gives the normalized model density for plots.
* :func:`frechet_distance` and :class:`ClassifierFID` -- a Frechet distance between the
  penultimate-layer features of a small CNN classifier trained (once, deterministically, on
  CPU) on scikit-learn's digits or on MNIST, and cached on disk.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from ._random import as_generator

__all__ = [
    "kl_to_grid_density",
    "mmd",
    "DEFAULT_MMD_SCALES",
    "median_bandwidth",
    "sliced_wasserstein",
    "GridLogProb",
    "model_log_prob_on_grid",
    "kl_on_grid",
    "frechet_distance",
    "default_cache_dir",
    "ClassifierFID",
]


# --------------------------------------------------------------------------- helpers


def _as_samples(name: str, x) -> Tensor:
    """Validate a sample tensor and flatten it to ``(n, d)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (n, d) or (n, *event), got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int64, torch.int32)):
        raise TypeError(f"{name} must be a real tensor, got {x.dtype}")
    x = x.reshape(x.shape[0], -1)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    return x


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


_generator = as_generator  # a torch.Generator, an int seed, or None


# --------------------------------------------------------------------------- MMD

DEFAULT_MMD_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
"""Multiples of the median distance used as :func:`mmd`'s default bandwidths."""


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    d = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


def median_bandwidth(x: Tensor, max_points: int = 1000) -> float:
    """Median of the pairwise Euclidean distances among the first ``max_points`` rows of ``x``.

    Used by :func:`mmd` as the default kernel scale. Falls back to the mean distance when
    the median is 0 (many duplicates), and to 1 when every point is identical.

    Args:
        x: samples ``(n, d)`` or ``(n, *event)`` (flattened), ``n >= 2``.
        max_points: cap on the rows used (deterministic: the first ones).

    Returns:
        the bandwidth as a float.

    Example:
        >>> import torch
        >>> median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]]))
        2.0
    """
    x = _as_samples("x", x)
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 samples, got {x.shape[0]}")
    x = x[:max_points].to(_work_dtype(x))
    d = _sq_dists(x, x).sqrt()
    iu = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    d = d[iu[0], iu[1]]
    h = float(d.median())
    if h <= 0:
        h = float(d.mean())
    return h if h > 0 else 1.0


def _kernel_sum(a: Tensor, b: Tensor, inv2h2: Tensor, same: bool, block: int) -> Tensor:
    """Sum over all pairs of ``sum_h exp(-|a_i - b_j|^2 / (2 h^2))``; skip ``i == j`` if same."""
    total = torch.zeros((), dtype=a.dtype, device=a.device)
    for s in range(0, a.shape[0], block):
        d2 = _sq_dists(a[s : s + block], b)
        k = torch.exp(-d2[..., None] * inv2h2).sum(-1)
        if same:
            rows = torch.arange(k.shape[0], device=k.device)
            k[rows, rows + s] = 0.0
        total = total + k.sum()
    return total


def mmd(
    x: Tensor,
    y: Tensor,
    bandwidths: Sequence[float] | Tensor | None = None,
    *,
    block_size: int = 1024,
    unbiased: bool = True,
) -> Tensor:
    """Unbiased estimate of the squared MMD between the samples ``x`` and ``y``.

    The kernel is a sum of RBF kernels ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))``.
    Default bandwidths: ``h * (1/8, 1/4, 1/2, 1, 2)`` with ``h`` = :func:`median_bandwidth` of
    ``x`` alone, so that several samples ``y`` compared with the same reference ``x`` (the
    data) are scored with the same kernel. The small scales matter for multimodal data, where
    the median distance is the distance *between* modes and ``h * (0.5, 1, 2)`` alone hardly
    sees the shape of each mode. Pass fixed ``bandwidths`` to compare across references. The
    estimate is ``mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean k(x_i, y_j)``;
    being unbiased it can be slightly negative when the distributions agree. Computed in
    float64 (blockwise, memory ``O(block_size * m)``).

    Args:
        x: reference samples ``(n, d)``, or ``(n, *event)`` (flattened, e.g. images).
        y: samples ``(m, d)`` or ``(m, *event)`` with the same number of features.
        bandwidths: positive kernel bandwidths, or ``None`` for the default.
        block_size: rows per block.
        unbiased: ``False`` gives the V-statistic instead (means over all pairs, ``i == j``
            included): biased upwards by about ``(1/n + 1/m)`` times the kernel's
            variance, but always >= 0, so ratios to a data-vs-data floor of the same sample
            sizes are stable.

    Returns:
        a scalar tensor (dtype of ``x``, device of ``x``).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
        >>> bool(mmd(a, b) < 0.01 < mmd(a, b + 1.0))
        True
    """
    xf, yf = _as_samples("x", x), _as_samples("y", y)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features, got {xf.shape[1]} and {yf.shape[1]}"
        )
    n, m = xf.shape[0], yf.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"x and y need at least 2 samples each, got {n} and {m}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if bandwidths is None:
        h = median_bandwidth(xf)
        bw = h * torch.tensor(DEFAULT_MMD_SCALES, dtype=torch.float64)
    else:
        try:
            bw = torch.as_tensor(bandwidths, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError):
            raise TypeError(
                f"bandwidths must be a sequence of numbers, got {bandwidths!r}"
            ) from None
        if bw.numel() == 0 or not torch.isfinite(bw).all() or (bw <= 0).any():
            raise ValueError(f"bandwidths must be positive and finite, got {bw.tolist()}")
    wd = _work_dtype(xf)
    a, b = xf.to(wd), yf.to(device=xf.device, dtype=wd)
    inv2h2 = (0.5 / bw**2).to(device=a.device, dtype=wd)
    if unbiased:
        kxx = _kernel_sum(a, a, inv2h2, True, block_size) / (n * (n - 1))
        kyy = _kernel_sum(b, b, inv2h2, True, block_size) / (m * (m - 1))
    else:  # the diagonal terms are exp(0) = 1 per bandwidth
        kxx = (_kernel_sum(a, a, inv2h2, True, block_size) + n * bw.numel()) / n**2
        kyy = (_kernel_sum(b, b, inv2h2, True, block_size) + m * bw.numel()) / m**2
    kxy = _kernel_sum(a, b, inv2h2, False, block_size) / (n * m)
    return (kxx + kyy - 2.0 * kxy).to(_out_dtype(x))


# --------------------------------------------------------------------------- sliced W


def _quantile_coupling(n: int, m: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Exact monotone coupling of two uniform empirical measures of sizes ``n`` and ``m``.

    Returns indices into the sorted samples and the mass of each coupled pair.
    """
    if n == m:
        idx = torch.arange(n, device=device)
        return idx, idx, torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    # quantile breakpoints i/n and j/m on the common grid k/(n m)
    b = torch.cat(
        [torch.arange(1, n + 1, device=device) * m, torch.arange(1, m + 1, device=device) * n]
    )
    b = torch.unique(b)  # sorted
    w = torch.diff(b, prepend=b.new_zeros(1)).to(torch.float64) / (n * m)
    ix = (b + m - 1) // m - 1
    iy = (b + n - 1) // n - 1
    return ix, iy, w


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    num_projections: int = 128,
    generator: torch.Generator | int | None = None,
    p: float = 2,
) -> Tensor:
    """Sliced p-Wasserstein distance ``(E_theta W_p^p(theta^T x, theta^T y))^(1/p)``.

    Directions ``theta`` are uniform on the unit sphere (normalized Gaussians from
    ``generator``); each 1-D distance between the projected empirical measures is computed
    exactly from their quantile functions (any ``n``, ``m``).

    Args:
        x: samples ``(n, d)`` or ``(n, *event)`` (flattened).
        y: samples ``(m, d)`` or ``(m, *event)``.
        num_projections: number of random directions.
        generator: ``torch.Generator`` or int seed for the directions.
        p: order, ``>= 1``.

    Returns:
        a scalar tensor (dtype and device of ``x``).

    Example:
        >>> import torch
        >>> x = torch.zeros(4, 1)
        >>> float(sliced_wasserstein(x, x + 3.0, 8, generator=0))
        3.0
    """
    xf, yf = _as_samples("x", x), _as_samples("y", y)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features, got {xf.shape[1]} and {yf.shape[1]}"
        )
    if (
        isinstance(num_projections, bool)
        or not isinstance(num_projections, int)
        or (num_projections < 1)
    ):
        raise ValueError(f"num_projections must be a positive int, got {num_projections!r}")
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"p must be a number >= 1, got {p!r}") from None
    if not (math.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    g = _generator(generator)
    d = xf.shape[1]
    gdev = g.device if g is not None else torch.device("cpu")
    theta = torch.randn(d, num_projections, generator=g, device=gdev, dtype=torch.float64)
    wd = _work_dtype(xf)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(device=xf.device, dtype=wd)
    px = torch.sort(xf.to(wd) @ theta, dim=0).values
    py = torch.sort(yf.to(device=xf.device, dtype=wd) @ theta, dim=0).values
    ix, iy, w = _quantile_coupling(px.shape[0], py.shape[0], xf.device)
    cost = ((px[ix] - py[iy]).abs() ** p * w.to(wd)[:, None]).sum(0)
    return (cost.mean() ** (1.0 / p)).to(_out_dtype(x))


# --------------------------------------------------------------------------- grids


class GridLogProb(NamedTuple):
    """A normalized log density on a regular 2-D grid of cell centres.

    Attributes:
        xs: cell-centre abscissae, shape ``(R_x,)``.
        ys: cell-centre ordinates, shape ``(R_y,)``.
        log_prob: ``(R_y, R_x)``; row ``i``, column ``j`` is the point ``(xs[j], ys[i])``
            (image layout: ``plt.imshow(lp.log_prob.exp(), origin="lower", extent=lp.extent)``).
        log_z: log normalizer of ``exp(-E)`` over the grid (``logsumexp(-E) + log cell_area``).
        cell_area: area of one cell.

    Example:
        >>> import torch
        >>> lp = model_log_prob_on_grid(lambda x: 0.5 * (x**2).sum(-1), 6.0, 120)
        >>> round(lp.log_z, 4) == round(math.log(2 * math.pi), 4)
        True
    """

    xs: Tensor
    ys: Tensor
    log_prob: Tensor
    log_z: float
    cell_area: float

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(xmin, xmax, ymin, ymax)`` of the grid's outer edges (for ``imshow``)."""
        hx = float(self.xs[1] - self.xs[0]) if len(self.xs) > 1 else 0.0
        hy = float(self.ys[1] - self.ys[0]) if len(self.ys) > 1 else 0.0
        return (
            float(self.xs[0]) - hx / 2,
            float(self.xs[-1]) + hx / 2,
            float(self.ys[0]) - hy / 2,
            float(self.ys[-1]) + hy / 2,
        )


def _parse_lim(lim) -> tuple[tuple[float, float], tuple[float, float]]:
    def pair(v):
        lo, hi = (float(t) for t in v)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"lim: each range must be finite with lo < hi, got {v!r}")
        return lo, hi

    try:
        if isinstance(lim, int | float):
            l_ = float(lim)
            if not (math.isfinite(l_) and l_ > 0):
                raise ValueError(f"lim must be a positive number, got {lim!r}")
            return (-l_, l_), (-l_, l_)
        lim = tuple(lim)
        if len(lim) == 2 and all(isinstance(v, int | float) for v in lim):
            r = pair(lim)
            return r, r
        if len(lim) == 2:
            return pair(lim[0]), pair(lim[1])
    except TypeError:
        pass
    raise ValueError(
        f"lim must be L (grid [-L, L]^2), (lo, hi) or ((xlo, xhi), (ylo, yhi)); got {lim!r}"
    )


def _parse_resolution(resolution) -> tuple[int, int]:
    r = resolution if isinstance(resolution, tuple | list) else (resolution, resolution)
    if len(r) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in r):
        raise ValueError(f"resolution must be an int >= 2 or a pair of them, got {resolution!r}")
    return int(r[0]), int(r[1])


def _infer_dtype_device(fn, dtype, device) -> tuple[torch.dtype, torch.device]:
    if isinstance(fn, nn.Module) and (dtype is None or device is None):
        t = next(iter(fn.parameters()), None)
        if t is None:
            t = next(iter(fn.buffers()), None)
        if t is not None:
            dtype = dtype or (t.dtype if t.is_floating_point() else torch.float32)
            device = device or t.device
    return dtype or torch.float64, torch.device(device or "cpu")


def _grid(lim, resolution, dtype, device):
    (x0, x1), (y0, y1) = _parse_lim(lim)
    rx, ry = _parse_resolution(resolution)
    hx, hy = (x1 - x0) / rx, (y1 - y0) / ry
    xs = x0 + hx * (torch.arange(rx, dtype=torch.float64) + 0.5)
    ys = y0 + hy * (torch.arange(ry, dtype=torch.float64) + 0.5)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1).to(device=device, dtype=dtype)
    return xs, ys, pts, hx * hy


def _evaluate(name: str, fn, pts: Tensor, chunk_size: int) -> Tensor:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    out = []
    with torch.no_grad():
        for s in range(0, pts.shape[0], chunk_size):
            chunk = pts[s : s + chunk_size]
            v = fn(chunk)
            if not isinstance(v, Tensor) or v.shape != chunk.shape[:1]:
                shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(
                    f"{name} must map points (N, 2) to a tensor (N,), got {shape} for N = "
                    f"{chunk.shape[0]}"
                )
            out.append(v.detach().to(device="cpu", dtype=torch.float64))
    v = torch.cat(out)
    if torch.isnan(v).any():
        raise ValueError(f"{name} returned NaN on the grid")
    return v


def model_log_prob_on_grid(
    energy: Callable[[Tensor], Tensor],
    lim,
    resolution: int | tuple[int, int] = 512,
    *,
    chunk_size: int = 65536,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> GridLogProb:
    """The model ``p(x) = exp(-E(x)) / Z`` on a 2-D grid, ``Z`` by midpoint quadrature.

    ``log Z = logsumexp(-E over the cell centres) + log(cell area)``: the grid must cover
    essentially all of the model's mass (mass outside the grid is silently missing from ``Z``).
    The midpoint rule is very accurate for smooth densities once the cell width is below the
    density's smallest length scale (e.g. a Gaussian's sd).

    Args:
        energy: callable mapping points ``(N, 2)`` to energies ``(N,)``.
        lim: ``L`` for ``[-L, L]^2``, ``(lo, hi)`` for both axes, or
            ``((xlo, xhi), (ylo, yhi))``.
        resolution: cells per axis (int or ``(nx, ny)``).
        chunk_size: points per energy call.
        dtype: dtype of the grid points passed to ``energy``; default the module's parameter
            dtype for an ``nn.Module``, else float64. Sums are taken in float64.
        device: device of the grid points; default the module's device, else CPU.

    Returns:
        a :class:`GridLogProb` (tensors on CPU, float64).

    Example:
        >>> import torch
        >>> lp = model_log_prob_on_grid(lambda x: (x**2).sum(-1), 5.0, 100)
        >>> lp.log_prob.shape
        torch.Size([100, 100])
    """
    dtype, device = _infer_dtype_device(energy, dtype, device)
    xs, ys, pts, area = _grid(lim, resolution, dtype, device)
    neg_e = -_evaluate("energy", energy, pts, chunk_size)
    log_z = torch.logsumexp(neg_e, 0) + math.log(area)
    if not torch.isfinite(log_z):
        raise ValueError(f"energy gives a non-finite normalizer on the grid (log Z = {log_z})")
    lp = (neg_e - log_z).reshape(len(ys), len(xs))
    return GridLogProb(xs, ys, lp, float(log_z), area)


def kl_on_grid(
    log_p_data: Callable[[Tensor], Tensor],
    energy: Callable[[Tensor], Tensor],
    lim,
    resolution: int | tuple[int, int] = 512,
    *,
    chunk_size: int = 65536,
    mass_tol: float = 1e-3,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> float:
    """``KL(data || model)`` in nats for a 2-D energy model, by quadrature on a grid.

    Both densities are evaluated at the cell centres of a regular grid; the model
    ``exp(-E)`` is normalized over the grid (see :func:`model_log_prob_on_grid`), the data
    density is renormalized over the grid too, and
    ``KL = sum_cells p_data (log p_data - log p_model) * cell_area``. The grid must cover the
    mass of both densities: a ``RuntimeWarning`` is raised when the data's mass on the grid
    differs from 1 by more than ``mass_tol`` (the model's missing mass cannot be detected).
    The cell width must resolve the narrowest feature (e.g. < the sd of the data's modes).

    Args:
        log_p_data: normalized data log density, points ``(N, 2)`` -> ``(N,)`` (e.g. the
            ``log_prob`` of a target from ``ebmcmc.data.eight_gaussians_target``).
        energy: model energy, points ``(N, 2)`` -> ``(N,)``; need not be normalized.
        lim: ``L``, ``(lo, hi)`` or ``((xlo, xhi), (ylo, yhi))`` as in
            :func:`model_log_prob_on_grid`.
        resolution: cells per axis.
        chunk_size: points per call.
        mass_tol: tolerance on the data's grid mass before warning.
        dtype: dtype of the points passed to ``energy`` (default as in
            :func:`model_log_prob_on_grid`); ``log_p_data`` receives float64 CPU points
            (or its parameters' dtype and device if it is an ``nn.Module``).
        device: device of the points passed to ``energy``.

    Returns:
        the divergence in nats (``inf`` where the model has no mass under the data).

    Example:
        >>> from ebmcmc.targets import Gaussian
        >>> p = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
        >>> q = Gaussian([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
        >>> round(kl_on_grid(p.log_prob, q, 9.0, 200), 6)  # closed form: 0.5
        0.5
    """
    mdl = model_log_prob_on_grid(
        energy, lim, resolution, chunk_size=chunk_size, dtype=dtype, device=device
    )
    return kl_to_grid_density(log_p_data, mdl, chunk_size=chunk_size, mass_tol=mass_tol)


def kl_to_grid_density(
    log_p_data: Callable[[Tensor], Tensor],
    model: GridLogProb,
    *,
    chunk_size: int = 65536,
    mass_tol: float = 1e-3,
) -> float:
    """``KL(data || model)`` in nats for a model density already normalized on a grid.

    As :func:`kl_on_grid`, for a model given as a :class:`GridLogProb` (e.g. a hierarchical
    model's density from
    :meth:`ebmcmc.estimators.DiffusionRecoveryLikelihood.log_prob_on_grid`); the data density
    is evaluated at the same cell centres and renormalized over the grid.

    Args:
        log_p_data: normalized data log density, points ``(N, 2)`` -> ``(N,)``.
        model: the model's normalized log density on a regular grid.
        chunk_size: points per call of ``log_p_data``.
        mass_tol: tolerance on the data's grid mass before a ``RuntimeWarning``.

    Returns:
        the divergence in nats.

    Example:
        >>> from ebmcmc.targets import Gaussian
        >>> p = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
        >>> q = model_log_prob_on_grid(Gaussian([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]), 9.0, 200)
        >>> round(kl_to_grid_density(p.log_prob, q), 6)
        0.5
    """
    if not isinstance(model, GridLogProb):
        raise TypeError(f"model must be a GridLogProb, got {type(model).__name__}")
    ddt, ddev = _infer_dtype_device(log_p_data, None, None)
    yy, xx = torch.meshgrid(model.ys, model.xs, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1).to(device=ddev, dtype=ddt)
    area = model.cell_area
    lpd = _evaluate("log_p_data", log_p_data, pts, chunk_size)
    if (lpd == math.inf).any():
        raise ValueError("log_p_data returned +inf on the grid")
    log_mass = torch.logsumexp(lpd, 0) + math.log(area)
    mass = float(log_mass.exp())
    if not math.isfinite(mass) or mass == 0:
        raise ValueError("log_p_data has no mass on the grid; check lim")
    if abs(mass - 1.0) > mass_tol:
        warnings.warn(
            f"the data density integrates to {mass:.6f} on the grid (expected 1 within "
            f"{mass_tol}); widen lim or refine resolution",
            RuntimeWarning,
            stacklevel=2,
        )
    lpd = lpd - log_mass  # renormalized over the grid
    lpm = model.log_prob.reshape(-1).to(lpd)
    pd = lpd.exp()
    pos = pd > 0
    diff = torch.where(pos, lpd - lpm, torch.zeros_like(lpd))
    if (pos & torch.isinf(lpm)).any():
        return math.inf
    return float((pd * diff).sum() * area)


# --------------------------------------------------------------------------- FID


def frechet_distance(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
    """Frechet distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``, the matrix square root by
    ``scipy.linalg.sqrtm``. Tiny imaginary parts of the square root (round-off) are dropped;
    if the product is too singular for a finite root, ``eps * I`` is added to both
    covariances. Works in float64.

    Args:
        mu1: mean ``(d,)`` (numpy or torch).
        cov1: covariance ``(d, d)``.
        mu2: mean ``(d,)``.
        cov2: covariance ``(d, d)``.
        eps: regularization used only when the plain square root fails.

    Returns:
        the distance as a float (>= 0 up to round-off).

    Example:
        >>> import numpy as np
        >>> round(frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)), 6)
        4.0
    """

    def arr(name, v, ndim):
        if isinstance(v, Tensor):
            v = v.detach().cpu().numpy()
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != ndim:
            raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains non-finite values")
        return a

    mu1, mu2 = arr("mu1", mu1, 1), arr("mu2", mu2, 1)
    cov1, cov2 = arr("cov1", cov1, 2), arr("cov2", cov2, 2)
    d = mu1.shape[0]
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        if c.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}), got {c.shape}")
    if mu2.shape != (d,):
        raise ValueError(f"mu2 must have shape ({d},), got {mu2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # singular products (e.g. dead ReLU features) are expected; non-finite roots are
        # handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():
            off = eps * np.eye(d)
            covmean = scipy.linalg.sqrtm((cov1 + off) @ (cov2 + off))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(covmean).max()))
        if np.abs(covmean.imag).max() > 1e-3 * scale:
            warnings.warn(
                "frechet_distance: the matrix square root has a large imaginary part "
                f"({np.abs(covmean.imag).max():.3g}); keeping the real part",
                RuntimeWarning,
                stacklevel=2,
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def default_cache_dir() -> Path:
    """The cache directory: ``$EBMCMC_CACHE`` if set, else ``~/.cache/ebmcmc``.

    Example:
        >>> "EBMCMC_CACHE" in os.environ or default_cache_dir().parts[-2:] == (".cache", "ebmcmc")
        True
    """
    env = os.environ.get("EBMCMC_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/ebmcmc").expanduser()


class _SmallCNN(nn.Module):
    """3 x 3 conv blocks (ReLU, optional 2 x 2 max-pool) -> hidden FC + ReLU -> 10-way FC."""

    def __init__(self, size: int, blocks: tuple[tuple[int, bool], ...], feature_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = 1, size
        for c_out, pool in blocks:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Linear(c_in * side * side, feature_dim)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        return torch.relu(self.hidden(self.body(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _init_params(net: nn.Module, g: torch.Generator) -> None:
    """PyTorch's default Conv/Linear initialization, drawn from ``g``."""
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(mod.weight, a=math.sqrt(5), generator=g)
            fan_in = mod.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(mod.bias, -bound, bound, generator=g)


# per dataset: image side, conv blocks (channels, pool after), feature dim, training settings
_FID_CONFIGS = {
    "digits": dict(
        size=8,
        blocks=((16, False), (32, True), (32, True)),
        feature_dim=64,
        epochs=8,
        batch=32,
        lr=2e-3,
        subset=None,
    ),
    "mnist": dict(
        size=28,
        blocks=((16, True), (32, True)),
        feature_dim=128,
        epochs=1,
        batch=64,
        lr=2e-3,
        subset=10000,
    ),
}
_FID_VERSION = 1


class ClassifierFID:
    """Frechet distance between classifier features, for 8 x 8 digits or 28 x 28 MNIST.

    A small CNN (3 x 3 conv layers of 16, 32(, 32) channels with max-pooling, a hidden fully
    connected layer of 64 (digits) or 128 (MNIST) units, a 10-way head) is trained once on
    CPU, single-threaded (torch's intra-op thread count is set to 1 while training and
    restored afterwards), with a fixed seed: initialization and shuffling come from one
    ``torch.Generator``, so the same seed gives the same network. The features are the hidden
    layer's ReLU activations (the penultimate layer). Training: digits -- the ``"train"``
    split of :func:`ebmcmc.data.load_digits` (1438 images), 8 epochs of Adam, a few seconds,
    about 0.98 test accuracy; MNIST -- a random subset of 10 000 training images
    (``train_subset``), 1 epoch, about 10 s, about 0.94 accuracy.

    The trained weights are cached at
    ``<cache_dir>/classifier_fid/<dataset>-v1-seed<seed>-ep<epochs>-n<subset or "all">.pt``
    (``cache_dir``: argument, else ``$EBMCMC_CACHE``, else ``~/.cache/ebmcmc``), written
    atomically (temporary file + ``os.replace``) and read back with
    ``torch.load(..., weights_only=True)``. An unreadable cache file is replaced (with a
    warning). The file also records the held-out accuracy (``test_accuracy``).

    Inputs are images in ``[-1, 1]`` of shape ``(N, 1, S, S)`` or ``(N, S, S)`` with ``S`` 8
    (digits) or 28 (MNIST).

    Args:
        dataset: ``"digits"`` or ``"mnist"``.
        cache_dir: where to cache (see above).
        data_path: MNIST directory (for :func:`ebmcmc.data.load_mnist`); needed only when
            the MNIST classifier has to be trained.
        seed: training seed.
        epochs: override the number of training epochs.
        train_subset: MNIST only: number of training images used (``None``: all 60 000).
        device: device for feature extraction (training is always on CPU).

    Attributes:
        classifier: the trained network (eval mode).
        test_accuracy: accuracy on the held-out split (digits ``"test"``, MNIST ``t10k``).
        cache_path: the cache file.
        loaded_from_cache: whether the weights came from the cache.

    Example:
        >>> fid = ClassifierFID("digits", cache_dir="/tmp/ebmcmc-cache")  # doctest: +SKIP
        >>> from ebmcmc.data import load_digits  # doctest: +SKIP
        >>> x, _ = load_digits("test")  # doctest: +SKIP
        >>> fid.fid(x, torch.rand_like(x) * 2 - 1) > 10 * fid.fid(x, load_digits("train")[0])
        ... # doctest: +SKIP
        True
    """

    def __init__(
        self,
        dataset: str = "digits",
        *,
        cache_dir: str | os.PathLike | None = None,
        data_path: str | os.PathLike | None = None,
        seed: int = 0,
        epochs: int | None = None,
        train_subset: int | None = 10000,
        device: torch.device | str = "cpu",
    ):
        if dataset not in _FID_CONFIGS:
            raise ValueError(f"dataset must be one of {', '.join(_FID_CONFIGS)}, got {dataset!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        cfg = dict(_FID_CONFIGS[dataset])
        if epochs is not None:
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise ValueError(f"epochs must be a positive int, got {epochs!r}")
            cfg["epochs"] = epochs
        if dataset == "mnist":
            if train_subset is not None and (
                isinstance(train_subset, bool)
                or not isinstance(train_subset, int)
                or train_subset < 100
            ):
                raise ValueError(
                    f"train_subset must be an int >= 100 or None, got {train_subset!r}"
                )
            cfg["subset"] = train_subset
        self.dataset, self.seed, self._cfg = dataset, seed, cfg
        self.image_size = cfg["size"]
        self.feature_dim = cfg["feature_dim"]
        self.device = torch.device(device)
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        n_tag = "all" if cfg["subset"] is None else str(cfg["subset"])
        self.cache_path = (
            root
            / "classifier_fid"
            / (f"{dataset}-v{_FID_VERSION}-seed{seed}-ep{cfg['epochs']}-n{n_tag}.pt")
        )
        net = self._new_net()
        payload = self._load_cache(net)
        self.loaded_from_cache = payload is not None
        if payload is None:
            payload = self._train(net, data_path)
            self._save_cache(payload)
        self.test_accuracy = float(payload["test_accuracy"])
        self.classifier = net.to(self.device).eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    # -- training and cache ---------------------------------------------------------

    def _new_net(self) -> _SmallCNN:
        c = self._cfg
        return _SmallCNN(c["size"], c["blocks"], c["feature_dim"])

    def _load_cache(self, net: nn.Module) -> dict | None:
        if not self.cache_path.is_file():
            return None
        try:
            payload = torch.load(self.cache_path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("format") != "ebmcmc.ClassifierFID":
                raise ValueError("not a ClassifierFID cache file")
            if payload.get("version") != _FID_VERSION or payload.get("dataset") != self.dataset:
                raise ValueError("version or dataset mismatch")
            net.load_state_dict(payload["state_dict"])
            float(payload["test_accuracy"])
        except Exception as e:  # a cache is disposable: rebuild it
            warnings.warn(
                f"ignoring unreadable classifier cache {self.cache_path} ({e}); retraining",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return payload

    def _save_cache(self, payload: dict) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.cache_path.parent, prefix=".tmp-" + self.cache_path.stem, suffix=".pt"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.cache_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _data(self, data_path):
        from .data import load_digits, load_mnist

        if self.dataset == "digits":
            xtr, ytr = load_digits("train")
            xte, yte = load_digits("test")
            return xtr, ytr, xte, yte
        if data_path is None:
            raise ValueError(
                "data_path is required to train the MNIST classifier (a directory with the "
                f"MNIST IDX files); no cached classifier at {self.cache_path}"
            )
        xtr, ytr = load_mnist(data_path, "train")
        xte, yte = load_mnist(data_path, "test")
        return xtr, ytr, xte, yte

    def _train(self, net: nn.Module, data_path) -> dict:
        from .data import batches

        cfg = self._cfg
        xtr, ytr, xte, yte = self._data(data_path)
        g = torch.Generator().manual_seed(self.seed)
        if cfg["subset"] is not None and cfg["subset"] < xtr.shape[0]:
            idx = torch.randperm(xtr.shape[0], generator=g)[: cfg["subset"]]
            xtr, ytr = xtr[idx], ytr[idx]
        _init_params(net, g)
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        # One intra-op thread: the result does not depend on the machine's core count, and
        # tiny convolutions run faster than with contended OpenMP threads.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            net.train()
            with torch.enable_grad():
                for _ in range(cfg["epochs"]):
                    for xb, yb in batches((xtr, ytr), cfg["batch"], g):
                        loss = nn.functional.cross_entropy(net(xb), yb)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
            net.eval()
            acc = self._accuracy(net, xte, yte)
        finally:
            torch.set_num_threads(threads)
        return {
            "format": "ebmcmc.ClassifierFID",
            "version": _FID_VERSION,
            "dataset": self.dataset,
            "seed": self.seed,
            "epochs": cfg["epochs"],
            "train_size": int(xtr.shape[0]),
            "test_accuracy": acc,
            "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        }

    @staticmethod
    def _accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
        dev = next(net.parameters()).device
        correct = 0
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                pred = net(x[s : s + batch_size].to(dev)).argmax(-1).cpu()
                correct += int((pred == y[s : s + batch_size].cpu()).sum())
        return correct / max(1, x.shape[0])

    # -- public API --------------------------------------------------------------------

    def _images(self, name: str, x) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        s = self.image_size
        if x.ndim == 3 and tuple(x.shape[1:]) == (s, s):
            x = x[:, None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, s, s):
            raise ValueError(
                f"{name} must be {self.dataset} images of shape (N, 1, {s}, {s}) or "
                f"(N, {s}, {s}), got {tuple(x.shape)}"
            )
        if x.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 images, got {x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains non-finite values")
        return x.to(device=self.device, dtype=torch.float32)

    def features(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Penultimate-layer features.

        Args:
            x: images ``(N, 1, S, S)`` or ``(N, S, S)`` in ``[-1, 1]``.
            batch_size: images per forward pass.

        Returns:
            float32 tensor ``(N, feature_dim)`` on CPU.

        Example:
            >>> ClassifierFID("digits").features(torch.zeros(2, 1, 8, 8)).shape
            ... # doctest: +SKIP
            torch.Size([2, 64])
        """
        x = self._images("x", x)
        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                out.append(self.classifier.features(x[s : s + batch_size]).cpu())
        return torch.cat(out)

    def statistics(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Feature mean ``(F,)`` and covariance ``(F, F)`` (float64 numpy) of the images ``x``.

        Precompute these for a fixed reference set and pass them to :meth:`fid`.

        Example:
            >>> mu, cov = ClassifierFID("digits").statistics(x)  # doctest: +SKIP
        """
        f = self.features(x).to(torch.float64).numpy()
        return f.mean(0), np.cov(f, rowvar=False)

    def fid(self, samples_a, samples_b) -> float:
        """Frechet distance between the feature distributions of two image sets.

        Args:
            samples_a: images ``(N, 1, S, S)``, or a ``(mean, cov)`` pair from
                :meth:`statistics`.
            samples_b: likewise.

        Returns:
            the distance (float; 0 for identical sets).

        Example:
            >>> ClassifierFID("digits").fid(x_test, x_train)  # doctest: +SKIP
            0.4...
        """
        mu1, c1 = samples_a if isinstance(samples_a, tuple) else self.statistics(samples_a)
        mu2, c2 = samples_b if isinstance(samples_b, tuple) else self.statistics(samples_b)
        return frechet_distance(mu1, c1, mu2, c2)

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Classification accuracy on images ``x`` with int labels ``y`` ``(N,)``.

        Example:
            >>> ClassifierFID("digits").accuracy(*load_digits("test")) > 0.9  # doctest: +SKIP
            True
        """
        x = self._images("x", x)
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"y must be a tensor of shape ({x.shape[0]},)")
        return self._accuracy(self.classifier, x, y)
