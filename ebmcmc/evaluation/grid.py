"""Normalized densities on 2-D grids and exact KL divergences by quadrature.

* :func:`model_log_prob_on_grid` -- a 2-D energy normalized on a grid (for plots and KL);
* :func:`kl_on_grid` -- ``KL(data || model)`` in nats for a 2-D energy against an exact target;
* :func:`kl_to_grid_density` -- the same against a density already on a grid;
* :func:`recovery_log_prob_on_grid` -- DRL's hierarchical density of ``x_0``, exactly, in 2-D.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._random import make_generator

__all__ = [
    "GridLogProb",
    "model_log_prob_on_grid",
    "kl_on_grid",
    "kl_to_grid_density",
    "recovery_log_prob_on_grid",
]

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
        t: Tensor | None = next(iter(fn.parameters()), None)
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
    :func:`recovery_log_prob_on_grid`); the data density
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


@torch.no_grad()
def recovery_log_prob_on_grid(
    estimator,
    model,
    lim: float,
    resolution: int = 200,
    num_ancestors: int = 4000,
    upper_resolution: int = 128,
    generator=None,
    chunk_size: int = 128,
):
    """The density of ``x_0`` under DRL's hierarchical model, exactly on a grid (2-D only).

    DRL's model of the data is the chain of conditionals
    ``p(x_0) = ∫ p(x_0 | x_1) p(x_1 | x_2) ... p(x_{T-1}) dx_{1:T-1}``, with
    ``p(x_t | x_{t+1}) ∝ exp(-E(a'_{t+1} x_t, t) / s_t^2 - r_{t+1} |a'_{t+1} x_t -
    x_{t+1}|^2 / (2 sigma_{t+1}^2))`` and the top level untethered. In 2-D every
    conditional can be normalised on a grid, so the model is evaluated without MCMC:
    ``num_ancestors`` ancestral draws of ``x_1`` are taken level by level from the exact
    (gridded) conditionals, and ``p(x_0)`` is the average of their level-0 conditionals
    on the output grid. The Monte Carlo error shrinks as ``1 / sqrt(num_ancestors)``.

    This is the density DRL's generator targets; the estimator's ``marginal_energy`` at level 0 is a
    different object (the level-0 EBM alone, whose relative mode weights the tethered
    level-0 chains cannot see across barriers).

    Args:
        estimator: the :class:`~ebmcmc.estimators.DiffusionRecoveryLikelihood` the model was
            trained with (its schedule and step sizes define the conditionals).
        model: the EBM ``model(y, t)`` on 2-D points.
        lim: half-width of the output grid for ``x_0`` (in the model's units); level
            ``t``'s grid spans ``abar_t * lim + 5 sigma_bar_t``.
        resolution: cells per axis of the output grid.
        num_ancestors: ancestral draws of ``x_1``.
        upper_resolution: cells per axis of the grids of levels ``1..T-1``.
        generator: ``torch.Generator`` or seed for the ancestral draws.
        chunk_size: ancestors handled at once (memory ``chunk_size * resolution^2``).

    Returns:
        A :class:`GridLogProb` on ``[-lim, lim]^2``.

    Example:
        >>> import torch
        >>> from ebmcmc.diffusion import DRLSchedule
        >>> from ebmcmc.estimators import DiffusionRecoveryLikelihood
        >>> est = DiffusionRecoveryLikelihood(DRLSchedule(3), step_size_b2=1e-2)
        >>> s2 = est.step_sizes**2
        >>> model = lambda y, t: 0.5 * (y**2).sum(-1) * s2[t]  # N(0, I) at every level
        >>> grid = recovery_log_prob_on_grid(est, model, 4.0, 60, num_ancestors=200, generator=0)
        >>> grid.log_prob.shape
        torch.Size([60, 60])
    """
    sched, T = estimator.schedule, estimator.schedule.num_levels
    gen = make_generator(generator)
    try:
        dev = next(model.parameters()).device
        dt = next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        dev, dt = torch.device("cpu"), torch.float32

    def level_grid(t: int):
        half = (
            float(lim)
            if t == 0
            else float(sched.signal_bar[t]) * lim + 5 * float(sched.sigma_bar[t])
        )
        res = resolution if t == 0 else upper_resolution
        xs, ys, pts, area = _grid(half, res, torch.float64, dev)
        u = torch.cat([
            estimator.marginal_energy(model, t)(c.to(dt)).double()
            for c in pts.split(65536)
        ])  # fmt: skip
        if not bool(torch.isfinite(u).all()):
            raise FloatingPointError(f"the energy at level {t} is not finite on the grid")
        return xs, ys, pts, area, u

    def conditional_logits(u, pts, t, x_next):  # (chunk, cells)
        a = float(sched.signal_prime[t + 1])
        coef = float(sched.tether[t + 1]) / (2 * float(sched.sigma[t + 1]) ** 2)
        if coef == 0.0:
            return (-u).expand(x_next.shape[0], -1)
        return -u - coef * torch.cdist(x_next, a * pts).pow(2)

    def draw(logits, pts, xs, ys):
        idx = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
        hx, hy = float(xs[1] - xs[0]), float(ys[1] - ys[0])
        jitter = torch.rand(idx.shape[0], 2, generator=gen, dtype=torch.float64) - 0.5
        return pts[idx] + jitter.to(dev) * torch.tensor([hx, hy], dtype=torch.float64,
                                                        device=dev)  # fmt: skip

    # ancestral draws of x_{T-1}, ..., x_1 from the exact gridded conditionals
    x = torch.zeros(num_ancestors, 2, dtype=torch.float64, device=dev)
    for t in range(T - 1, 0, -1):
        xs, ys, pts, _, u = level_grid(t)
        x = torch.cat([draw(conditional_logits(u, pts, t, c), pts, xs, ys)
                       for c in x.split(chunk_size)])  # fmt: skip
    xs, ys, pts, area, u = level_grid(0)
    acc = None
    for c in x.split(chunk_size):
        lp = torch.log_softmax(conditional_logits(u, pts, 0, c), -1)
        part = torch.logsumexp(lp, 0)
        acc = part if acc is None else torch.logaddexp(acc, part)
    if acc is None:  # split() yields at least one (possibly empty) chunk
        raise ValueError(f"num_ancestors must be >= 1, got {num_ancestors!r}")
    log_prob = acc - math.log(num_ancestors) - math.log(area)
    r = xs.numel()
    return GridLogProb(xs.cpu(), ys.cpu(), log_prob.reshape(r, r).cpu(), 0.0, area)
