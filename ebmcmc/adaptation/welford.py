"""Streaming mean and variance (Welford), pooled over chains or per chain, as pure functions.

Each update takes one draw per chain, positions of shape ``(*batch, *event)``. The batch
dimensions listed in ``pool_dims`` are averaged over (every chain counts as one draw of a shared
variance); the others keep one variance each. With every batch dimension pooled, the variance
has the event shape; otherwise it keeps singleton dimensions so it broadcasts against the
positions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "WelfordState",
    "welford_init",
    "welford_update",
    "welford_variance",
    "welford_covariance_update",
    "welford_covariance",
    "Welford",
]


class WelfordState(NamedTuple):
    """Draws counted (per pooled group), running mean and sum of squared deviations.

    Example:
        >>> welford_init().num_draws
        0
    """

    num_draws: int
    mean: Tensor | None
    m2: Tensor | None


def welford_init() -> WelfordState:
    """An empty accumulator.

    Example:
        >>> welford_init().mean is None
        True
    """
    return WelfordState(0, None, None)


def welford_update(
    state: WelfordState, x: Tensor, pool_dims: tuple[int, ...], batch_ndim: int
) -> WelfordState:
    """Add one draw per chain.

    Args:
        state: the accumulator.
        x: positions ``(*batch, *event)``.
        pool_dims: the batch dimensions to pool over (``()``: one variance per chain).
        batch_ndim: the number of batch dimensions of ``x``.

    Example:
        >>> import torch
        >>> s = welford_init()
        >>> for i in range(3):
        ...     s = welford_update(s, torch.full((4, 2), float(i)), (0,), 1)
        >>> s.num_draws, s.mean.tolist()
        (12, [1.0, 1.0])
    """
    x = x.detach()
    if not pool_dims:
        n_b, mean_b, m2_b = 1, x, torch.zeros_like(x)
    else:
        n_b = 1
        for d in pool_dims:
            n_b *= x.shape[d]
        mean_b = x.mean(dim=pool_dims, keepdim=True)
        m2_b = ((x - mean_b) ** 2).sum(dim=pool_dims, keepdim=True)
        if len(pool_dims) == batch_ndim:
            mean_b = mean_b.reshape(x.shape[batch_ndim:])
            m2_b = m2_b.reshape(x.shape[batch_ndim:])
    if state.mean is None or state.m2 is None:
        return WelfordState(n_b, mean_b.clone(), m2_b.clone())
    n = state.num_draws + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / n)
    m2 = state.m2 + m2_b + delta**2 * (state.num_draws * n_b / n)
    return WelfordState(n, mean, m2)


def welford_variance(state: WelfordState, regularize: bool = True) -> Tensor:
    """The sample variance; with ``regularize``, Stan's shrinkage towards ``1e-3``:
    ``n/(n+5) var + 1e-3 · 5/(n+5)``.

    Raises:
        ValueError: fewer than two draws.

    Example:
        >>> import torch
        >>> s = welford_init()
        >>> for v in (0.0, 2.0):
        ...     s = welford_update(s, torch.tensor([[v]]), (0,), 1)
        >>> welford_variance(s, regularize=False)
        tensor([2.])
    """
    if state.mean is None or state.m2 is None or state.num_draws < 2:
        raise ValueError("Welford needs at least two draws for a variance")
    var = state.m2 / (state.num_draws - 1)
    if regularize:
        n = state.num_draws
        var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
    return var


def welford_covariance_update(state: WelfordState, x: Tensor) -> WelfordState:
    """Add draws ``x`` of shape ``(n, d)`` to a pooled mean and matrix of summed deviation
    products (Chan et al.'s pairwise combination).

    Example:
        >>> import torch
        >>> s = welford_covariance_update(welford_init(), torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
        >>> welford_covariance(s, regularize=False)
        tensor([[2., 2.],
                [2., 2.]])
    """
    x = x.detach()
    n_b = x.shape[0]
    mean_b = x.mean(0)
    dx = x - mean_b
    m2_b = dx.T @ dx
    if state.mean is None or state.m2 is None:
        return WelfordState(n_b, mean_b, m2_b)
    n = state.num_draws + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / n)
    m2 = state.m2 + m2_b + torch.outer(delta, delta) * (state.num_draws * n_b / n)
    return WelfordState(n, mean, m2)


def welford_covariance(state: WelfordState, regularize: bool = True) -> Tensor:
    """The sample covariance ``(d, d)``, made exactly symmetric; with ``regularize``, Stan's
    shrinkage towards ``1e-3 I``: ``n/(n+5) Σ + 1e-3 · 5/(n+5) I``.

    Raises:
        ValueError: fewer than two draws.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> s = welford_covariance_update(welford_init(), torch.randn(1000, 3, generator=g))
        >>> welford_covariance(s).shape
        torch.Size([3, 3])
    """
    if state.mean is None or state.m2 is None or state.num_draws < 2:
        raise ValueError("Welford needs at least two draws for a covariance")
    cov = state.m2 / (state.num_draws - 1)
    cov = 0.5 * (cov + cov.T)
    if regularize:
        n = state.num_draws
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        cov = (n / (n + 5.0)) * cov + (1e-3 * (5.0 / (n + 5.0))) * eye
    return cov


class Welford:
    """The Welford accumulator as an object.

    Args:
        batch_ndim: batch dimensions of the positions it receives.
        per_chain: one variance per chain instead of one pooled variance.
        keep_ndim: leading batch dimensions that keep their own variance when pooling (e.g. 1
            for one variance per replica).

    Example:
        >>> import torch
        >>> w = Welford(batch_ndim=1, per_chain=False)
        >>> g = torch.Generator().manual_seed(0)
        >>> for _ in range(100):
        ...     w.update(2.0 * torch.randn(64, 3, generator=g))
        >>> w.variance().shape
        torch.Size([3])
    """

    def __init__(self, batch_ndim: int, per_chain: bool = False, keep_ndim: int = 0):
        self.batch_ndim = batch_ndim
        self.pool_dims = () if per_chain else tuple(range(keep_ndim, batch_ndim))
        self.reset()

    def reset(self) -> None:
        """Forget every draw."""
        self.state = welford_init()

    @property
    def n(self) -> int:
        """Draws counted so far."""
        return self.state.num_draws

    @property
    def mean(self) -> Tensor | None:
        """The running mean (``None`` before the first draw)."""
        return self.state.mean

    def update(self, x: Tensor) -> None:
        """Add one draw per chain; ``x`` has shape ``(*batch, *event)``."""
        self.state = welford_update(self.state, x, self.pool_dims, self.batch_ndim)

    def variance(self, regularize: bool = True) -> Tensor:
        """Sample variance; with ``regularize``, Stan's shrinkage towards ``1e-3``."""
        return welford_variance(self.state, regularize)
