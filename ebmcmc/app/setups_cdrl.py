"""The CDRL set-ups behind ``toy_setup("cdrl")`` and ``digits_setup("cdrl")``: a
:class:`~ebmcmc.app.setups.ToySetup` whose model is a :class:`~ebmcmc.nn.CooperativeModel`.

The configurations and the figures measured with them are in :mod:`ebmcmc.app.setups`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion import CDRLSchedule
from ..estimators import CooperativeRecoveryLikelihood
from ..kernels import Langevin
from ..nn import CDRLInitializerMLP, CooperativeModel, TimeMLP
from ..train import ParamGroup, TrainConfig
from .setups import ToySetup, _seeded

__all__ = ["CDRLToySetup", "cdrl_toy_setup", "cdrl_digits_setup"]


class CDRLToySetup(ToySetup):
    """A :class:`ToySetup` for CDRL: :attr:`model` is a :class:`~ebmcmc.nn.CooperativeModel`.

    :meth:`energy` and :meth:`chain_energy` are the energy network's level-0 marginal (as for
    DRL), :meth:`chain_kernel` unadjusted Langevin at level 0's step, and :meth:`generate`
    CDRL's sampler (initializer proposals, ``K`` Langevin steps per level, the Tweedie step).

    Example:
        >>> from ebmcmc.app.setups import toy_setup
        >>> s = toy_setup("cdrl", hidden=16, num_langevin_steps=2)
        >>> s.generate(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """

    def _cdrl(self) -> CooperativeRecoveryLikelihood:
        assert isinstance(self.estimator, CooperativeRecoveryLikelihood)
        return self.estimator

    def energy(self, x: Tensor, model: torch.nn.Module | None = None) -> Tensor:
        """The energy network's level-0 marginal energy of points in data units."""
        m = self.model if model is None else model
        return self._cdrl().marginal_energy(m, 0)(x / self.scale)

    def chain_energy(self, model: torch.nn.Module | None = None):
        """Level 0's marginal energy (scaled units), for long runs."""
        m = self.model if model is None else model
        return self._cdrl().marginal_energy(m, 0)

    def chain_kernel(self) -> Langevin:
        """Unadjusted Langevin at level 0's step ``s_0^2 / 2`` (no tether)."""
        return Langevin(step_size=float(self._cdrl().step_sizes[0]) ** 2 / 2)

    @torch.no_grad()
    def generate(self, n: int, generator=None, model: torch.nn.Module | None = None) -> Tensor:
        """``n`` samples in data units from CDRL's sampler."""
        m = self.model if model is None else model
        x = self._cdrl().generate(m, (n, self.dim), generator, clip=self.clip)
        return x * self.scale


def _cdrl_config(lr: float, init_lr: float, warmup: int, batch_size: int,
                 decay_at: int | None) -> TrainConfig:  # fmt: skip
    """Adam (betas 0.5, 0.999) in two groups, the initializer's at ``init_lr``, each clipped
    at 1; EMA 0.99; lr x 0.2 at ``decay_at``; checkpoints every 200 steps."""
    return TrainConfig(
        lr=lr, betas=(0.5, 0.999), warmup_steps=warmup, grad_clip=1.0, ema_decay=0.99,
        batch_size=batch_size, checkpoint_every=200, decay_at=decay_at, decay_factor=0.2,
        param_groups=(ParamGroup("initializer.", lr=init_lr),),
    )  # fmt: skip


def cdrl_toy_setup(*, scale: float, levels: int, steps: int, b2: float, loss_weight: str,
                    jump_every: int, hidden: int, layers: int, fourier_features: int,
                    fourier_scale: float, lr: float, batch_size: int, decay_at: int | None,
                    seed: int) -> ToySetup:  # fmt: skip
    """CDRL on a 2-D toy: what ``toy_setup("cdrl", ...)`` builds (every argument given; see
    :mod:`ebmcmc.app.setups` for the configuration and :func:`~ebmcmc.app.setups.toy_setup`
    for the arguments).

    Example:
        >>> s = cdrl_toy_setup(scale=2.0, levels=6, steps=2, b2=4e-4, loss_weight="paper",
        ...                    jump_every=0, hidden=16, layers=2, fourier_features=0,
        ...                    fourier_scale=1.0, lr=1e-3, batch_size=8, decay_at=None, seed=0)
        >>> type(s.model).__name__
        'CooperativeModel'
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    schedule = CDRLSchedule(levels)
    with _seeded(seed):
        energy = TimeMLP(2, hidden=hidden, num_layers=layers, num_levels=levels,
                         fourier_features=fourier_features, fourier_scale=fourier_scale,
                         fourier_seed=seed, zero_output=fourier_features > 0)  # fmt: skip
        init = CDRLInitializerMLP(2, hidden=hidden, num_blocks=2, logsnr=schedule.logsnr)
    est = CooperativeRecoveryLikelihood(schedule, num_langevin_steps=steps, step_size_b2=b2,
                                        loss_weight=loss_weight, jump_every=jump_every)  # fmt: skip
    noise_std = float(schedule.sigma_bar[0]) * scale
    return CDRLToySetup("cdrl", CooperativeModel(energy, init), est,
                        _cdrl_config(lr, lr, 20, batch_size, decay_at), float(scale), noise_std,
                        0.0, 0)  # fmt: skip


def cdrl_digits_setup(*, levels: int, steps: int, b2: float, loss_weight: str, hidden: int,
                       layers: int, lr: float, batch_size: int, decay_at: int | None,
                       seed: int) -> ToySetup:  # fmt: skip
    """CDRL on the 8 x 8 digits: what ``digits_setup("cdrl", ...)`` builds (see
    :mod:`ebmcmc.app.setups`).

    Example:
        >>> s = cdrl_digits_setup(levels=6, steps=2, b2=4e-4, loss_weight="paper", hidden=16,
        ...                       layers=2, lr=1e-3, batch_size=8, decay_at=None, seed=0)
        >>> s.dim, s.config.param_groups[0].lr
        (64, 0.0001)
    """
    schedule = CDRLSchedule(levels)
    with _seeded(seed):
        energy = TimeMLP(64, hidden=hidden, num_layers=layers, num_levels=levels)
        init = CDRLInitializerMLP(64, hidden=hidden, num_blocks=2, logsnr=schedule.logsnr)
    est = CooperativeRecoveryLikelihood(schedule, num_langevin_steps=steps, step_size_b2=b2,
                                        loss_weight=loss_weight)  # fmt: skip
    return CDRLToySetup("cdrl", CooperativeModel(energy, init), est,
                        _cdrl_config(lr, lr / 10, 100, batch_size, decay_at), 1.0,
                        float(schedule.sigma_bar[0]), 0.0, 0, dim=64, noise_range=(-1.0, 1.0),
                        clip=(-1.0, 1.0))  # fmt: skip
