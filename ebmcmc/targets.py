"""Reference distributions with exact answers, used by tests, docs and benchmarks.

Each target is an energy (callable on ``(*batch, *event)``, returning ``batch``) with
``.event_shape``, the exact ``.log_z`` of ``exp(-E)``, ``.mean`` and ``.cov`` (where finite),
``.log_prob(x) = -E(x) - log_z`` and, where exact sampling is possible,
``.sample(n, generator=...)`` returning ``(n, *event)``. Parameters are stored in float64 and
cast to the input's dtype and device on use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_nonneg, check_pos
from ._random import make_generator

__all__ = ["Target", "Gaussian", "GaussianMixture", "Banana", "Funnel", "Rings", "RING_RADII"]

RING_RADII = (1.0, 2.0, 3.0, 4.0)
"""The default radii of :class:`Rings` (DAEBM's four rings)."""


class Target:
    """Base class: a normalizable energy with exact reference quantities.

    Example:
        >>> import torch
        >>> from ebmcmc.targets import Gaussian
        >>> t = Gaussian(torch.zeros(2), torch.eye(2))
        >>> t(torch.zeros(3, 2))
        tensor([0., 0., 0.])
    """

    event_shape: tuple[int, ...] = ()
    # exact reference quantities, set by every subclass's __init__ (float64 tensors)
    log_z: float
    mean: Tensor
    cov: Tensor

    def __init__(self) -> None:
        self._cache: dict = {}

    def _p(self, name: str, x: Tensor) -> Tensor:
        """Parameter ``name`` cast to ``x``'s dtype and device (cached)."""
        key = (name, x.dtype, x.device)
        t = self._cache.get(key)
        if t is None:
            t = getattr(self, name).to(dtype=x.dtype, device=x.device)
            self._cache[key] = t
        return t

    def _check(self, x: Tensor) -> None:
        ne = len(self.event_shape)
        if x.ndim < ne or tuple(x.shape[x.ndim - ne :]) != tuple(self.event_shape):
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (*batch, "
                f"{', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}"
            )

    def energy(self, x: Tensor) -> Tensor:
        """Energy ``E(x)``; shape ``(*batch, *event) -> batch``."""
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.energy(x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalized log density ``-E(x) - log_z``; shape ``(*batch, *event) -> batch``."""
        return -self.energy(x) - self.log_z

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        """``n`` exact draws, shape ``(n, *event)``, float64."""
        raise NotImplementedError(f"{type(self).__name__} has no exact sampler")


def _check_n(n) -> int:
    """``n`` as a sample count: a positive int (not a bool)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return n


def _as_cov(cov: Tensor, dim: int, name: str = "cov") -> Tensor:
    cov = torch.as_tensor(cov, dtype=torch.float64)
    if cov.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}), got {tuple(cov.shape)}")
    if not torch.allclose(cov, cov.T, atol=1e-10, rtol=1e-8):
        raise ValueError(f"{name} must be symmetric")
    if not torch.isfinite(cov).all() or torch.linalg.eigvalsh(cov).min() <= 0:
        raise ValueError(f"{name} must be positive definite")
    return cov


