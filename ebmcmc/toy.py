"""Ready-made small set-ups: DRL and the contrastive baselines on the 2-D toy sets and on
the 8 x 8 digits, in one place.

``examples/toy2d.py``, ``ebmcmc demo`` and the ``diagnostics/long_run.py`` study build their
models and estimators here, so the configuration a document quotes is the one that ran.

The 2-D DRL configuration (the paper's constants ``b^2 = 2e-4``, ``K = 30`` were set for
images in [-1, 1]; the issue allows a 2-D set-up its own ``T``, ``K`` and ``b^2``):

* data divided by ``scale = 2`` (eight Gaussians: radius 1, sd 0.05);
* :class:`~ebmcmc.diffusion.DRLSchedule` ``(T = 6)``, ``K = 30``, ``b^2 = 4e-3``;
* :class:`~ebmcmc.nn.TimeMLP` (128 wide, 3 layers, SiLU) with 64 random Fourier features
  of the input (scale 0.3 cycles per unit) and a zero-initialised output layer: without
  the features the MLP learns the ring within minutes but not the eight angular modes
  (measured: KL stuck at 1.4 nats, which is a ring with uniform angle); larger scales make
  the Langevin chains diverge;
* ``jump_every=1``: after each Langevin step, one independence Metropolis step proposing
  from the tether ``N(x_{t+1}, sigma_{t+1}^2)`` (not in the paper). Langevin chains of 30
  steps cannot cross between the eight modes, so they cannot learn the modes' relative
  weights; with the jumps they can (measured: KL 0.17 vs ≥ 0.4 without, same budget);
* the loss weights are DRL's recovery likelihood's own, ``s_0^2 / s_t^2``
  (``loss_weight="likelihood"``): the paper's ``sigma_1 / sigma_{t+1}`` gives level 0, the
  level whose density is scored, the smallest share of the gradient;
* Adam lr 1e-3, betas (0.5, 0.999), 100 warm-up steps, lr x 0.2 from ``decay_at``,
  gradient clipping at 1, EMA 0.99, batch 256.

Level ``t``'s density is ``p(x_t) ∝ exp(-E(a'_{t+1} x_t, t) / s_t^2)``
(:meth:`~ebmcmc.estimators.DiffusionRecoveryLikelihood.marginal_energy`); level 0 is the data
with ``sigma_bar_0 = 0.01`` (scaled units) of Gaussian noise.

The baselines (CD-k from data, short-run ML from uniform noise on [-1.5, 1.5]^2, PCD with a
10,000-sample buffer and 5 % re-initialisation) use the same network at one level, unadjusted
Langevin with step ``1e-3`` (scaled units), ``K = 30``, and the energy-magnitude penalty
``alpha = 0.1`` that short-run EBMs need to stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .diffusion import DRLSchedule
from .estimators import (
    ContrastiveDivergence,
    DiffusionRecoveryLikelihood,
    PersistentContrastiveDivergence,
    ShortRunML,
    uniform_noise,
)
from .estimators.base import Estimator
from .kernels import Langevin
from .nn import TimeMLP
from .train import TrainConfig

__all__ = ["ESTIMATORS", "ToySetup", "toy_setup", "digits_setup"]

#: the estimators a toy set-up can use
ESTIMATORS = ("drl", "cd", "short-run", "pcd")


@dataclass
class ToySetup:
    """A model, its estimator and training settings for flat data divided by ``scale``.

    Attributes:
        name: the estimator's name (one of :data:`ESTIMATORS`).
        model: the energy network.
        estimator: the training estimator.
        config: the :class:`~ebmcmc.train.TrainConfig`.
        scale: data are divided by this before training; every method below takes and
            returns data in the data's own units.
        noise_std: the Gaussian noise (data units) that the model's density includes
            (DRL's level 0 carries ``sigma_bar_0``; 0 for the baselines).
        step_size: the baselines' Langevin step (scaled units).
        sample_steps: the baselines' chain length when sampling from noise.
        dim: the data's dimension (2 for the toy sets, 64 for flattened digits).
        noise_range: the baselines' uniform noise (scaled units), for short-run and PCD
            starts and for sampling.
        clip: DRL generation clips its samples to this range (``None``: no clipping).

    Example:
        >>> setup = toy_setup("cd", hidden=16)
        >>> setup.energy(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    name: str
    model: torch.nn.Module
    estimator: Estimator
    config: TrainConfig
    scale: float
    noise_std: float
    step_size: float
    sample_steps: int
    dim: int = 2
    noise_range: tuple[float, float] = (-1.5, 1.5)
    clip: tuple[float, float] | None = None

    @property
    def is_drl(self) -> bool:
        """Whether the estimator is DRL."""
        return isinstance(self.estimator, DiffusionRecoveryLikelihood)

    def energy(self, x: Tensor, model: torch.nn.Module | None = None) -> Tensor:
        """The model's energy of points in data units, ``(n, dim) -> (n,)`` (DRL: level 0).

        ``model`` defaults to :attr:`model` (pass the trainer's EMA model to score that).
        """
        m = self.model if model is None else model
        if self.is_drl:
            return self.estimator.marginal_energy(m, 0)(x / self.scale)
        return m(x / self.scale)

    def chain_energy(self, model: torch.nn.Module | None = None):
        """The energy the long-run chains sample, in scaled units (DRL: level 0's marginal)."""
        m = self.model if model is None else model
        if self.is_drl:
            return self.estimator.marginal_energy(m, 0)
        return m

    def chain_kernel(self) -> Langevin:
        """The unadjusted Langevin kernel of training, for long runs (scaled units).

        DRL: level 0's step ``s_0^2 / 2`` without the tether; baselines: their step.
        """
        if self.is_drl:
            return Langevin(step_size=float(self.estimator.step_sizes[0]) ** 2 / 2)
        return Langevin(step_size=self.step_size)

    @torch.no_grad()
    def generate(self, n: int, generator=None, model: torch.nn.Module | None = None) -> Tensor:
        """``n`` samples in data units: DRL's progressive sampler, or Langevin from noise."""
        m = self.model if model is None else model
        if self.is_drl:
            x = self.estimator.generate(m, (n, self.dim), generator, clip=self.clip)
            return x * self.scale
        x = uniform_noise(*self.noise_range)((n, self.dim), generator, torch.zeros(1))
        kernel = Langevin(step_size=self.step_size)
        with torch.enable_grad():
            state = kernel.init(m, x, validate=False)
            for _ in range(self.sample_steps):
                state, _ = kernel.step(m, state, generator)
        return state.position.detach() * self.scale


def _train_config(lr: float, batch_size: int, decay_at: int | None) -> TrainConfig:
    """Adam (betas 0.5, 0.999), 100 warm-up steps, clipping at 1, EMA 0.99, lr x 0.2 at
    ``decay_at``; checkpoints every 200 steps."""
    return TrainConfig(
        lr=lr, betas=(0.5, 0.999), warmup_steps=100, grad_clip=1.0, ema_decay=0.99,
        batch_size=batch_size, checkpoint_every=200, decay_at=decay_at, decay_factor=0.2,
    )  # fmt: skip


def _baseline(name: str, step_size: float, K: int, energy_reg: float, buffer_size: int,
              noise_range: tuple[float, float]) -> Estimator:  # fmt: skip
    """CD-k, short-run ML or PCD with unadjusted Langevin and uniform noise starts."""
    kernel = Langevin(step_size=step_size)
    noise = uniform_noise(*noise_range)
    if name == "cd":
        return ContrastiveDivergence(kernel, K, energy_reg=energy_reg)
    if name == "short-run":
        return ShortRunML(kernel, K, noise=noise, energy_reg=energy_reg)
    return PersistentContrastiveDivergence(
        kernel, K, buffer_size=buffer_size, noise=noise, energy_reg=energy_reg
    )


def toy_setup(
    estimator: str = "drl",
    *,
    scale: float = 2.0,
    levels: int = 6,
    K: int = 30,
    b2: float = 4e-3,
    loss_weight: str = "likelihood",
    hidden: int = 128,
    layers: int = 3,
    fourier_features: int = 64,
    fourier_scale: float = 0.3,
    jump_every: int = 1,
    step_size: float = 1e-3,
    sample_steps: int = 500,
    energy_reg: float = 0.1,
    buffer_size: int = 10000,
    lr: float = 1e-3,
    batch_size: int = 256,
    decay_at: int | None = None,
    seed: int = 0,
) -> ToySetup:
    """Build the 2-D configuration described in this module's docstring.

    Args:
        estimator: ``"drl"``, ``"cd"``, ``"short-run"`` or ``"pcd"``.
        scale: data are divided by this.
        levels, K, b2, loss_weight: DRL's ``T``, Langevin steps, ``b^2`` and loss weights
            (``K`` is also the baselines' chain length).
        hidden, layers, fourier_features, fourier_scale: the :class:`~ebmcmc.nn.TimeMLP`.
        jump_every: DRL's tether jumps (0: the paper's sampler).
        step_size, sample_steps, energy_reg, buffer_size: the baselines' Langevin step,
            sampling length, energy penalty and PCD buffer.
        lr, batch_size: Adam's learning rate (betas (0.5, 0.999), 100 warm-up steps, gradient
            clipping at 1, EMA 0.99) and the batch.
        decay_at: the step from which the learning rate is multiplied by 0.2 (``None``:
            never; e.g. 60 % of the planned steps).
        seed: seeds the network's initialisation and Fourier features.

    Returns:
        A :class:`ToySetup`.

    Example:
        >>> s = toy_setup("drl", hidden=16, K=3)
        >>> out = s.estimator.loss(s.model, torch.randn(8, 2), torch.Generator().manual_seed(0))
        >>> out.negatives.shape
        torch.Size([8, 2])
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    torch.manual_seed(seed)
    num_levels = levels if estimator == "drl" else 1
    model = TimeMLP(
        2,
        hidden=hidden,
        num_layers=layers,
        num_levels=num_levels,
        fourier_features=fourier_features,
        fourier_scale=fourier_scale,
        fourier_seed=seed,
        zero_output=fourier_features > 0,
    )
    config = _train_config(lr, batch_size, decay_at)
    noise_std = 0.0
    if estimator == "drl":
        est: Estimator = DiffusionRecoveryLikelihood(
            DRLSchedule(levels),
            langevin_steps=K,
            step_size_b2=b2,
            loss_weight=loss_weight,
            jump_every=jump_every,
        )
        noise_std = float(est.schedule.sigma_bar[0]) * scale
    else:
        est = _baseline(estimator, step_size, K, energy_reg, buffer_size, (-1.5, 1.5))
    return ToySetup(estimator, model, est, config, float(scale), noise_std, step_size, sample_steps)


def digits_setup(
    estimator: str = "drl",
    *,
    levels: int = 6,
    K: int = 30,
    b2: float = 2e-4,
    loss_weight: str = "paper",
    jump_every: int = 0,
    metropolis: bool = False,
    hidden: int = 256,
    layers: int = 3,
    step_size: float = 1e-3,
    sample_steps: int = 200,
    energy_reg: float = 0.1,
    buffer_size: int = 10000,
    lr: float = 1e-3,
    batch_size: int = 128,
    decay_at: int | None = None,
    seed: int = 0,
) -> ToySetup:
    """DRL or a baseline for the 8 x 8 digits, flattened to 64 values in [-1, 1].

    The network is a :class:`~ebmcmc.nn.TimeMLP` on the 64 pixels (256 wide, 3 layers); DRL
    uses the paper's image constants (``b^2 = 2e-4``, K = 30, its loss weights) and clips
    generated samples to [-1, 1]; the baselines start short-run and PCD chains from uniform
    noise on [-1, 1]. Optimiser as in :func:`toy_setup`, batch 128.

    The paper's constants give the best samples for a short training budget, but their
    30-step chains never leave their start (the tether needs about ``1 / b^2`` steps), so
    chains run far longer find a conditional the loss never saw. For long-run stable
    conditional chains use ``b2=4e-3, K=250, loss_weight="likelihood"`` (what
    ``diagnostics/long_run.py`` trains; measured there: stable over 25,000 steps).

    Args:
        estimator: ``"drl"``, ``"cd"``, ``"short-run"`` or ``"pcd"``.
        levels, K, b2, loss_weight, jump_every, metropolis: DRL's schedule length, Langevin
            steps, step constant, loss weights, tether jumps and Metropolis correction (see
            :class:`~ebmcmc.estimators.DiffusionRecoveryLikelihood`).
        hidden, layers: the :class:`~ebmcmc.nn.TimeMLP`.
        step_size, sample_steps, energy_reg, buffer_size: the baselines' Langevin step,
            sampling length, energy penalty and PCD buffer (``K`` is their chain length).
        lr, batch_size, decay_at: the optimiser (learning rate times 0.2 from ``decay_at``).
        seed: seeds the network's initialisation.

    Returns:
        A :class:`ToySetup` with ``dim = 64`` (reshape samples to ``(n, 1, 8, 8)``).

    Example:
        >>> s = digits_setup("cd", hidden=16, K=2)
        >>> s.generate(3, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 64])
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    torch.manual_seed(seed)
    model = TimeMLP(64, hidden=hidden, num_layers=layers,
                    num_levels=levels if estimator == "drl" else 1)  # fmt: skip
    config = _train_config(lr, batch_size, decay_at)
    noise_std = 0.0
    if estimator == "drl":
        est: Estimator = DiffusionRecoveryLikelihood(
            DRLSchedule(levels),
            langevin_steps=K,
            step_size_b2=b2,
            loss_weight=loss_weight,
            jump_every=jump_every,
            metropolis=metropolis,
        )
        noise_std = float(est.schedule.sigma_bar[0])
    else:
        est = _baseline(estimator, step_size, K, energy_reg, buffer_size, (-1.0, 1.0))
    return ToySetup(estimator, model, est, config, 1.0, noise_std, step_size, sample_steps,
                    dim=64, noise_range=(-1.0, 1.0), clip=(-1.0, 1.0))  # fmt: skip
