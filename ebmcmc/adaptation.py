"""Warm-up adaptation: dual averaging of the step size and a windowed diagonal mass matrix.

Adaptation is a separate algorithm that wraps no kernel and owns no hidden state: the driver
asks an :class:`Adaptation` for an :class:`Adapter`, feeds it every warm-up step's state and
info, and receives a kernel with new hyperparameters (``kernel.replace(...)``).

The schedule follows Stan's: a fast initial buffer (step size only), slow windows of doubling
length in which a Welford estimate of the positions' variance becomes the inverse mass matrix
(at the end of each window, dual averaging restarts), and a fast terminal buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .kernels.base import Info, Kernel, State, per_chain

__all__ = ["DualAveraging", "Welford", "WindowAdaptation", "Adapter", "warmup_schedule"]


class DualAveraging:
    """Nesterov dual averaging of ``log(step_size)`` towards a target acceptance rate.

    Hoffman & Gelman (2014), algorithm 5. Works elementwise, so the state may hold one step
    size (shared) or one per chain (shape ``batch``).

    Args:
        step_size: initial step size, tensor of shape ``()`` or ``batch``.
        target_accept: the acceptance probability to aim for, in ``(0, 1)``.
        gamma: dual-averaging regularization scale (0.05, as in Stan).
        t0: iteration offset that damps the first updates (10, as in Stan).
        kappa: decay exponent of the iterate averaging (0.75, as in Stan).

    Example:
        >>> import torch
        >>> da = DualAveraging(torch.tensor(1.0), target_accept=0.8)
        >>> for _ in range(50):
        ...     _ = da.update(torch.tensor(0.3))  # too low: the step size shrinks
        >>> bool(da.final_step_size() < 1.0)
        True
    """

    def __init__(
        self,
        step_size: Tensor,
        target_accept: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
        self.target_accept, self.gamma, self.t0, self.kappa = target_accept, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: Tensor | float) -> None:
        """Start afresh around ``10 * step_size`` (as Stan does after each window).

        A Python float keeps the whole recursion in Python floats (cheap for one shared step
        size); a tensor runs it elementwise (one step size per chain or replica).
        """
        self.scalar = isinstance(step_size, float)
        self.log_step = math.log(step_size) if self.scalar else torch.log(step_size)
        self.mu = math.log(10.0) + self.log_step
        self.log_step_avg = 0.0 if self.scalar else torch.zeros_like(self.log_step)
        self.h_bar = 0.0 if self.scalar else torch.zeros_like(self.log_step)
        self.count = 0

    def _exp(self, v):
        return math.exp(v) if self.scalar else torch.exp(v)

    def update(self, accept_prob: Tensor | float) -> Tensor | float:
        """Take one acceptance figure (a float, or a tensor shaped like the step size);
        return the next step size."""
        self.count += 1
        t = self.count
        w = 1.0 / (t + self.t0)
        if self.scalar:
            a = float(accept_prob)
            a = 0.0 if math.isnan(a) else min(max(a, 0.0), 1.0)
        else:
            a = torch.nan_to_num(accept_prob, nan=0.0).clamp(0, 1)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target_accept - a)
        self.log_step = self.mu - math.sqrt(t) / self.gamma * self.h_bar
        eta = t ** (-self.kappa)
        self.log_step_avg = eta * self.log_step + (1 - eta) * self.log_step_avg
        return self._exp(self.log_step)

    def final_step_size(self) -> Tensor | float:
        """The averaged step size to use after warm-up."""
        if self.count == 0:
            return self._exp(self.log_step)
        return self._exp(self.log_step_avg)


class Welford:
    """Streaming mean and variance, pooled over chains or per chain.

    Each update takes positions of shape ``(*batch, *event)``. Pooled (``per_chain=False``):
    every chain's position counts as one draw of one variance of shape ``event``. Per chain:
    one variance per chain, shape ``(*batch, *event)``.

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
        self.batch_ndim, self.per_chain, self.keep_ndim = batch_ndim, per_chain, keep_ndim
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Add one draw per chain; ``x`` has shape ``(*batch, *event)``."""
        x = x.detach()
        if self.per_chain:
            nb, mean_b, m2_b = 1, x, torch.zeros_like(x)
        else:
            # pool over the batch dimensions after the first keep_ndim ones, keeping them
            # as singleton dimensions so the result broadcasts against positions
            k, b = self.keep_ndim, self.batch_ndim
            pooled = tuple(range(k, b))
            nb = 1
            for d in pooled:
                nb *= x.shape[d]
            mean_b = x.mean(dim=pooled, keepdim=True) if pooled else x
            m2_b = ((x - mean_b) ** 2).sum(dim=pooled, keepdim=True) if pooled else 0 * x
            if k == 0:
                mean_b = mean_b.reshape(x.shape[b:])
                m2_b = m2_b.reshape(x.shape[b:])
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mean_b.clone(), m2_b.clone()
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * nb / n)
        self.n = n

    def variance(self, regularize: bool = True) -> Tensor:
        """Sample variance; with ``regularize``, Stan's shrinkage towards ``1e-3``."""
        if self.mean is None or self.n < 2:
            raise ValueError("Welford needs at least two draws for a variance")
        var = self.m2 / (self.n - 1)
        if regularize:
            n = self.n
            var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
        return var