class Gaussian(Target):
    """Multivariate normal ``N(mean, cov)`` with energy ``0.5 (x-m)^T cov^{-1} (x-m)``.

    Args:
        mean: shape ``(d,)``.
        cov: shape ``(d, d)``, symmetric positive definite.

    Attributes:
        log_z: ``0.5 d log(2 pi) + 0.5 log det cov``.

    Example:
        >>> import torch
        >>> g = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
        >>> g.sample(5, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """

    def __init__(self, mean, cov):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64)
        if mean.ndim != 1:
            raise ValueError(f"mean must be a vector (d,), got shape {tuple(mean.shape)}")
        d = mean.shape[0]
        self.mean = mean
        self.cov = _as_cov(cov, d)
        self.event_shape = (d,)
        self.scale_tril = torch.linalg.cholesky(self.cov)
        self.precision = torch.cholesky_inverse(self.scale_tril)
        self.log_z = float(
            0.5 * d * math.log(2 * math.pi) + torch.log(torch.diagonal(self.scale_tril)).sum()
        )

    @classmethod
    def ill_conditioned(
        cls, dim: int, condition_number: float, generator: torch.Generator | int | None = None
    ) -> Gaussian:
        """A zero-mean Gaussian with a random rotation and log-spaced variances in
        ``[1, condition_number]``.

        Example:
            >>> import torch
            >>> g = Gaussian.ill_conditioned(10, 100.0, torch.Generator().manual_seed(0))
            >>> round(float(torch.linalg.cond(g.cov)))
            100
        """
        generator = make_generator(generator)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        lam = torch.logspace(0, math.log10(condition_number), dim, dtype=torch.float64)
        cov = (q * lam) @ q.T
        return cls(torch.zeros(dim, dtype=torch.float64), 0.5 * (cov + cov.T))

    def energy(self, x: Tensor) -> Tensor:
        self._check(x)
        d = x - self._p("mean", x)
        return 0.5 * ((d @ self._p("precision", x)) * d).sum(-1)

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        n = _check_n(n)
        generator = make_generator(generator)
        z = torch.randn(n, self.event_shape[0], generator=generator, dtype=torch.float64)
        return self.mean + z @ self.scale_tril.T


