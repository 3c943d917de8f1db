"""Diffusion recovery likelihood (DRL; Gao, Song, Poole, Wu & Kingma, ICLR 2021).

The EBM ``E_theta(y, t)`` is trained on pairs of adjacent noise levels: the data ``x_t`` is
recovered from its noisier version ``x_{t+1}`` by sampling the conditional (recovery) energy

    E_cond(y | x_{t+1}) = E_theta(y, t) / s_t^2 + r_{t+1} |y - x_{t+1}|^2 / (2 sigma_{t+1}^2)

in ``y = a'_{t+1} x_t`` with K steps of unadjusted Langevin from ``y = x_{t+1}`` (step
``eps = s_t^2 / 2``, noise ``lambda * s_t``). The loss is
``mean_b w_t [E_theta(y_pos, t) - E_theta(y_neg, t)]`` with ``w_t = sigma_1 / sigma_{t+1}``.
The defaults are the paper's constants for images scaled to [-1, 1]; the docs' methods page
on DRL lists each one with its source.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._deprecation import renamed_kwargs, warn_deprecated
from ..diffusion import RecoverySchedule, gather
from ..kernels import MALA, ChainMask, Cycle, IndependenceMetropolis, Kernel, Langevin
from .base import Estimator, LossOutput

__all__ = ["RecoveryEnergy", "DiffusionRecoveryLikelihood"]


class RecoveryEnergy(torch.nn.Module):
    """The recovery (conditional) energy of DRL for one noisy input per chain.

    ``E_cond(y) = E_theta(y, t) / s_t^2 + r_{t+1} |y - x_{t+1}|^2 / (2 sigma_{t+1}^2)``.

    Shapes: ``y`` and ``x_next`` ``(batch, *event)``; ``t`` integer ``(batch,)``; the output
    ``(batch,)``. Any extra leading dimensions of ``y`` (e.g. AIS particles) broadcast.

    Example:
        >>> import torch
        >>> from ebmcmc.diffusion import DRLSchedule
        >>> model = lambda y, t: 0.5 * (y**2).sum(-1)
        >>> e = RecoveryEnergy(model, DRLSchedule(6), torch.tensor([0, 5]), torch.zeros(2, 2))
        >>> e(torch.zeros(2, 2))
        tensor([0., 0.])
    """

    def __init__(
        self,
        model,
        schedule: RecoverySchedule,
        t: Tensor,
        x_next: Tensor,
        step_size: Tensor | None = None,
        b2: float = 2e-4,
    ):
        super().__init__()
        self.model, self.schedule, self.t, self.x_next = model, schedule, t, x_next
        s = schedule.step_size(b2) if step_size is None else step_size
        self.s2 = gather(s, t, x_next).reshape(t.shape) ** 2
        self.coef = (
            gather(schedule.tether, t + 1, x_next)
            / (2 * gather(schedule.sigma, t + 1, x_next) ** 2)
        ).reshape(t.shape)

    def forward(self, y: Tensor) -> Tensor:
        ne = self.x_next.ndim - self.t.ndim
        if y.shape[y.ndim - self.x_next.ndim :] != self.x_next.shape:
            raise ValueError(
                f"y of shape {tuple(y.shape)} does not end with the conditions' shape "
                f"{tuple(self.x_next.shape)}"
            )
        lead = y.shape[: y.ndim - self.x_next.ndim]
        flat = y.reshape((-1,) + tuple(self.x_next.shape))
        n = flat.shape[0]
        t_rep = self.t.expand((n,) + tuple(self.t.shape)).reshape(-1)
        e_model = self.model(flat.reshape((-1,) + tuple(self.x_next.shape[self.t.ndim :])), t_rep)
        e_model = e_model.reshape((n,) + tuple(self.t.shape))
        diff = (flat - self.x_next).flatten(start_dim=flat.ndim - ne) if ne else flat - self.x_next
        tether = (diff**2).sum(-1) if ne else diff**2
        out = e_model / self.s2 + self.coef * tether
        return out.reshape(tuple(lead) + tuple(self.t.shape))


class DiffusionRecoveryLikelihood(Estimator):
    """The DRL estimator: per-example levels, K-step conditional Langevin, weighted loss.

    Args:
        schedule: a :class:`~ebmcmc.diffusion.RecoverySchedule` (``DRLSchedule(6)`` for the
            paper).
        num_langevin_steps: ``K``, Langevin steps per level (30 in the paper).
        step_size_b2: ``b^2`` of the step sizes ``s_t`` (2e-4 in the paper, for images in
            [-1, 1]; a 2-D toy problem on a wider range may choose a larger one).
        noise_scale: ``lambda`` of the Langevin noise during training (1.0).
        loss_weight: the per-level weights ``w_t`` of the loss: ``"paper"`` (default,
            ``sigma_1 / sigma_{t+1}``), ``"likelihood"`` (``s_0^2 / s_t^2``: the gradient of
            the summed recovery log-likelihoods, whose energy is ``E / s_t^2``, normalised to
            1 at level 0; pair it with :class:`ebmcmc.nn.LevelScaled`), or a tensor of ``T``
            positive weights.
        metropolis: add a Metropolis-Hastings correction to the K steps (MALA instead of
            unadjusted Langevin, same step ``s_t^2 / 2``; needs ``noise_scale = 1``). Not the
            paper's sampler: a safeguard for small problems where a transiently steep
            network would make unadjusted Langevin diverge; rejected steps leave the chain
            where it was.
        jump_every: if > 0, after every ``jump_every``-th Langevin step, one
            :class:`~ebmcmc.kernels.IndependenceMetropolis` step proposing from the tether
            ``N(x_{t+1}, sigma_{t+1}^2)`` (tethered levels only; its acceptance ratio is
            ``exp(-(E(y') - E(y)) / s_t^2)``). Not in the paper: Langevin chains of K steps
            cannot cross the barriers between well-separated modes of the recovery energy,
            so they cannot tell the modes' relative weights; these exact jumps can. Costs
            one extra energy+gradient evaluation per jump.

    The model is called ``model(y, t)`` with ``t`` an integer tensor ``(batch,)`` and returns
    one energy per example.

    Example:
        >>> import torch
        >>> from ebmcmc.diffusion import DRLSchedule
        >>> from ebmcmc.nn import TimeMLP
        >>> est = DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=5)
        >>> model = TimeMLP(2, hidden=32, num_levels=6)
        >>> out = est.loss(model, torch.randn(16, 2), torch.Generator().manual_seed(0))
        >>> out.loss.backward()
        >>> out.negatives.shape
        torch.Size([16, 2])
    """

    @renamed_kwargs(langevin_steps="num_langevin_steps")
    def __init__(
        self,
        schedule: RecoverySchedule,
        num_langevin_steps: int = 30,
        step_size_b2: float = 2e-4,
        noise_scale: float = 1.0,
        loss_weight: str | Tensor = "paper",
        metropolis: bool = False,
        jump_every: int = 0,
    ):
        if not isinstance(schedule, RecoverySchedule):
            raise TypeError("schedule must be a RecoverySchedule (e.g. DRLSchedule(6))")
        if (
            isinstance(num_langevin_steps, bool)
            or not isinstance(num_langevin_steps, int)
            or num_langevin_steps < 1
        ):
            raise ValueError(f"num_langevin_steps must be an int >= 1, got {num_langevin_steps!r}")
        if not step_size_b2 > 0:
            raise ValueError(f"step_size_b2 must be > 0, got {step_size_b2!r}")
        if not noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale!r}")
        self.schedule = schedule
        self.num_langevin_steps = num_langevin_steps
        self.b2 = float(step_size_b2)
        self.noise_scale = float(noise_scale)
        self.step_sizes = schedule.step_size(self.b2)
        self.loss_weight = self._weights(loss_weight)
        self.metropolis = bool(metropolis)
        if isinstance(jump_every, bool) or not isinstance(jump_every, int) or jump_every < 0:
            raise ValueError(f"jump_every must be an int >= 0, got {jump_every!r}")
        self.jump_every = jump_every
        if self.metropolis and self.noise_scale != 1.0:
            raise ValueError("metropolis=True needs noise_scale=1 (MALA has no noise scale)")

    @property
    def langevin_steps(self) -> int:
        """Deprecated: :attr:`num_langevin_steps` (removed in 0.3)."""
        warn_deprecated("DiffusionRecoveryLikelihood.langevin_steps", "num_langevin_steps")
        return self.num_langevin_steps

    def _weights(self, loss_weight) -> Tensor:
        T = self.schedule.num_levels
        if isinstance(loss_weight, str):
            if loss_weight == "paper":
                return self.schedule.loss_weight
            if loss_weight == "likelihood":
                s2 = self.step_sizes**2
                return s2[0] / s2
            raise ValueError(
                f"loss_weight must be 'paper', 'likelihood' or a tensor, got {loss_weight!r}"
            )
        w = torch.as_tensor(loss_weight, dtype=torch.float64)
        if w.shape != (T,) or not bool(torch.isfinite(w).all()) or not bool((w > 0).all()):
            raise ValueError(f"loss_weight must hold {T} finite positive weights (one per level)")
        return w

    # ------------------------------------------------------------------ sampler
    def recovery_energy(self, model, t: Tensor, x_next: Tensor) -> RecoveryEnergy:
        """The conditional energy at levels ``t`` given ``x_{t+1}`` (a :class:`RecoveryEnergy`)."""
        return RecoveryEnergy(model, self.schedule, t, x_next, self.step_sizes)

    def marginal_energy(self, model, level: int = 0):
        """The model's energy of ``x_t`` alone at one level: ``E(a'_{t+1} x, t) / s_t^2``.

        The recovery energy without its tether: ``p(x_t) ∝ exp(-E(a'_{t+1} x_t, t) / s_t^2)``
        is the marginal density the model learns at level ``t`` (for ``t = 0``, the data with
        ``sigma_bar_0`` of noise). Use it to normalise on a grid, run AIS, or sample the level
        directly.

        Args:
            model: the EBM ``model(y, t)``.
            level: ``t`` in ``[0, T-1]``.

        Returns:
            A callable ``x (batch, *event) -> (batch,)``.

        Example:
            >>> import torch
            >>> from ebmcmc.diffusion import DRLSchedule
            >>> est = DiffusionRecoveryLikelihood(DRLSchedule(6))
            >>> f = est.marginal_energy(lambda y, t: 0.5 * (y**2).sum(-1), level=0)
            >>> f(torch.zeros(3, 2))
            tensor([0., 0., 0.])
        """
        T = self.schedule.num_levels
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < T:
            raise ValueError(f"level must be an int in [0, {T - 1}], got {level!r}")
        a = float(self.schedule.signal_prime[level + 1])
        s2 = float(self.step_sizes[level]) ** 2

        def energy(x: Tensor) -> Tensor:
            t = torch.full(x.shape[:1], level, dtype=torch.long, device=x.device)
            return model(a * x, t) / s2

        return energy

    def log_prob_on_grid(self, model, lim: float, *args, **kwargs):
        """Deprecated: use :func:`ebmcmc.evaluation.recovery_log_prob_on_grid` (removed in 0.3).

        Example:
            >>> import warnings
            >>> warnings.simplefilter("ignore", DeprecationWarning)
        """
        from ..evaluation.grid import recovery_log_prob_on_grid  # deprecated shim only

        warn_deprecated(
            "DiffusionRecoveryLikelihood.log_prob_on_grid",
            "ebmcmc.evaluation.recovery_log_prob_on_grid(estimator, model, ...)",
        )
        return recovery_log_prob_on_grid(self, model, lim, *args, **kwargs)

    def kernel(self, t: Tensor, like: Tensor, noise_scale: float | None = None) -> Langevin | MALA:
        """The Langevin kernel with per-example step ``eps = s_t^2 / 2`` (MALA if
        ``metropolis``; then ``noise_scale`` is ignored)."""
        s = gather(self.step_sizes, t, like).reshape(t.shape)
        if self.metropolis:
            return MALA(step_size=s**2 / 2)
        lam = self.noise_scale if noise_scale is None else noise_scale
        return Langevin(step_size=s**2 / 2, noise_scale=lam)

    def sampler(self, t: Tensor, x_next: Tensor, noise_scale: float | None = None) -> Kernel:
        """The kernel of one Langevin step of the conditional chains, built from the public
        kernels: :meth:`kernel`, and with ``jump_every`` the tether jumps
        ``Cycle(kernel, ChainMask(jump_kernel, tethered), every=(1, jump_every))``, applied to
        the tethered levels only (the top level has no tether).

        Example:
            >>> import torch
            >>> from ebmcmc.diffusion import DRLSchedule
            >>> est = DiffusionRecoveryLikelihood(DRLSchedule(6), jump_every=2)
            >>> type(est.sampler(torch.tensor([0, 5]), torch.zeros(2, 2))).__name__
            'Cycle'
        """
        kernel = self.kernel(t, x_next, noise_scale)
        jump = self.jump_kernel(t, x_next)
        if jump is None:
            return kernel
        tethered = gather(self.schedule.tether, t + 1, x_next).reshape(t.shape) > 0
        return Cycle(kernel, ChainMask(jump, tethered), every=(1, self.jump_every))

    @renamed_kwargs(num_steps="num_langevin_steps")
    def sample_conditional(
        self,
        model,
        t: Tensor,
        x_next: Tensor,
        generator=None,
        noise_scale: float | None = None,
        num_langevin_steps: int | None = None,
        start: Tensor | None = None,
    ) -> Tensor:
        """K steps of :meth:`sampler` on the recovery energy from ``y = x_{t+1}`` (or from
        ``start``, shape ``x_next.shape``: CDRL starts at its initializer's proposal); returns
        ``y``, detached.

        Example:
            >>> import torch
            >>> from ebmcmc.diffusion import DRLSchedule
            >>> est = DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=3)
            >>> y = est.sample_conditional(lambda y, t: (y**2).sum(-1), torch.tensor([0, 2]),
            ...                            torch.zeros(2, 2), torch.Generator().manual_seed(0))
            >>> y.shape
            torch.Size([2, 2])
        """
        energy = self.recovery_energy(model, t, x_next)
        kernel = self.sampler(t, x_next, noise_scale)
        if start is not None and start.shape != x_next.shape:
            raise ValueError(
                f"start has shape {tuple(start.shape)}, expected x_next's {tuple(x_next.shape)}"
            )
        y0 = x_next if start is None else start
        state = kernel.init(energy, y0.detach(), validate=False)
        steps = self.num_langevin_steps if num_langevin_steps is None else num_langevin_steps
        for _ in range(steps):
            state, _ = kernel.step(energy, state, generator)
        return state.position.detach()

    def jump_kernel(self, t: Tensor, x_next: Tensor) -> IndependenceMetropolis | None:
        """The tether-proposal kernel of ``jump_every`` (``None`` when off).

        Its moves are valid only where the tether is on; :meth:`sampler` applies it to the
        tethered chains only.
        """
        if not self.jump_every:
            return None
        sig = gather(self.schedule.sigma, t + 1, x_next).reshape(t.shape)
        return IndependenceMetropolis(center=x_next.detach(), scale=sig)

    # ------------------------------------------------------------------ training
    def loss(self, model, batch: Tensor, generator=None) -> LossOutput:
        """One DRL loss on a batch of clean data ``(batch, *event)``."""
        if not isinstance(batch, Tensor) or not batch.is_floating_point() or batch.ndim < 1:
            raise TypeError("batch must be a floating-point tensor of shape (batch, *event)")
        sched = self.schedule
        t = sched.sample_levels(batch.shape[0], generator=generator, device=batch.device)
        x_t, x_next = sched.training_pair(batch, t, generator=generator)
        a_prime = gather(sched.signal_prime, t + 1, batch)
        y_pos = a_prime * x_t
        y_neg = self.sample_conditional(model, t, x_next, generator)
        e_pos = model(y_pos, t)
        e_neg = model(y_neg, t)
        w = gather(self.loss_weight, t, e_pos).reshape(t.shape)
        loss = (w * (e_pos - e_neg)).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError("DRL loss is not finite (energies diverged)")
        stats = {
            "e_pos": float(e_pos.detach().mean()),
            "e_neg": float(e_neg.detach().mean()),
            "recovery_mse": float(((y_neg - y_pos) ** 2).flatten(1).sum(1).mean()),
        }
        return LossOutput(loss, stats, (y_neg / a_prime).detach())

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        model,
        shape,
        generator=None,
        noise_scale: float = 0.99,
        clip: tuple[float, float] | None = (-1.0, 1.0),
        device=None,
        dtype=torch.float32,
        progress: bool = False,
    ) -> Tensor:
        """Progressive sampling from ``x_T ~ N(0, I)`` down to level 0.

        For ``t = T-1 … 0``: K Langevin steps on the recovery energy at level ``t`` from
        ``y = x_{t+1}``, then ``x_t = y / a'_{t+1}``. ``T * K`` gradient evaluations.

        Args:
            shape: ``(num, *event)``.
            noise_scale: ``lambda`` at evaluation (0.99 in the paper).
            clip: clip the final samples to this range (the paper clips to [-1, 1]); ``None``
                for data that is not in [-1, 1].

        Returns:
            Samples of ``shape``.
        """
        from tqdm.auto import tqdm

        x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        T = self.schedule.num_levels
        for level in tqdm(range(T - 1, -1, -1), disable=not progress, desc="DRL generate"):
            t = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)
            y = self.sample_conditional(model, t, x, generator, noise_scale=noise_scale)
            x = y / gather(self.schedule.signal_prime, t + 1, y)
        return x.clamp(*clip) if clip is not None else x

    def long_run(
        self,
        model,
        x: Tensor,
        level: int,
        num_steps: int,
        trace_fn=None,
        generator=None,
        noise_scale: float | None = None,
        thin: int = 1,
        progress: bool = True,
    ):
        """Run level ``level``'s conditional chain far past the training length.

        Args:
            x: the conditioning inputs ``x_{level+1}`` ``(batch, *event)``; the chains start at
                ``y = x``.
            level: the level ``t`` in ``[0, T-1]``.
            num_steps: Langevin steps (recorded every ``thin``).
            trace_fn: what to record (default: the positions; pass summaries for images).

        Returns:
            An :class:`ebmcmc.Trace` of the chains (in ``y`` space).
        """
        from ..sampling import sample

        T = self.schedule.num_levels
        if not 0 <= int(level) < T:
            raise ValueError(f"level must lie in [0, {T - 1}], got {level}")
        t = torch.full((x.shape[0],), int(level), dtype=torch.long, device=x.device)
        energy = self.recovery_energy(model, t, x)
        kernel = self.kernel(t, x, noise_scale)
        return sample(
            energy,
            kernel,
            x.detach(),
            num_samples=num_steps // thin,
            thin=thin,
            generator=generator,
            trace_fn=trace_fn,
            progress=progress,
            adaptation=None,
        )
