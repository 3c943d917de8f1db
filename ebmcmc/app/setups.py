"""Ready-made small training set-ups: DRL and the contrastive baselines on the 2-D toy sets
and on the 8 x 8 digits.

``examples/toy2d.py``, ``examples/mnist_drl.py``, ``ebmcmc demo`` and the
``diagnostics/long_run.py`` study build their models and estimators here, so a configuration
quoted in the docs is the one that ran. :func:`toy_setup` and :func:`digits_setup` return a
:class:`ToySetup`: the network, its estimator, a :class:`~ebmcmc.train.TrainConfig`, and
helpers that work in the data's own units (energy, generation, the long-run chain).

**2-D DRL** (:func:`toy_setup` with ``"drl"``):

* data divided by ``scale = 2`` (eight Gaussians: radius 1, sd 0.05);
* :class:`~ebmcmc.diffusion.DRLSchedule` with ``T = 6``, 30 Langevin steps per level,
  ``b^2 = 4e-3`` (the paper's ``2e-4`` suits images in [-1, 1], not a 2-D set);
* :class:`~ebmcmc.nn.TimeMLP` (128 wide, 3 layers, SiLU) with 64 random Fourier features of
  the input (scale 0.3 cycles per unit) and a zero-initialised output layer;
* ``jump_every=1``: after each Langevin step, one exact independence Metropolis step that
  proposes from the tether ``N(x_{t+1}, sigma_{t+1}^2)`` (not in the paper), so that the
  short chains see the relative weights of well-separated modes;
* the recovery likelihood's own loss weights ``s_0^2 / s_t^2`` (``loss_weight="likelihood"``);
* Adam lr 1e-3, betas (0.5, 0.999), 100 warm-up steps, lr x 0.2 from ``decay_at``,
  gradient clipping at 1, EMA 0.99, batch 256.

Why each choice was made, with the measurements, is in the training guide (``docs/training.md``).
Level ``t``'s density is ``p(x_t) ∝ exp(-E(a'_{t+1} x_t, t) / s_t^2)``
(:meth:`~ebmcmc.estimators.DiffusionRecoveryLikelihood.marginal_energy`); level 0 is the data
with ``sigma_bar_0 = 0.01`` (scaled units) of Gaussian noise.

**Baselines** (CD-k from data, short-run ML from uniform noise on ``[-1.5, 1.5]^2``, PCD with a
10,000-sample buffer and 5 % re-initialisation) use the same network at one level, unadjusted
Langevin with step ``1e-3`` (scaled units), 30 steps, and the energy-magnitude penalty
``alpha = 0.1`` that short-run EBMs need to stay bounded.

**DAEBM** (:func:`toy_setup` / :func:`digits_setup` with ``"daebm"``; the diffusion-assisted
EBM, :class:`~ebmcmc.estimators.DiffusionAssistedEBM`), as in the paper's code where it has a
setting:

* 2-D (the four rings): the data in their own units (``scale = 1``), ``T = 6`` levels of the
  sqrtcumlinear schedule with ramp ``1e-2 .. 0.3``, 40 Langevin steps per transition, initial
  steps ``epsilon_t = sigma_t`` (``epsilon_0 = epsilon_1``; ebmcmc's ``eps = epsilon^2 / 2``;
  the paper starts at ``0.1 sigma_t``, 100 times smaller in ``eps`` than where its own rule
  takes the steps in a short run, which costs about 400 iterations of growth: measured in
  ``diagnostics/daebm_step_rules.py``), a 10,000-entry buffer, Adam lr 5e-4 with betas
  (0, 0.999), batch 100, no EMA; the Metropolis correction from iteration 500 (the paper's
  one epoch of 50,000 points);
  the :class:`~ebmcmc.nn.TimeMLP` of the DRL set-up (with Fourier features) over ``T + 1``
  levels.
* digits: ``T = 50``, ramp ``2e-4 .. 2e-2``, 40 steps, ``eps = 0.005`` (the paper's
  ``epsilon^2 = 0.01``) at every level, the correction from iteration 300 (the paper waits 10
  of its 200 epochs; a CPU run is far shorter), a :class:`~ebmcmc.nn.TimeMLP` on the 64
  pixels, Adam lr 1e-4 with betas (0, 0.999), batch 128, no EMA, and a 10,000-entry buffer
  (the paper's 50,000 suits its 120,000 iterations; a short run needs every entry to move).
* the per-level step sizes adapted by the paper's band rule every 10 iterations (the
  estimator's default; the paper adapts every 100; see
  :class:`~ebmcmc.adaptation.LevelStepAdaptation`).
* With other ``levels`` the ramp is scaled by ``6 / T`` (2-D) or ``50 / T`` (digits), which
  keeps the top level's noise.

Network initialisation is seeded by ``seed`` without touching the caller's global random state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._deprecation import pop_renamed
from ..diffusion import DAEBMSchedule, DRLSchedule
from ..estimators import (
    ContrastiveDivergence,
    DiffusionAssistedEBM,
    DiffusionRecoveryLikelihood,
    PersistentContrastiveDivergence,
    ShortRunML,
    uniform_noise,
)
from ..estimators.base import Estimator
from ..kernels import Kernel, Langevin
from ..nn import TimeMLP
from ..train import TrainConfig

__all__ = ["ESTIMATORS", "ToySetup", "toy_setup", "digits_setup"]

#: the estimators a toy set-up can use
ESTIMATORS = ("drl", "cd", "short-run", "pcd", "daebm")


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
        if isinstance(self.estimator, DiffusionAssistedEBM):  # DAEBM: level 0 of the joint
            return self.estimator.level_energy(m, 0)(x / self.scale)
        if isinstance(self.estimator, DiffusionRecoveryLikelihood):
            return self.estimator.marginal_energy(m, 0)(x / self.scale)
        return m(x / self.scale)

    def chain_energy(self, model: torch.nn.Module | None = None):
        """The energy the long-run chains sample, in scaled units (DRL: level 0's marginal;
        DAEBM: ``x -> E(x, 0)``)."""
        m = self.model if model is None else model
        if isinstance(self.estimator, DiffusionAssistedEBM):
            return self.estimator.level_energy(m, 0)
        if isinstance(self.estimator, DiffusionRecoveryLikelihood):
            return self.estimator.marginal_energy(m, 0)
        return m

    def chain_kernel(self) -> Kernel:
        """The kernel of training at the data level, for long runs (scaled units).

        DRL: unadjusted Langevin at level 0's step ``s_0^2 / 2`` without the tether;
        baselines: unadjusted Langevin at their step; DAEBM: MALA at level 0's (adapted) step.
        """
        if isinstance(self.estimator, DiffusionAssistedEBM):
            return self.estimator.level_kernel(0)
        if isinstance(self.estimator, DiffusionRecoveryLikelihood):
            return Langevin(step_size=float(self.estimator.step_sizes[0]) ** 2 / 2)
        return Langevin(step_size=self.step_size)

    @torch.no_grad()
    def generate(self, n: int, generator=None, model: torch.nn.Module | None = None) -> Tensor:
        """``n`` samples in data units: DRL's progressive sampler, DAEBM's chains (from noise
        at ``t = T``, an image after each transition that ends at ``t = 0`` once
        ``sample_steps`` transitions of burn-in are over), or Langevin from noise."""
        m = self.model if model is None else model
        if isinstance(self.estimator, DiffusionAssistedEBM):
            with torch.enable_grad():
                out = self.estimator.generate(
                    m,
                    n,
                    (self.dim,),
                    generator,
                    num_chains=min(n, 1000),
                    burn_in=self.sample_steps,
                    max_transitions=100 * self.sample_steps + 1000,
                )
            x = out.samples
            if self.clip is not None:
                x = x.clamp(*self.clip)
            return x * self.scale
        if isinstance(self.estimator, DiffusionRecoveryLikelihood):
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


def _baseline(name: str, step_size: float, steps: int, energy_reg: float, buffer_size: int,
              noise_range: tuple[float, float]) -> Estimator:  # fmt: skip
    """CD-k, short-run ML or PCD with unadjusted Langevin and uniform noise starts."""
    kernel = Langevin(step_size=step_size)
    noise = uniform_noise(*noise_range)
    if name == "cd":
        return ContrastiveDivergence(kernel, steps, energy_reg=energy_reg)
    if name == "short-run":
        return ShortRunML(kernel, steps, noise=noise, energy_reg=energy_reg)
    return PersistentContrastiveDivergence(
        kernel, steps, buffer_size=buffer_size, noise=noise, energy_reg=energy_reg
    )


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's default generator inside the block only (network initialisation draws
    from it); the caller's random state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _renamed_k(value: int | None, deprecated: dict, where: str) -> int | None:
    if not deprecated:
        return value
    new = pop_renamed(deprecated, {"K": "num_langevin_steps"}, where)
    extra = set(new) - {"num_langevin_steps"}
    if extra:
        raise TypeError(f"{where}() got unexpected keyword arguments {sorted(extra)}")
    return new["num_langevin_steps"]


def toy_setup(
    estimator: str = "drl",
    *,
    scale: float | None = None,
    levels: int = 6,
    num_langevin_steps: int | None = None,
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
    lr: float | None = None,
    batch_size: int | None = None,
    decay_at: int | None = None,
    seed: int = 0,
    **deprecated: Any,
) -> ToySetup:
    """Build the 2-D configuration described in this module's docstring.

    Args:
        estimator: ``"drl"``, ``"cd"``, ``"short-run"``, ``"pcd"`` or ``"daebm"``.
        scale: data are divided by this (default 2; 1 for DAEBM, the paper's units).
        levels: DRL's (DAEBM's) number of levels ``T``.
        num_langevin_steps: Langevin steps per level (DRL), per transition (DAEBM) or per
            loss (the baselines); default 30 (DAEBM: 40).
        b2: DRL's step constant ``b^2``.
        loss_weight: DRL's loss weights (see
            :class:`~ebmcmc.estimators.DiffusionRecoveryLikelihood`).
        hidden: width of the :class:`~ebmcmc.nn.TimeMLP`.
        layers: its number of hidden layers.
        fourier_features: its number of random Fourier features of the input (0: none).
        fourier_scale: their frequency scale (cycles per unit).
        jump_every: DRL's tether jumps (0: the paper's sampler).
        step_size: the baselines' Langevin step (scaled units).
        sample_steps: the baselines' chain length when sampling from noise.
        energy_reg: the baselines' energy-magnitude penalty.
        buffer_size: PCD's replay buffer size.
        lr: Adam's learning rate, default 1e-3 (DAEBM: 5e-4 with its own optimiser settings,
            see the module docstring) (betas (0.5, 0.999), 100 warm-up steps, gradient clipping
            at 1, EMA 0.99).
        batch_size: the training batch, default 256 (DAEBM: 100).
        decay_at: the step from which the learning rate is multiplied by 0.2 (``None``:
            never; e.g. 60 % of the planned steps).
        seed: seeds the network's initialisation and Fourier features.
        **deprecated: ``K`` (0.1's name of ``num_langevin_steps``; removed in 0.3).

    Returns:
        A :class:`ToySetup`.

    Example:
        >>> s = toy_setup("drl", hidden=16, num_langevin_steps=3)
        >>> out = s.estimator.loss(s.model, torch.randn(8, 2), torch.Generator().manual_seed(0))
        >>> out.negatives.shape
        torch.Size([8, 2])
    """
    num_langevin_steps = _renamed_k(num_langevin_steps, deprecated, "toy_setup")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "daebm":
        return _daebm_toy_setup(
            scale=1.0 if scale is None else scale, levels=levels,
            steps=40 if num_langevin_steps is None else num_langevin_steps, hidden=hidden,
            layers=layers, fourier_features=fourier_features, fourier_scale=fourier_scale,
            sample_steps=sample_steps, buffer_size=buffer_size,
            lr=5e-4 if lr is None else lr, batch_size=100 if batch_size is None else batch_size,
            decay_at=decay_at, seed=seed,
        )  # fmt: skip
    scale = 2.0 if scale is None else scale
    num_langevin_steps = 30 if num_langevin_steps is None else num_langevin_steps
    lr = 1e-3 if lr is None else lr
    batch_size = 256 if batch_size is None else batch_size
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    num_levels = levels if estimator == "drl" else 1
    with _seeded(seed):
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
    est: Estimator
    if estimator == "drl":
        drl = DiffusionRecoveryLikelihood(
            DRLSchedule(levels),
            num_langevin_steps=num_langevin_steps,
            step_size_b2=b2,
            loss_weight=loss_weight,
            jump_every=jump_every,
        )
        noise_std = float(drl.schedule.sigma_bar[0]) * scale
        est = drl
    else:
        est = _baseline(
            estimator, step_size, num_langevin_steps, energy_reg, buffer_size, (-1.5, 1.5)
        )
    return ToySetup(estimator, model, est, config, float(scale), noise_std, step_size, sample_steps)


def digits_setup(
    estimator: str = "drl",
    *,
    levels: int | None = None,
    num_langevin_steps: int | None = None,
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
    lr: float | None = None,
    batch_size: int = 128,
    decay_at: int | None = None,
    seed: int = 0,
    **deprecated: Any,
) -> ToySetup:
    """DRL or a baseline for the 8 x 8 digits, flattened to 64 values in [-1, 1].

    The network is a :class:`~ebmcmc.nn.TimeMLP` on the 64 pixels (256 wide, 3 layers); DRL
    uses the paper's image constants (``b^2 = 2e-4``, 30 steps, its loss weights) and clips
    generated samples to [-1, 1]; the baselines start short-run and PCD chains from uniform
    noise on [-1, 1]. Optimiser as in :func:`toy_setup`, batch 128.

    The paper's constants give the best samples for a short training budget, but their
    30-step chains never leave their start (the tether needs about ``1 / b^2`` steps), so
    chains run far longer find a conditional the loss never saw. For long-run stable
    conditional chains use ``b2=4e-3, num_langevin_steps=250, loss_weight="likelihood"`` (what
    ``diagnostics/long_run.py`` trains; measured there: stable over 25,000 steps).

    Args:
        estimator: ``"drl"``, ``"cd"``, ``"short-run"``, ``"pcd"`` or ``"daebm"``.
        levels: DRL's number of levels ``T`` (DAEBM: default 50).
        num_langevin_steps: Langevin steps per level (DRL), per transition (DAEBM) or per
            loss (the baselines); default 30 (DAEBM: 40).
        b2: DRL's step constant ``b^2``.
        loss_weight: DRL's loss weights.
        jump_every: DRL's tether jumps (0: the paper's sampler).
        metropolis: DRL's Metropolis correction (see
            :class:`~ebmcmc.estimators.DiffusionRecoveryLikelihood`).
        hidden: width of the :class:`~ebmcmc.nn.TimeMLP`.
        layers: its number of hidden layers.
        step_size: the baselines' Langevin step.
        sample_steps: the baselines' chain length when sampling from noise.
        energy_reg: the baselines' energy-magnitude penalty.
        buffer_size: PCD's replay buffer size.
        lr: the learning rate, default 1e-3 (DAEBM: 1e-4).
        batch_size: the training batch.
        decay_at: the step from which the learning rate is multiplied by 0.2.
        seed: seeds the network's initialisation.
        **deprecated: ``K`` (0.1's name of ``num_langevin_steps``; removed in 0.3).

    Returns:
        A :class:`ToySetup` with ``dim = 64`` (reshape samples to ``(n, 1, 8, 8)``).

    Example:
        >>> s = digits_setup("cd", hidden=16, num_langevin_steps=2)
        >>> s.generate(3, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 64])
    """
    num_langevin_steps = _renamed_k(num_langevin_steps, deprecated, "digits_setup")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "daebm":
        return _daebm_digits_setup(
            levels=50 if levels is None else levels,
            steps=40 if num_langevin_steps is None else num_langevin_steps, hidden=hidden,
            layers=layers, sample_steps=sample_steps, buffer_size=buffer_size,
            lr=1e-4 if lr is None else lr, batch_size=batch_size, decay_at=decay_at, seed=seed,
        )  # fmt: skip
    levels = 6 if levels is None else levels
    num_langevin_steps = 30 if num_langevin_steps is None else num_langevin_steps
    lr = 1e-3 if lr is None else lr
    with _seeded(seed):
        model = TimeMLP(64, hidden=hidden, num_layers=layers,
                        num_levels=levels if estimator == "drl" else 1)  # fmt: skip
    config = _train_config(lr, batch_size, decay_at)
    noise_std = 0.0
    est: Estimator
    if estimator == "drl":
        drl = DiffusionRecoveryLikelihood(
            DRLSchedule(levels),
            num_langevin_steps=num_langevin_steps,
            step_size_b2=b2,
            loss_weight=loss_weight,
            jump_every=jump_every,
            metropolis=metropolis,
        )
        noise_std = float(drl.schedule.sigma_bar[0])
        est = drl
    else:
        est = _baseline(
            estimator, step_size, num_langevin_steps, energy_reg, buffer_size, (-1.0, 1.0)
        )
    return ToySetup(estimator, model, est, config, 1.0, noise_std, step_size, sample_steps,
                    dim=64, noise_range=(-1.0, 1.0), clip=(-1.0, 1.0))  # fmt: skip


# --------------------------------------------------------------------------- DAEBM


def _daebm_config(lr: float, batch_size: int, decay_at: int | None) -> TrainConfig:
    """DAEBM's optimiser: Adam with betas (0, 0.999), no EMA (the chains and the step sizes
    belong to the trained weights), 100 warm-up steps, lr x 0.2 from ``decay_at``;
    checkpoints every 200 steps."""
    return TrainConfig(lr=lr, betas=(0.0, 0.999), warmup_steps=100, ema_decay=None,
                       batch_size=batch_size, checkpoint_every=200, decay_at=decay_at,
                       decay_factor=0.2)  # fmt: skip


def _daebm_toy_setup(*, scale: float, levels: int, steps: int, hidden: int, layers: int,
                     fourier_features: int, fourier_scale: float, sample_steps: int,
                     buffer_size: int, lr: float, batch_size: int, decay_at: int | None,
                     seed: int) -> ToySetup:  # fmt: skip
    """DAEBM on a 2-D toy (the module docstring's configuration)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    f = 6 / levels
    schedule = DAEBMSchedule(levels, 1e-2 * f, 0.3 * f)
    eps = schedule.sigma**2 / 2  # epsilon_t = sigma_t (the paper: 0.1 sigma_t)
    eps[0] = eps[1]
    est = DiffusionAssistedEBM(schedule, num_mcmc_steps=steps, buffer_size=buffer_size,
                               step_size=eps, metropolis_after=500)  # fmt: skip
    with _seeded(seed):
        model = TimeMLP(2, hidden=hidden, num_layers=layers, num_levels=levels + 1,
                        fourier_features=fourier_features, fourier_scale=fourier_scale,
                        fourier_seed=seed, zero_output=fourier_features > 0)  # fmt: skip
    config = _daebm_config(lr, batch_size, decay_at)
    return ToySetup("daebm", model, est, config, float(scale), 0.0, 0.0, sample_steps)


def _daebm_digits_setup(*, levels: int, steps: int, hidden: int, layers: int,
                        sample_steps: int, buffer_size: int, lr: float, batch_size: int,
                        decay_at: int | None, seed: int) -> ToySetup:  # fmt: skip
    """DAEBM on the 8 x 8 digits (the module docstring's configuration)."""
    f = 50 / levels
    est = DiffusionAssistedEBM(DAEBMSchedule(levels, 2e-4 * f, 2e-2 * f), num_mcmc_steps=steps,
                               buffer_size=buffer_size, step_size=0.005,
                               metropolis_after=300)  # fmt: skip
    with _seeded(seed):
        model = TimeMLP(64, hidden=hidden, num_layers=layers, num_levels=levels + 1)
    return ToySetup("daebm", model, est, _daebm_config(lr, batch_size, decay_at), 1.0, 0.0, 0.0,
                    sample_steps, dim=64, noise_range=(-1.0, 1.0), clip=(-1.0, 1.0))  # fmt: skip
