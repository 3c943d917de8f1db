"""Distances between sample sets: MMD, sliced Wasserstein and the Frechet distance.

* :func:`mmd` -- squared maximum mean discrepancy with a sum of RBF kernels (unbiased
  U-statistic, or the V-statistic).
* :func:`sliced_wasserstein` -- sliced p-Wasserstein distance with exact 1-D transport.
* :func:`frechet_distance` -- between two Gaussians given by their means and covariances (the
  "F" of FID, on whatever features the caller computed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from .._random import make_generator

__all__ = [
    "mmd",
    "DEFAULT_MMD_SCALES",
    "median_bandwidth",
    "sliced_wasserstein",
    "frechet_distance",
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
    g = make_generator(generator)
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