class GaussianMixture(Target):
    """Mixture ``sum_k w_k N(means[k], covs[k])`` with energy ``-log p(x)`` (so ``log_z = 0``).

    Args:
        means: shape ``(K, d)``.
        covs: shape ``(K, d, d)`` (or ``(d, d)``, shared).
        weights: shape ``(K,)``, positive; normalized internally. Default: uniform.

    Example:
        >>> import torch
        >>> m = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.eye(2))
        >>> m.mean
        tensor([0., 0.], dtype=torch.float64)
    """

    def __init__(self, means, covs, weights=None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.ndim == 2 and covs.shape == (d, d):
            covs = covs.expand(k, d, d)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {tuple(covs.shape)}")
        covs = torch.stack([_as_cov(c, d, f"covs[{i}]") for i, c in enumerate(covs)])
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or not torch.isfinite(weights).all() or (weights <= 0).any():
            raise ValueError(f"weights must be {k} positive numbers, got {weights.tolist()}")
        self.weights = weights / weights.sum()
        self.means, self.covs = means, covs
        self.event_shape = (d,)
        self.scale_tril = torch.linalg.cholesky(covs)
        self.precisions = torch.cholesky_inverse(self.scale_tril)
        logdet = 2 * torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(-1)
        self.log_coef = torch.log(self.weights) - 0.5 * (d * math.log(2 * math.pi) + logdet)
        self.log_z = 0.0
        self.mean = (self.weights[:, None] * means).sum(0)
        second = (self.weights[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(
            0
        )
        self.cov = second - self.mean[:, None] * self.mean[None, :]

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log w_k + log N(x; m_k, C_k)`` for every component, shape ``(*batch, K)``."""
        self._check(x)
        batch = x.shape[:-1]
        flat = x.reshape(1, -1, x.shape[-1])
        diff = flat - self._p("means", x)[:, None, :]  # (K, N, d)
        maha = (torch.bmm(diff, self._p("precisions", x)) * diff).sum(-1)  # (K, N)
        return (self._p("log_coef", x)[:, None] - 0.5 * maha).T.reshape(batch + (-1,))

    def energy(self, x: Tensor) -> Tensor:
        return -torch.logsumexp(self.component_log_prob(x), dim=-1)

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        n = _check_n(n)
        generator = make_generator(generator)
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.event_shape[0], generator=generator, dtype=torch.float64)
        return self.means[idx] + torch.einsum("nij,nj->ni", self.scale_tril[idx], z)


class Banana(Target):
    """The banana ``U(x) = 0.5 (1 - x1)^2 + 5 (x2 - x1^2)^2`` in 2-D.

    ``x1 ~ N(1, 1)`` and ``x2 | x1 ~ N(x1^2, 0.1)``, so the mean is ``[1, 2]``, the covariance
    ``[[1, 2], [2, 6.1]]`` and ``log_z = log(2 pi / sqrt(10))``.

    Example:
        >>> import torch
        >>> Banana().mean
        tensor([1., 2.], dtype=torch.float64)
    """

    def __init__(self):
        super().__init__()
        self.event_shape = (2,)
        self.mean = torch.tensor([1.0, 2.0], dtype=torch.float64)
        self.cov = torch.tensor([[1.0, 2.0], [2.0, 6.1]], dtype=torch.float64)
        self.log_z = math.log(2 * math.pi / math.sqrt(10.0))

    def energy(self, x: Tensor) -> Tensor:
        self._check(x)
        x1, x2 = x[..., 0], x[..., 1]
        return 0.5 * (1 - x1) ** 2 + 5 * (x2 - x1**2) ** 2

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        n = _check_n(n)
        generator = make_generator(generator)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        x1 = 1 + z[:, 0]
        x2 = x1**2 + z[:, 1] / math.sqrt(10.0)
        return torch.stack([x1, x2], dim=-1)


class Funnel(Target):
    """Neal's funnel in ``dim`` dimensions: ``v ~ N(0, scale^2)``, ``x_i | v ~ N(0, e^v)``.

    The first coordinate is ``v``. Mean 0; ``var(v) = scale^2``, ``var(x_i) = exp(scale^2/2)``;
    ``log_z = 0`` (the energy is the exact negative log density).

    Args:
        dim: total dimension ``>= 2``.
        scale: standard deviation of ``v`` (3 in Neal's original).

    Example:
        >>> import torch
        >>> Funnel(5).sample(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 5])
    """

    def __init__(self, dim: int = 10, scale: float = 3.0):
        super().__init__()
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.dim, self.scale = dim, float(scale)
        self.event_shape = (dim,)
        self.mean = torch.zeros(dim, dtype=torch.float64)
        var = torch.full((dim,), math.exp(self.scale**2 / 2), dtype=torch.float64)
        var[0] = self.scale**2
        self.cov = torch.diag(var)
        self.log_z = 0.0

    def energy(self, x: Tensor) -> Tensor:
        self._check(x)
        v, rest = x[..., 0], x[..., 1:]
        k = self.dim - 1
        e_v = 0.5 * (v / self.scale) ** 2 + 0.5 * math.log(2 * math.pi * self.scale**2)
        e_x = 0.5 * (rest**2).sum(-1) * torch.exp(-v) + 0.5 * k * (v + math.log(2 * math.pi))
        return e_v + e_x

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        n = _check_n(n)
        generator = make_generator(generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        v = self.scale * z[:, :1]
        return torch.cat([v, z[:, 1:] * torch.exp(v / 2)], dim=-1)


def _check_radii(radii) -> Tensor:
    try:
        r = torch.as_tensor(radii, dtype=torch.float64)
    except (TypeError, ValueError):
        raise TypeError(f"radii must be a sequence of numbers, got {radii!r}") from None
    if r.ndim != 1 or r.numel() == 0 or not torch.isfinite(r).all() or (r <= 0).any():
        raise ValueError(f"radii must be a non-empty sequence of positive numbers, got {radii!r}")
    return r


class Rings(Target):
    """Equal-mass concentric rings blurred by isotropic Gaussian noise (exact density).

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
        >>> t = Rings()
        >>> t.sample(3, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self, radii: Sequence[float] = RING_RADII, std: float = 0.01, noise_std: float = 0.0
    ):
        super().__init__()
        self.radii = _check_radii(radii)
        self.std = check_pos("std", std)
        self.noise_std = check_nonneg("noise_std", noise_std)
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

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> Tensor:
        """``n`` exact draws, shape ``(n, 2)``, float64."""
        return _ring_points(self.radii, self.scale, _check_n(n), make_generator(generator))


def _ring_points(radii: Tensor, scale: float, n: int, g) -> Tensor:
    dev = g.device
    k = torch.randint(radii.numel(), (n,), generator=g, device=dev)
    theta = 2 * math.pi * torch.rand(n, generator=g, device=dev, dtype=torch.float64)
    z = torch.randn(n, 2, generator=g, device=dev, dtype=torch.float64)
    rad = radii.to(dev)[k]
    return torch.stack([rad * torch.cos(theta), rad * torch.sin(theta)], dim=-1) + scale * z
