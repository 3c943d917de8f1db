"""Contrastive-divergence baselines: CD-k, short-run ML and persistent CD with a replay buffer.

All three estimate the maximum-likelihood gradient ``E_data[grad E] - E_model[grad E]`` with
negatives from K steps of an ebmcmc kernel; they differ in where the chains start: at the data
(CD-k), at noise (short-run ML, Nijkamp et al.), or at samples kept from earlier iterations
(PCD with a replay buffer, Du & Mordatch; a fraction re-initialised to noise each time).
The loss is ``mean E(x_data) - mean E(x_neg)`` plus an optional energy-magnitude penalty
``alpha * mean(E_pos^2 + E_neg^2)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._deprecation import renamed_kwargs, warn_deprecated
from ..kernels.base import Kernel, State
from .base import Estimator, LossOutput

__all__ = [
    "ContrastiveDivergence",
    "ShortRunML",
    "PersistentContrastiveDivergence",
    "uniform_noise",
]


def uniform_noise(low: float = -1.0, high: float = 1.0) -> Callable:
    """A noise initializer ``(shape, generator, like) -> Tensor`` uniform on ``[low, high]``.

    Example:
        >>> import torch
        >>> uniform_noise(-2, 2)((3, 2), torch.Generator().manual_seed(0), torch.zeros(1)).shape
        torch.Size([3, 2])
    """
    if not high > low:
        raise ValueError(f"need high > low, got [{low}, {high}]")

    def init(shape, generator, like: Tensor) -> Tensor:
        u = torch.rand(tuple(shape), generator=generator, dtype=like.dtype, device=like.device)
        return low + (high - low) * u

    return init


def _energy_of(model) -> Callable[[Tensor], Tensor]:
    return model


class ContrastiveDivergence(Estimator):
    """CD-k: K kernel steps from the data (or, with ``init="noise"``, from noise).

    Args:
        kernel: any ebmcmc kernel (e.g. ``Langevin(step_size=...)``).
        num_mcmc_steps: K, the kernel steps per loss (named for any kernel, not only
            Langevin; ``steps`` is its deprecated 0.1 spelling).
        init: ``"data"`` (CD-k) or ``"noise"`` (short-run ML).
        noise: initializer for ``init="noise"``, ``(shape, generator, like) -> Tensor``;
            default uniform on [-1, 1].
        energy_reg: ``alpha`` of the energy-magnitude penalty (0 disables it).

    The model is an energy ``model(x) -> (batch,)``.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import Langevin
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(),
        ...                             torch.nn.Linear(16, 1), torch.nn.Flatten(0))
        >>> est = ContrastiveDivergence(Langevin(0.01), num_mcmc_steps=5)
        >>> out = est.loss(model, torch.randn(8, 2), torch.Generator().manual_seed(0))
        >>> out.loss.backward()
    """

    @renamed_kwargs(steps="num_mcmc_steps")
    def __init__(
        self,
        kernel: Kernel,
        num_mcmc_steps: int,
        init: str = "data",
        noise: Callable | None = None,
        energy_reg: float = 0.0,
    ):
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be an ebmcmc Kernel, got {type(kernel).__name__}")
        n = num_mcmc_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_mcmc_steps must be an int >= 1, got {n!r}")
        if init not in ("data", "noise"):
            raise ValueError(f"init must be 'data' or 'noise', got {init!r}")
        if not energy_reg >= 0:
            raise ValueError(f"energy_reg must be >= 0, got {energy_reg!r}")
        self.kernel, self.num_mcmc_steps, self.init = kernel, num_mcmc_steps, init
        self.noise = noise or uniform_noise()
        self.energy_reg = float(energy_reg)

    @property
    def steps(self) -> int:
        """Deprecated: :attr:`num_mcmc_steps` (removed in 0.3)."""
        warn_deprecated("ContrastiveDivergence.steps", "num_mcmc_steps")
        return self.num_mcmc_steps

    def _chains(self, model, start: Tensor, generator) -> tuple[Tensor, float]:
        energy = _energy_of(model)
        state: State = self.kernel.init(energy, start.detach(), validate=False)
        acc = 0.0
        for _ in range(self.num_mcmc_steps):
            state, info = self.kernel.step(energy, state, generator)
            acc += float(info.accept_prob.mean())
        return state.position.detach(), acc / self.num_mcmc_steps

    def _start(self, batch: Tensor, generator) -> Tensor:
        if self.init == "data":
            return batch
        return self.noise(batch.shape, generator, batch)

    def _loss(self, model, batch: Tensor, neg: Tensor, accept: float) -> LossOutput:
        e_pos = model(batch)
        e_neg = model(neg)
        loss = e_pos.mean() - e_neg.mean()
        if self.energy_reg:
            loss = loss + self.energy_reg * (e_pos**2 + e_neg**2).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{type(self).__name__} loss is not finite")
        stats = {
            "e_pos": float(e_pos.detach().mean()),
            "e_neg": float(e_neg.detach().mean()),
            "accept": accept,
        }
        return LossOutput(loss, stats, neg)

    def loss(self, model, batch: Tensor, generator=None) -> LossOutput:
        """Contrast the batch ``(batch, *event)`` with K-step negatives."""
        neg, acc = self._chains(model, self._start(batch, generator), generator)
        return self._loss(model, batch, neg, acc)


@renamed_kwargs(steps="num_mcmc_steps")
def ShortRunML(
    kernel: Kernel, num_mcmc_steps: int, noise: Callable | None = None, energy_reg: float = 0.0
) -> ContrastiveDivergence:
    """Short-run ML (Nijkamp et al. 2019): K kernel steps from noise every iteration.

    Args:
        kernel: as :class:`ContrastiveDivergence`.
        num_mcmc_steps: K.
        noise: as :class:`ContrastiveDivergence`.
        energy_reg: as :class:`ContrastiveDivergence`.

    Example:
        >>> from ebmcmc.kernels import Langevin
        >>> ShortRunML(Langevin(0.01), num_mcmc_steps=20).init
        'noise'
    """
    return ContrastiveDivergence(
        kernel, num_mcmc_steps, init="noise", noise=noise, energy_reg=energy_reg
    )


class PersistentContrastiveDivergence(ContrastiveDivergence):
    """PCD with a replay buffer (Du & Mordatch 2019).

    Each loss draws ``batch`` chains from a buffer of ``buffer_size`` past samples
    (initialised from noise on first use), re-initialises a fraction ``reinit_prob`` of them to
    noise, runs K kernel steps and writes them back.

    Args:
        kernel: as :class:`ContrastiveDivergence`.
        num_mcmc_steps: as :class:`ContrastiveDivergence`.
        noise: as :class:`ContrastiveDivergence`.
        energy_reg: as :class:`ContrastiveDivergence`.
        buffer_size: samples kept.
        reinit_prob: probability that a drawn chain restarts from noise (e.g. 0.05).

    ``state_dict()`` holds the buffer, so a checkpoint resumes the same run.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import Langevin
        >>> est = PersistentContrastiveDivergence(Langevin(0.01), 5, buffer_size=100)
        >>> model = lambda x: (x**2).sum(-1)
        >>> out = est.loss(model, torch.randn(8, 2), torch.Generator().manual_seed(0))
        >>> est.buffer.shape
        torch.Size([100, 2])
    """

    @renamed_kwargs(steps="num_mcmc_steps")
    def __init__(
        self,
        kernel: Kernel,
        num_mcmc_steps: int,
        buffer_size: int = 10000,
        reinit_prob: float = 0.05,
        noise: Callable | None = None,
        energy_reg: float = 0.0,
    ):
        super().__init__(kernel, num_mcmc_steps, init="noise", noise=noise, energy_reg=energy_reg)
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, got {buffer_size!r}")
        if not 0 <= reinit_prob <= 1:
            raise ValueError(f"reinit_prob must lie in [0, 1], got {reinit_prob!r}")
        self.buffer_size, self.reinit_prob = buffer_size, float(reinit_prob)
        self.buffer: Tensor | None = None

    def loss(self, model, batch: Tensor, generator=None) -> LossOutput:
        n = batch.shape[0]
        if self.buffer is None:
            self.buffer = self.noise((self.buffer_size,) + tuple(batch.shape[1:]), generator, batch)
        if tuple(self.buffer.shape[1:]) != tuple(batch.shape[1:]):
            raise ValueError(
                f"batch event shape {tuple(batch.shape[1:])} differs from the buffer's "
                f"{tuple(self.buffer.shape[1:])}"
            )
        idx = torch.randint(self.buffer_size, (n,), generator=generator, device=self.buffer.device)
        start = self.buffer[idx]
        fresh = self.noise(batch.shape, generator, batch)
        reinit = torch.rand(n, generator=generator, device=batch.device) < self.reinit_prob
        start = torch.where(reinit.reshape((n,) + (1,) * (batch.ndim - 1)), fresh, start)
        neg, acc = self._chains(model, start, generator)
        self.buffer[idx] = neg
        return self._loss(model, batch, neg, acc)

    def state_dict(self) -> dict:
        return {} if self.buffer is None else {"buffer": self.buffer.clone()}

    def load_state_dict(self, state: dict) -> None:
        buf = state.get("buffer")
        if buf is not None and buf.shape[0] != self.buffer_size:
            raise ValueError(f"buffer has {buf.shape[0]} samples, expected {self.buffer_size}")
        self.buffer = None if buf is None else buf.clone()