def warmup_schedule(
    num_warmup: int, initial_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """The slow (mass-matrix) windows of a Stan-style warm-up, as ``(start, end)`` pairs.

    When the buffers do not fit, they shrink to 15 % / 10 % of ``num_warmup`` as in Stan.
    With fewer than 20 warm-up steps there is no slow window.

    Example:
        >>> warmup_schedule(1000)
        [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    """
    if base_window < 1 or initial_buffer < 0 or term_buffer < 0:
        raise ValueError(
            f"warm-up windows need base_window >= 1 and non-negative buffers, got "
            f"initial_buffer={initial_buffer}, term_buffer={term_buffer}, base_window={base_window}"
        )
    if num_warmup < 20:
        return []
    if initial_buffer + base_window + term_buffer > num_warmup:
        initial_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - initial_buffer - term_buffer
    end_slow = num_warmup - term_buffer
    windows = []
    start, size = initial_buffer, base_window
    while start < end_slow:
        end = start + size
        # the last window stretches to the terminal buffer when the next would not fit
        if end + 2 * size > end_slow:
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


@dataclass(frozen=True)
class WindowAdaptation:
    """Configuration of warm-up adaptation (Stan-style windows).

    Args:
        step_size: adapt the step size by dual averaging (kernels with a target acceptance).
        mass_matrix: adapt a diagonal inverse mass matrix (kernels that have one, e.g. HMC).
        target_accept: acceptance rate to aim for; ``None`` uses the kernel's default
            (MALA 0.574, HMC 0.8, random walk 0.234).
        per_chain: one step size (and mass matrix) per chain instead of one shared by all.
        initial_buffer: fast initial buffer, step size only (Stan's 75).
        term_buffer: fast terminal buffer, step size only (Stan's 50).
        base_window: length of the first slow (mass-matrix) window; each next one doubles
            (Stan's 25).
        gamma: dual-averaging constant (see :class:`DualAveraging`).
        t0: dual-averaging constant (see :class:`DualAveraging`).
        kappa: dual-averaging constant (see :class:`DualAveraging`).

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> tr = ebmcmc.sample(energy, MALA(0.1), torch.zeros(8, 2), num_samples=10,
        ...                    num_warmup=100, adaptation=WindowAdaptation(target_accept=0.6),
        ...                    generator=torch.Generator().manual_seed(0), progress=False)
        >>> tr.stats["step_size"].shape
        torch.Size([8, 10])
    """

    step_size: bool = True
    mass_matrix: bool = True
    target_accept: float | None = None
    per_chain: bool = False
    initial_buffer: int = 75
    term_buffer: int = 50
    base_window: int = 25
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75

    def __post_init__(self):
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {self.target_accept}")
        for name in ("initial_buffer", "term_buffer", "base_window"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if int(self.base_window) < 1:
            raise ValueError("base_window must be >= 1")

    def start(self, kernel: Kernel, state: State, num_warmup: int) -> Adapter:
        """An :class:`Adapter` for ``num_warmup`` steps of ``kernel`` from ``state``."""
        return Adapter(self, kernel, state, num_warmup)


class Adapter:
    """The running adaptation of one warm-up: feed it each step, read the tuned kernel.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import HMC
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = HMC(0.1, 5)
        >>> s = k.init(energy, torch.zeros(16, 2))
        >>> ad = WindowAdaptation().start(k, s, num_warmup=50)
        >>> g = torch.Generator().manual_seed(0)
        >>> for _ in range(50):
        ...     s, info = k.step(energy, s, g)
        ...     k = ad.update(k, s, info)
        >>> k = ad.finalize(k)
    """

    def __init__(self, config: WindowAdaptation, kernel: Kernel, state: State, num_warmup: int):
        self.config = config
        self.num_warmup = int(num_warmup)
        self.iteration = 0
        target = config.target_accept or kernel.default_target_accept
        self.adapt_step = config.step_size and "step_size" in kernel.adaptable and target
        self.adapt_mass = config.mass_matrix and "inverse_mass_matrix" in kernel.adaptable
        view, _ = kernel.adaptation_view(state, None)
        self.batch_shape = view.batch_shape
        nb = len(self.batch_shape)
        self.keep = min(kernel.adaptation_keep_ndim, nb)
        #: batch dimensions averaged over when one value is shared by the chains
        self.pool_dims = tuple(range(self.keep, nb))
        self.da: DualAveraging | None = None
        if self.adapt_step:
            step = per_chain(kernel.step_size, self.batch_shape, view.energy, "step_size")
            step = step.clone() if config.per_chain else self._pool(step)
            if step.ndim == 0:
                step = float(step)
            self.da = DualAveraging(step, float(target), config.gamma, config.t0, config.kappa)
        self.windows = (
            warmup_schedule(
                self.num_warmup, config.initial_buffer, config.term_buffer, config.base_window
            )
            if self.adapt_mass
            else []
        )
        self.window_ends = {end for _, end in self.windows}
        self.welford = Welford(nb, per_chain=config.per_chain, keep_ndim=self.keep)

    def _pool(self, t: Tensor) -> Tensor:
        """Average a batch-shaped tensor over the shared chains (keeping kept dims)."""
        if self.keep == 0:
            return t.mean()
        return t.mean(dim=self.pool_dims, keepdim=True) if self.pool_dims else t

    def _in_slow_window(self, i: int) -> bool:
        return any(start <= i < end for start, end in self.windows)

    def update(self, kernel: Kernel, state: State, info: Info) -> Kernel:
        """Account for one warm-up step; return the kernel to use for the next one."""
        i = self.iteration
        self.iteration += 1
        changes = {}
        state, info = kernel.adaptation_view(state, info)
        if self.da is not None:
            a = info.accept_prob if self.config.per_chain else self._pool(info.accept_prob)
            changes["step_size"] = self.da.update(float(a) if self.da.scalar else a)
        if self.adapt_mass and self._in_slow_window(i):
            self.welford.update(state.position)
            if (i + 1) in self.window_ends:
                inv_mass = self.welford.variance()
                changes["inverse_mass_matrix"] = inv_mass
                self.welford.reset()
                if self.da is not None:
                    self.da.restart(self.da.final_step_size())
                    changes["step_size"] = self.da._exp(self.da.log_step)
        # hyperparameters computed here are valid by construction: skip re-validation
        return kernel.with_params(**changes) if changes else kernel

    def finalize(self, kernel: Kernel) -> Kernel:
        """The kernel to sample with after warm-up (averaged step size)."""
        if self.da is not None:
            return kernel.replace(step_size=self.da.final_step_size())
        return kernel
