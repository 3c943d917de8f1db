"""The persistently trained, diffusion-assisted EBM (DAEBM; Zhang, Ou & Tan 2023).

One network ``E(x, t)`` models the joint ``p(x, t) ∝ exp(-E(x, t))`` over the levels
``t = 0..T`` of a diffusion (level 0 is the data). Training is persistent contrastive
divergence on pairs ``(x, t)``:

* positives: each example gets ``t ~ U{0..T}`` and is diffused to it,
  ``x_t = signal_bar[t] x + sigma_bar[t] eps`` (``x_0`` is the clean example);
* negatives: chains drawn from a replay buffer of ``(x, t)`` pairs advance by one
  Metropolis-within-Gibbs transition (:class:`~ebmcmc.kernels.LevelGibbs`: ``K`` Langevin
  steps at the chain's level, then an exact draw of the level from ``softmax_t(-E(x, t))``)
  and are written back;
* loss: ``mean E(x_pos, t_pos) - mean E(x_neg, t_neg)``.

The Langevin steps are unadjusted for the first ``metropolis_after`` iterations and
Metropolis-adjusted (MALA, with ebmcmc's exact acceptance ratio) afterwards; each level's step
size is then adapted online (:class:`~ebmcmc.adaptation.LevelStepAdaptation`). The docs'
methods page on DAEBM lists every constant with its source in the official code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..adaptation.level_steps import LEVEL_STEP_RULES, LevelStepAdaptation
from ..diffusion import DAEBMSchedule
from ..kernels import MALA, Langevin, LevelGibbs
from ..kernels.level_gibbs import LevelInfo, LevelState
from .base import Estimator, LossOutput

__all__ = ["DiffusionAssistedEBM", "DAEBMSamples", "GENERATION_RULES"]

#: the rules by which :meth:`DiffusionAssistedEBM.generate` collects samples
GENERATION_RULES = ("every", "visits")


@dataclass
class DAEBMSamples:
    """What :meth:`DiffusionAssistedEBM.generate` returns.

    Attributes:
        samples: the collected images ``(n, *event)``, in the order they were collected
            (``n`` is the number asked for, or fewer when ``complete`` is False).
        transitions: ``(n,)``, how many transitions each sample's chain had run since it
            started (multiply by ``num_mcmc_steps`` for the Langevin steps).
        level_visits: ``(T + 1,)``, how many times a chain sat at each level after a
            transition, over the whole run.
        num_transitions: the transitions run.
        complete: whether all the samples asked for were collected.

    Example:
        >>> import torch
        >>> r = DAEBMSamples(torch.zeros(2, 3), torch.tensor([4, 7]), torch.tensor([5, 6]), 7, True)
        >>> r.samples.shape, r.complete
        (torch.Size([2, 3]), True)
    """

    samples: Tensor
    transitions: Tensor
    level_visits: Tensor
    num_transitions: int
    complete: bool


def _check_int(v, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return v


class DiffusionAssistedEBM(Estimator):
    """The DAEBM estimator: diffused positives, a persistent buffer over ``(x, t)``, and
    Metropolis-within-Gibbs negatives.

    Args:
        schedule: a :class:`~ebmcmc.diffusion.DAEBMSchedule` (``T = 50`` for images, 6 for the
            2-D rings); the model has ``T + 1`` levels.
        num_mcmc_steps: ``K``, Langevin steps at the chain's level per transition (40).
        buffer_size: entries of the replay buffer (50,000); started from ``N(0, I)`` with the
            levels spread evenly over ``0..T`` (``0, 1, .., T`` each repeated in turn).
        reinit_prob: probability that a drawn entry restarts from noise at level ``T`` (0 in
            the paper).
        step_size: the initial step size of every level, a number or a ``(T + 1,)`` tensor,
            in ebmcmc's convention (MALA's ``step_size``, ``x' = x - eps grad E + sqrt(2 eps)
            xi``): the paper's ``epsilon^2 = 0.01`` is ``eps = 0.005``.
        metropolis_after: iterations (loss calls) of unadjusted Langevin before the
            Metropolis correction is switched on (6000: the paper's 10 epochs of 600
            iterations).
        adapt: the online step-size rule once the correction is on: ``"band"`` (the
            paper's: x 1.1 on ``epsilon`` above acceptance 0.8, / 1.2 below 0.6, every
            ``adapt_every`` iterations), ``"dual_averaging"`` (per level, towards
            ``target_accept``), or ``None`` (fixed step sizes). The default is the band rule
            every 10 iterations, chosen by measurement (``diagnostics/daebm_step_rules.py``;
            the DAEBM guide in the docs has the figures): on a fixed exact target dual
            averaging settles fastest, but while a model trains it let the steps collapse
            and the models degenerate, and the band rule's window of 100 took more than
            1,300 iterations to settle from the paper's initial steps.
        adapt_every: iterations per adaptation window (10; the paper's is 100).
        target_accept: the acceptance ``"dual_averaging"`` aims for.
        accept_band: the band of ``"band"``.

    The model is called ``model(x, t)`` with ``t`` an integer tensor ``(batch,)`` in
    ``0..T`` and returns one energy per example.

    Attributes:
        num_levels: ``T + 1``.
        buffer, buffer_levels: the replay buffer ``(buffer_size, *event)`` and its levels
            (``None`` before the first loss).
        step_sizes: the current per-level step sizes ``(T + 1,)``, float64.
        iteration: loss calls so far.

    ``state_dict()`` holds the buffer, its levels, the step sizes, the adaptation's running
    figures and the iteration, so a :class:`~ebmcmc.train.Trainer` checkpoint resumes the run
    exactly.

    Example:
        >>> import torch
        >>> from ebmcmc.diffusion import DAEBMSchedule
        >>> from ebmcmc.nn import TimeMLP
        >>> est = DiffusionAssistedEBM(DAEBMSchedule(6, 1e-2, 0.3), num_mcmc_steps=3,
        ...                            buffer_size=100)
        >>> model = TimeMLP(2, hidden=16, num_levels=est.num_levels)
        >>> out = est.loss(model, torch.randn(8, 2), torch.Generator().manual_seed(0))
        >>> out.loss.backward()
        >>> est.buffer.shape, est.buffer_levels.shape
        (torch.Size([100, 2]), torch.Size([100]))
    """

    def __init__(
        self,
        schedule: DAEBMSchedule,
        num_mcmc_steps: int = 40,
        buffer_size: int = 50000,
        reinit_prob: float = 0.0,
        step_size: float | Tensor = 0.005,
        metropolis_after: int = 6000,
        adapt: str | None = "band",
        adapt_every: int = 10,
        target_accept: float = 0.7,
        accept_band: tuple[float, float] = (0.6, 0.8),
    ):
        if not isinstance(schedule, DAEBMSchedule):
            raise TypeError("schedule must be a DAEBMSchedule (e.g. DAEBMSchedule(50))")
        self.schedule = schedule
        self.num_levels = schedule.num_levels + 1
        self.num_mcmc_steps = _check_int(num_mcmc_steps, "num_mcmc_steps", 1)
        self.buffer_size = _check_int(buffer_size, "buffer_size", 1)
        if not 0 <= reinit_prob <= 1:
            raise ValueError(f"reinit_prob must lie in [0, 1], got {reinit_prob!r}")
        self.reinit_prob = float(reinit_prob)
        self.metropolis_after = _check_int(metropolis_after, "metropolis_after", 0)
        if adapt is not None and adapt not in LEVEL_STEP_RULES:
            raise ValueError(f"adapt must be one of {LEVEL_STEP_RULES} or None, got {adapt!r}")
        self.adapt = adapt
        steps = torch.as_tensor(step_size, dtype=torch.float64).detach().cpu()
        steps = steps.expand(self.num_levels).clone() if steps.ndim == 0 else steps.clone()
        if steps.shape != (self.num_levels,):
            raise ValueError(
                f"step_size must be a number or {self.num_levels} numbers (one per level), "
                f"got shape {tuple(steps.shape)}"
            )
        if not bool(torch.isfinite(steps).all()) or bool((steps <= 0).any()):
            raise ValueError(f"step_size must be finite and > 0, got {step_size!r}")
        self._adaptation = LevelStepAdaptation(
            steps, rule=adapt or "band", every=adapt_every, band=accept_band,
            target_accept=target_accept,
        )  # fmt: skip
        self.buffer: Tensor | None = None
        self.buffer_levels: Tensor | None = None
        self.iteration = 0

    # ------------------------------------------------------------------ sampler
    @property
    def step_sizes(self) -> Tensor:
        """The current per-level step sizes ``(T + 1,)`` (float64; ebmcmc's convention)."""
        return self._adaptation.step_sizes

    @property
    def metropolis(self) -> bool:
        """Whether the next loss uses the Metropolis correction."""
        return self.iteration >= self.metropolis_after

    def kernel(self, event_ndim: int = 1, metropolis: bool | None = None) -> LevelGibbs:
        """One transition of the chains: :class:`~ebmcmc.kernels.LevelGibbs` with
        ``num_mcmc_steps`` inner steps of MALA (unadjusted Langevin when ``metropolis`` is
        False; default: :attr:`metropolis`) at the per-level :attr:`step_sizes`.

        Example:
            >>> from ebmcmc.diffusion import DAEBMSchedule
            >>> est = DiffusionAssistedEBM(DAEBMSchedule(6), metropolis_after=0)
            >>> k = est.kernel()
            >>> type(k.kernel).__name__, k.inner_steps, k.num_levels
            ('MALA', 40, 7)
        """
        on = self.metropolis if metropolis is None else bool(metropolis)
        inner = MALA(1.0) if on else Langevin(1.0)
        return LevelGibbs(inner, num_levels=self.num_levels, step_sizes=self.step_sizes,
                          event_ndim=event_ndim, inner_steps=self.num_mcmc_steps)  # fmt: skip

    def transition(
        self,
        model,
        x: Tensor,
        level: Tensor,
        generator: torch.Generator | None = None,
        metropolis: bool | None = None,
    ) -> tuple[LevelState, LevelInfo]:
        """One transition of chains at ``(x, level)``: ``(x (n, *event), level (n,))`` ->
        the new :class:`~ebmcmc.kernels.LevelState` and its :class:`~ebmcmc.kernels.LevelInfo`.

        Example:
            >>> import torch
            >>> from ebmcmc.diffusion import DAEBMSchedule
            >>> est = DiffusionAssistedEBM(DAEBMSchedule(3), num_mcmc_steps=2)
            >>> joint = lambda x, t: 0.5 * (x**2).sum(-1) * (1 + t)
            >>> s, info = est.transition(joint, torch.zeros(5, 2), torch.tensor([0, 1, 2, 3, 3]),
            ...                          torch.Generator().manual_seed(0))
            >>> s.level.shape, info.level_moves.tolist()
            (torch.Size([5]), [1, 1, 1, 2])
        """
        kernel = self.kernel(x.ndim - 1, metropolis)
        state = kernel.init(model, x.detach(), validate=False, level=level)
        return kernel.step(model, state, generator)

    # ------------------------------------------------------------------ training
    def positives(self, batch: Tensor, generator=None) -> tuple[Tensor, Tensor]:
        """Diffuse each example to a uniform level: ``t ~ U{0..T}``,
        ``x_t = signal_bar[t] x + sigma_bar[t] eps``; returns ``(x_t, t)``.

        Example:
            >>> import torch
            >>> from ebmcmc.diffusion import DAEBMSchedule
            >>> est = DiffusionAssistedEBM(DAEBMSchedule(6))
            >>> x_t, t = est.positives(torch.ones(4, 2), torch.Generator().manual_seed(0))
            >>> x_t.shape, t.shape
            (torch.Size([4, 2]), torch.Size([4]))
        """
        t = self.schedule.sample_levels(batch.shape[0], generator=generator, device=batch.device)
        return self.schedule.q_sample(batch, t, generator=generator), t

    def _init_buffer(self, like: Tensor, generator) -> None:
        shape = (self.buffer_size,) + tuple(like.shape[1:])
        self.buffer = torch.randn(shape, generator=generator, dtype=like.dtype,
                                  device=like.device)  # fmt: skip
        L = self.num_levels
        per = self.buffer_size // L + 1
        levels = torch.arange(L, device=like.device).repeat_interleave(per)
        self.buffer_levels = levels[: self.buffer_size].clone()

    def negatives(self, model, batch: Tensor, generator=None) -> tuple[Tensor, Tensor, LevelInfo]:
        """Draw buffer entries, advance them one transition, write them back; returns
        ``(x_neg, t_neg, info)``. Adapts the step sizes (when on) but does not count the
        iteration (:meth:`loss` does).
        """
        n = batch.shape[0]
        if self.buffer is None or self.buffer_levels is None:
            self._init_buffer(batch, generator)
        assert self.buffer is not None and self.buffer_levels is not None
        if tuple(self.buffer.shape[1:]) != tuple(batch.shape[1:]):
            raise ValueError(
                f"batch event shape {tuple(batch.shape[1:])} differs from the buffer's "
                f"{tuple(self.buffer.shape[1:])}"
            )
        dev = self.buffer.device
        idx = torch.randint(self.buffer_size, (n,), generator=generator, device=dev)
        x0, t0 = self.buffer[idx], self.buffer_levels[idx]
        if self.reinit_prob > 0:
            fresh = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=dev)
            redo = torch.rand(n, generator=generator, device=dev) < self.reinit_prob
            x0 = torch.where(redo.reshape((n,) + (1,) * (x0.ndim - 1)), fresh, x0)
            t0 = torch.where(redo, torch.full_like(t0, self.num_levels - 1), t0)
        on = self.metropolis
        state, info = self.transition(model, x0, t0, generator, metropolis=on)
        x_neg, t_neg = state.position.detach(), state.level
        # an entry drawn twice keeps its last draw's chain, on every device (a plain indexed
        # write leaves the winner unspecified on GPUs, and resumes would not be exact)
        pos = torch.arange(n, device=dev)
        last = torch.full((self.buffer_size,), -1, dtype=torch.long, device=dev)
        last = last.scatter_reduce(0, idx, pos, reduce="amax")
        keep = last[idx] == pos
        self.buffer[idx[keep]] = x_neg[keep]
        self.buffer_levels[idx[keep]] = t_neg[keep]
        if on and self.adapt is not None:
            assert info.level_accept is not None and info.level_moves is not None
            moves = info.level_moves
            self._adaptation.observe(info.level_accept.nan_to_num() * moves, moves)
        return x_neg, t_neg, info

    def loss(self, model, batch: Tensor, generator=None) -> LossOutput:
        """One DAEBM loss on clean data ``(batch, *event)``: ``mean E(x_t, t)`` over the
        diffused positives minus ``mean E(x_neg, t_neg)`` over the advanced buffer chains.

        Raises:
            FloatingPointError: the loss is not finite or exceeds ``1e8`` in magnitude (the
                paper's "breakdown" test).
        """
        if not isinstance(batch, Tensor) or not batch.is_floating_point() or batch.ndim < 1:
            raise TypeError("batch must be a floating-point tensor of shape (batch, *event)")
        on = self.metropolis
        x_pos, t_pos = self.positives(batch, generator)
        x_neg, t_neg, info = self.negatives(model, batch, generator)
        self.iteration += 1
        e_pos = model(x_pos, t_pos)
        e_neg = model(x_neg, t_neg)
        loss = e_pos.mean() - e_neg.mean()
        if not torch.isfinite(loss) or float(loss.detach().abs()) > 1e8:
            raise FloatingPointError(
                f"DAEBM loss is {float(loss.detach()):.4g} (breakdown: energies diverged)"
            )
        steps = self.step_sizes
        stats = {
            "e_pos": float(e_pos.detach().mean()),
            "e_neg": float(e_neg.detach().mean()),
            "accept": float(info.accept_prob.mean()),
            "metropolis": float(on),
            "neg_level0": float((t_neg == 0).double().mean()),
            "neg_level_mean": float(t_neg.double().mean()),
            "step_size_0": float(steps[0]),
            "step_size_T": float(steps[-1]),
        }
        return LossOutput(loss, stats, x_neg)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        out: dict = {"iteration": self.iteration, "adaptation": self._adaptation.state_dict()}
        if self.buffer is not None and self.buffer_levels is not None:
            out["buffer"] = self.buffer.clone()
            out["buffer_levels"] = self.buffer_levels.clone()
        return out

    def load_state_dict(self, state: dict) -> None:
        buf, lv = state.get("buffer"), state.get("buffer_levels")
        if (buf is None) != (lv is None):
            raise ValueError("the state must hold both the buffer and its levels, or neither")
        if (
            buf is not None
            and lv is not None
            and (buf.shape[0] != self.buffer_size or lv.shape != (buf.shape[0],))
        ):
            raise ValueError(
                f"buffer has {buf.shape[0]} entries ({tuple(lv.shape)} levels), expected "
                f"{self.buffer_size}"
            )
        self._adaptation.load_state_dict(state["adaptation"])
        self.iteration = int(state["iteration"])
        self.buffer = None if buf is None else buf.clone()
        self.buffer_levels = None if lv is None else lv.clone().to(torch.long)

    # ------------------------------------------------------------------ after training
    def level_energy(self, model, level: int = 0) -> Callable[[Tensor], Tensor]:
        """The conditional energy ``x -> E(x, level)`` ``((n, *event) -> (n,))``: level 0 is
        the model of the data.

        Example:
            >>> import torch
            >>> from ebmcmc.diffusion import DAEBMSchedule
            >>> est = DiffusionAssistedEBM(DAEBMSchedule(3))
            >>> est.level_energy(lambda x, t: x.sum(-1) + t, 2)(torch.zeros(2, 3))
            tensor([2., 2.])
        """
        T = self.num_levels - 1
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= T:
            raise ValueError(f"level must be an int in [0, {T}], got {level!r}")

        def energy(x: Tensor) -> Tensor:
            t = torch.full(x.shape[:1], level, dtype=torch.long, device=x.device)
            return model(x, t)

        return energy

    def level_kernel(self, level: int = 0) -> MALA:
        """MALA at one level's (trained) step size: with :meth:`level_energy`, the chain of a
        long-run check at fixed ``t`` (real images at ``t = 0`` through many MALA steps,
        judged by :func:`ebmcmc.studies.stability`).

        Example:
            >>> from ebmcmc.diffusion import DAEBMSchedule
            >>> DiffusionAssistedEBM(DAEBMSchedule(3)).level_kernel(0).step_size
            0.005
        """
        self.level_energy(lambda x, t: x, level)  # checks the level
        return MALA(step_size=float(self.step_sizes[level]))

    @torch.no_grad()
    def generate(
        self,
        model,
        num_samples: int,
        event_shape,
        generator=None,
        *,
        rule: str = "every",
        visits: int = 50,
        num_chains: int | None = None,
        renew: bool = False,
        burn_in: int = 0,
        max_transitions: int = 10000,
        dtype: torch.dtype = torch.float32,
        device=None,
        progress: bool = False,
    ) -> DAEBMSamples:
        """Generate by running transitions (MALA at the trained step sizes, then the level
        draw) from ``N(0, I)`` at ``t = T``, collecting images at level 0.

        Rules:

        * ``"every"``: a chain's image is collected after every transition that leaves it at
          ``t = 0`` (once its ``burn_in`` is over). Once the chains are stationary, the chains
          at level 0 after any one transition are exact draws of ``p(x | t = 0)``, so the
          collection is too (consecutive images of one chain are correlated; use more chains
          for more independent images).
        * ``"visits"`` (the paper's post-training sampler): a chain's image is collected when
          it has visited ``t = 0`` (ended a transition there) ``visits`` times; each chain
          gives one image unless ``renew``, which restarts a collected chain from noise at
          ``t = T``. The ``visits``-th visit is a stopping time, so its image is not an exact
          draw of ``p(x | t = 0)`` even from stationary chains (it falls on the chain's
          arrival at level 0 more often than a fixed time would).

        Images are collected in the order of the transitions (chains in index order within
        one), and the run stops when ``num_samples`` are collected.

        Args:
            model: the trained ``model(x, t)``.
            num_samples: images to collect.
            event_shape: the shape of one image (e.g. ``(1, 28, 28)`` or ``(2,)``).
            generator: random generator.
            rule: ``"every"`` or ``"visits"``.
            visits: the visit count of ``"visits"`` (50 in the paper).
            num_chains: parallel chains (default: 100 for ``"every"``, ``num_samples`` for
                ``"visits"`` without ``renew``).
            renew: restart collected chains (``"visits"`` only; ``"every"`` chains run on).
            burn_in: transitions a chain runs (from its start or restart) before its visits
                count.
            max_transitions: stop after this many transitions even if fewer images were
                collected (``complete`` is then False).
            dtype: of the chains.
            device: of the chains.
            progress: a progress bar over transitions.

        Returns:
            A :class:`DAEBMSamples`.

        Example:
            >>> import torch
            >>> from ebmcmc.diffusion import DAEBMSchedule
            >>> est = DiffusionAssistedEBM(DAEBMSchedule(3), num_mcmc_steps=2)
            >>> joint = lambda x, t: 0.5 * (x**2).sum(-1) + 0.5 * t  # p(t) ∝ exp(-t / 2)
            >>> out = est.generate(joint, 10, (2,), torch.Generator().manual_seed(0))
            >>> out.samples.shape, out.complete
            (torch.Size([10, 2]), True)
        """
        from tqdm.auto import tqdm

        if rule not in GENERATION_RULES:
            raise ValueError(f"rule must be one of {GENERATION_RULES}, got {rule!r}")
        _check_int(num_samples, "num_samples", 1)
        _check_int(visits, "visits", 1)
        _check_int(max_transitions, "max_transitions", 1)
        _check_int(burn_in, "burn_in", 0)
        if num_chains is None:
            num_chains = num_samples if rule == "visits" and not renew else 100
        _check_int(num_chains, "num_chains", 1)
        shape = (num_chains,) + tuple(int(s) for s in event_shape)
        T = self.num_levels - 1
        kernel = self.kernel(len(shape) - 1, metropolis=True)

        def noise(n: int) -> Tensor:
            return torch.randn((n,) + shape[1:], generator=generator, dtype=dtype, device=device)

        x = noise(num_chains)
        state = kernel.init(model, x, validate=False,
                            level=torch.full((num_chains,), T, device=x.device))  # fmt: skip
        age = torch.zeros(num_chains, dtype=torch.long, device=x.device)
        count0 = torch.zeros_like(age)
        done = torch.zeros(num_chains, dtype=torch.bool, device=x.device)
        level_visits = torch.zeros(self.num_levels, dtype=torch.long, device=x.device)
        got: list[Tensor] = []
        ages: list[Tensor] = []
        n_got, n_trans = 0, 0
        bar = tqdm(total=num_samples, disable=not progress, desc="DAEBM generate")
        while n_got < num_samples and n_trans < max_transitions:
            state, info = kernel.step(model, state, generator)
            n_trans += 1
            age += 1
            assert info.level_counts is not None
            level_visits += info.level_counts
            at0 = (state.level == 0) & (age > burn_in)
            if rule == "every":
                take = at0
            else:
                count0 += at0.long()
                take = (count0 == visits) & ~done
                done |= take
            if bool(take.any()):
                got.append(state.position[take].detach().clone())
                ages.append(age[take].clone())
                k = int(take.sum())
                bar.update(min(k, num_samples - n_got))
                n_got += k
                if rule == "visits" and renew:
                    fresh = noise(k)
                    x = state.position.clone()
                    x[take] = fresh
                    lv = state.level.clone()
                    lv[take] = T
                    state = kernel.init(model, x, validate=False, level=lv)
                    age[take], count0[take], done[take] = 0, 0, False
            if rule == "visits" and not renew and bool(done.all()):
                break
        bar.close()
        event = shape[1:]
        samples = torch.cat(got)[:num_samples] if got else torch.zeros((0,) + event, dtype=dtype)
        trans = torch.cat(ages)[:num_samples] if ages else torch.zeros(0, dtype=torch.long)
        return DAEBMSamples(samples, trans, level_visits, n_trans, n_got >= num_samples)
