"""Cooperative diffusion recovery likelihood (CDRL; Zhu, Xie, Wu & Gao, ICLR 2024).

CDRL trains DRL's chain of recovery-likelihood EBMs together with an *initializer* ``g_phi``
that proposes, from the noisy ``x_{t+1}``, where the recovery chain at level ``t`` should start.
In the rescaled space ``y = a'_{t+1} x_t`` of DRL's recovery energy
(:class:`~ebmcmc.estimators.RecoveryEnergy`):

* proposal: ``y0 = g_phi(x_{t+1}, t+1) + sqrt(beta~_{t+1}) a'_{t+1} xi`` (``beta~`` is DDPM's
  posterior variance);
* refinement: ``K`` steps of DRL's Langevin sampler on the recovery energy from ``y0`` (no
  tether at the top level), giving ``yK``;
* EBM loss: ``mean_b w_t [E(y_pos, t) - E(yK, t)]`` with ``y_pos = a'_{t+1} x_t``;
* initializer loss: ``mean_b |sg(yK) - y0|^2`` (summed over the event);
* generation: from ``x_T ~ N(0, I)``, one proposal and ``K`` Langevin steps per level, then
  Tweedie's formula at level 0.

The defaults are the paper's CIFAR-10 constants (``docs/methods/cdrl.md`` lists each with its
source in the official code).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..diffusion import CDRLSchedule, RecoverySchedule, gather
from .base import Estimator, LossOutput
from .recovery import DiffusionRecoveryLikelihood, RecoveryEnergy

__all__ = ["CooperativeRecoveryLikelihood", "guided"]


def guided(fn, labels: Tensor | None, null_label: int | None, guidance: float = 0.0):
    """Classifier-free guidance of a network ``fn(x, t[, labels])``.

    Returns ``g(x, t) = (1 + w) fn(x, t, labels) - w fn(x, t, null)`` (one batched call on
    the doubled batch), ``fn(x, t, labels)`` when ``w = 0``, and ``fn(x, t)`` when ``labels``
    is ``None``. The same combination serves the energy and the initializer's mean. When
    ``x`` holds several copies of the batch (leading particles), the labels are repeated.

    Args:
        fn: the network.
        labels: integer class labels ``(batch,)`` or ``None``.
        null_label: the null class (``num_classes``); needed when ``guidance != 0``.
        guidance: the weight ``w``.

    Example:
        >>> import torch
        >>> fn = lambda x, t, y: x.sum(-1) * (y + 1)
        >>> g = guided(fn, torch.tensor([1, 2]), null_label=3, guidance=0.5)
        >>> g(torch.ones(2, 2), torch.zeros(2, dtype=torch.long))  # 1.5 * 2 * (y+1) - 0.5 * 2 * 4
        tensor([2., 5.])
    """
    if labels is None:
        if guidance != 0:
            raise ValueError("guidance needs labels")
        return lambda x, t: fn(x, t)
    w = float(guidance)
    if not math.isfinite(w):
        raise ValueError(f"guidance must be finite, got {guidance!r}")

    def rep(lab: Tensor, n: int) -> Tensor:
        k = n // lab.shape[0]
        if k * lab.shape[0] != n:
            raise ValueError(f"{n} inputs do not repeat the {lab.shape[0]} labels evenly")
        return lab.repeat(k) if k > 1 else lab

    if w == 0:
        return lambda x, t: fn(x, t, rep(labels, x.shape[0]))
    if null_label is None:
        raise ValueError("guidance != 0 needs the null label")

    def g(x: Tensor, t: Tensor) -> Tensor:
        lab = rep(labels, x.shape[0])
        both = fn(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([lab, torch.full_like(lab, null_label)])
        )
        cond, uncond = both.chunk(2)
        return (1.0 + w) * cond - w * uncond

    return g


@contextlib.contextmanager
def _eval_mode(module, on: bool = True) -> Iterator[None]:
    """Put ``module`` in eval mode inside the block (when ``on``), restoring its mode after."""
    if not on or not isinstance(module, torch.nn.Module):
        yield
        return
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@contextlib.contextmanager
def _module_rng(module, generator, device: torch.device) -> Iterator[None]:
    """Inside the block, PyTorch's global generator (which dropout layers draw from) on
    ``device`` is seeded from ``generator`` and restored afterwards, so a network in training
    mode draws its dropout masks from the estimator's generator: runs are reproducible from
    the trainer's seed and resume exactly. Nothing happens for modules in eval mode or without
    a generator."""
    if generator is None or not getattr(module, "training", False):
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _networks(model) -> tuple:
    energy = getattr(model, "energy", None)
    init = getattr(model, "initializer", None)
    if energy is None or init is None or not callable(energy) or not callable(init):
        raise TypeError(
            "model must hold an energy and an initializer (attributes `energy` and "
            "`initializer`, e.g. ebmcmc.nn.CooperativeModel(energy, initializer))"
        )
    return energy, init


class CooperativeRecoveryLikelihood(Estimator):
    """The CDRL estimator: DRL's recovery likelihood with a cooperatively trained initializer.

    ``loss(model, batch, generator, labels=None)`` takes a model with an ``energy`` and an
    ``initializer`` (:class:`~ebmcmc.nn.CooperativeModel`) and returns **one** loss whose
    backward trains both: the energy receives gradients only from the recovery-likelihood
    contrast and the initializer only from its regression onto the refined samples (the
    sampler's output is detached, and so is the proposal the sampler starts from), so the two
    networks may live in separate parameter groups with their own learning rates
    (:class:`~ebmcmc.train.TrainConfig`'s ``param_groups``).

    Indexing: as in :class:`DiffusionRecoveryLikelihood`, ``t = 0..T-1`` is the pair's lower
    level; the energy is called at ``t`` and the initializer at ``t + 1`` (the paper's
    ``t - 1`` and ``t``).

    Args:
        schedule: a :class:`~ebmcmc.diffusion.RecoverySchedule` (default
            ``CDRLSchedule(6)``, the paper's log-SNR schedule).
        num_langevin_steps: ``K`` (15 in the paper).
        step_size_b2: ``b^2`` of the Langevin step sizes ``s_t^2 = b^2 sigma_{t+1}^2
            sigmabar_t / sigmabar_0`` (4e-4 in the paper, for images in [-1, 1]).
        noise_scale: ``lambda`` of the Langevin noise in training (1).
        loss_weight: the EBM loss weights (``"paper"``: ``sigma_1 / sigma_{t+1}``; see
            :class:`DiffusionRecoveryLikelihood` for the others).
        variance_reduction: draw ``x_t`` and ``x_{t+1}`` from the same noise (the paper's
            default); ``False`` draws ``x_{t+1}`` from ``x_t`` by the forward step.
        proposal_noise: add ``sqrt(beta~_{t+1}) a'_{t+1} xi`` to the initializer's output.
        initializer_weight: the factor of the initializer's loss in the total.
        denoise: end generation with the Tweedie step at level 0.
        denoise_b2: the ``b^2`` of the Tweedie step's score scale (``None``: ``step_size_b2 /
            2``, which is the paper's code: 2e-4 against the Langevin 4e-4, so its denoising
            score is twice the one the chain samples; pass ``step_size_b2`` for the model's
            own score).
        num_classes: train a class-conditional model (label ``num_classes`` is the null class
            of classifier-free guidance); ``None``: unconditional.
        label_dropout: the probability with which a training label is replaced by the null
            class (0.1 in the paper).
        sampler_eval_mode: run the refinement chain and the negative energies with the energy
            network in eval mode (the paper's code: spectral-norm power iterations then run once
            per training step, on the positive energies); ``False`` keeps the caller's mode.
        metropolis: MALA instead of unadjusted Langevin in the inner
            :class:`DiffusionRecoveryLikelihood` sampler (not in the paper; off).
        jump_every: the inner sampler's tether jumps (not in the paper; 0, off).

    Attributes:
        recovery: the inner :class:`DiffusionRecoveryLikelihood`, whose recovery energy and
            Langevin kernel do the refinement.
        proposal_std: ``sqrt(beta~_{t+1}) a'_{t+1}``, float64, shape ``(T,)``.

    Example:
        >>> import torch
        >>> from ebmcmc.nn import CDRLEnergyMLP, CDRLInitializerMLP, CooperativeModel
        >>> model = CooperativeModel(CDRLEnergyMLP(2, hidden=16), CDRLInitializerMLP(2, hidden=16))
        >>> est = CooperativeRecoveryLikelihood(num_langevin_steps=3, step_size_b2=4e-3)
        >>> out = est.loss(model, torch.randn(16, 2), torch.Generator().manual_seed(0))
        >>> out.loss.backward()
        >>> out.negatives.shape, sorted(out.stats)[:3]
        (torch.Size([16, 2]), ['e_neg', 'e_pos', 'loss_ebm'])
        >>> est.generate(model, (5, 2), torch.Generator().manual_seed(1), clip=None).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        schedule: RecoverySchedule | None = None,
        num_langevin_steps: int = 15,
        step_size_b2: float = 4e-4,
        noise_scale: float = 1.0,
        loss_weight: str | Tensor = "paper",
        variance_reduction: bool = True,
        proposal_noise: bool = True,
        initializer_weight: float = 1.0,
        denoise: bool = True,
        denoise_b2: float | None = None,
        num_classes: int | None = None,
        label_dropout: float = 0.1,
        sampler_eval_mode: bool = True,
        metropolis: bool = False,
        jump_every: int = 0,
    ):
        schedule = CDRLSchedule(6) if schedule is None else schedule
        self.recovery = DiffusionRecoveryLikelihood(
            schedule,
            num_langevin_steps=num_langevin_steps,
            step_size_b2=step_size_b2,
            noise_scale=noise_scale,
            loss_weight=loss_weight,
            metropolis=metropolis,
            jump_every=jump_every,
        )
        if not (math.isfinite(initializer_weight) and initializer_weight >= 0):
            raise ValueError(f"initializer_weight must be >= 0, got {initializer_weight!r}")
        if denoise_b2 is None:
            denoise_b2 = float(step_size_b2) / 2
        if not (math.isfinite(denoise_b2) and denoise_b2 > 0):
            raise ValueError(f"denoise_b2 must be > 0, got {denoise_b2!r}")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}")
        if not 0.0 <= label_dropout <= 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1], got {label_dropout!r}")
        self.variance_reduction = bool(variance_reduction)
        self.proposal_noise = bool(proposal_noise)
        self.initializer_weight = float(initializer_weight)
        self.denoise = bool(denoise)
        self.denoise_b2 = float(denoise_b2)
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self.sampler_eval_mode = bool(sampler_eval_mode)
        s = schedule
        prev = torch.cat([torch.zeros(1, dtype=s.sigma_bar.dtype), s.sigma_bar[:-1]])
        #: DDPM's posterior variance beta~_k, k = 0..T (beta~_0 = 0)
        self.posterior_variance = prev**2 / s.sigma_bar**2 * s.sigma**2
        self.proposal_std = self.posterior_variance[1:].sqrt() * s.signal_prime[1:]

    # ------------------------------------------------------------------ views of the inner DRL
    @property
    def schedule(self) -> RecoverySchedule:
        """The noise schedule."""
        return self.recovery.schedule

    @property
    def num_langevin_steps(self) -> int:
        """``K``, Langevin steps per level."""
        return self.recovery.num_langevin_steps

    @property
    def step_sizes(self) -> Tensor:
        """The Langevin step scales ``s_t``, float64, shape ``(T,)``."""
        return self.recovery.step_sizes

    @property
    def loss_weight(self) -> Tensor:
        """The EBM loss weights ``w_t``, float64, shape ``(T,)``."""
        return self.recovery.loss_weight

    @property
    def null_label(self) -> int | None:
        """The null class of classifier-free guidance (``num_classes``), or ``None``."""
        return self.num_classes

    def _check_labels(self, labels: Tensor | None, n: int, guidance: float = 0.0):
        if labels is None:
            if guidance != 0:
                raise ValueError("guidance needs labels")
            return None
        if self.num_classes is None:
            raise ValueError("labels given but the estimator is unconditional (num_classes=None)")
        if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.shape != (n,):
            raise ValueError(f"labels must be an integer tensor of shape ({n},)")
        return labels.long()

    def recovery_energy(self, energy, t: Tensor, x_next: Tensor) -> RecoveryEnergy:
        """The recovery energy of ``energy(y, t)`` at levels ``t`` given ``x_{t+1}``."""
        return self.recovery.recovery_energy(energy, t, x_next)

    def marginal_energy(self, model, level: int = 0):
        """Level ``level``'s marginal energy ``E(a'_{t+1} x, t) / s_t^2`` of the model's energy
        network (see :meth:`DiffusionRecoveryLikelihood.marginal_energy`).

        Example:
            >>> import torch
            >>> est = CooperativeRecoveryLikelihood()
            >>> f = est.marginal_energy(lambda y, t: (y**2).sum(-1), level=0)
            >>> f(torch.zeros(2, 3))
            tensor([0., 0.])
        """
        energy = getattr(model, "energy", model)
        return self.recovery.marginal_energy(energy, level)

    # ------------------------------------------------------------------ the three pieces
    def propose(
        self,
        model,
        t: Tensor,
        x_next: Tensor,
        generator=None,
        labels: Tensor | None = None,
        guidance: float = 0.0,
    ) -> Tensor:
        """The initializer's noisy proposal ``y0 = g(x_{t+1}, t+1) + proposal_std[t] xi``.

        An initializer in training mode draws its dropout masks from a seed taken from
        ``generator`` (PyTorch's global generator is seeded for the call and restored), so
        training is reproducible and resumes exactly.

        Args:
            model: a model with an ``initializer``.
            t: the lower levels ``(batch,)``.
            x_next: ``x_{t+1}``, ``(batch, *event)``.
            generator: random generator (the proposal noise, the initializer's dropout).
            labels: class labels ``(batch,)`` of a class-conditional model, or ``None``.
            guidance: the guidance weight ``w`` (the initializer's mean becomes
                ``(1 + w) g(., y) - w g(., null)``).

        Returns:
            ``y0`` of ``x_next``'s shape (with the initializer's graph; detach it to start a
            chain).
        """
        _, init = _networks(model)
        g = guided(init, labels, self.null_label, guidance)
        with _module_rng(init, generator, x_next.device):
            mean = g(x_next, t + 1)
        if not self.proposal_noise:
            return mean
        xi = torch.randn(
            x_next.shape, generator=generator, dtype=x_next.dtype, device=x_next.device
        )
        return mean + gather(self.proposal_std, t, x_next) * xi

    def refine(
        self,
        model,
        t: Tensor,
        x_next: Tensor,
        start: Tensor,
        generator=None,
        labels: Tensor | None = None,
        guidance: float = 0.0,
        noise_scale: float | None = None,
    ) -> Tensor:
        """``K`` steps of the inner DRL sampler on the recovery energy of the (guided) energy
        network, from ``start``; returns ``yK``, detached (``(batch, *event)``)."""
        energy, _ = _networks(model)
        e = guided(energy, labels, self.null_label, guidance)
        with _eval_mode(energy, self.sampler_eval_mode):
            return self.recovery.sample_conditional(
                e, t, x_next, generator, noise_scale=noise_scale, start=start
            )

    def denoise_step(
        self, model, x: Tensor, labels: Tensor | None = None, guidance: float = 0.0
    ) -> Tensor:
        """Tweedie's formula at level 0: ``(x + sigmabar_0^2 score(x)) / signal_bar_0`` with
        ``score(x) = -grad_x E(a'_1 x, 0) / s^2`` and ``s^2 = denoise_b2 sigma_1^2`` (the
        step-size formula at the lowest level, where ``sigmabar_0 / sigmabar_0 = 1``).

        Example:
            >>> import torch
            >>> est = CooperativeRecoveryLikelihood()
            >>> from ebmcmc.nn import CooperativeModel, CDRLEnergyMLP, CDRLInitializerMLP
            >>> m = CooperativeModel(CDRLEnergyMLP(2, hidden=8), CDRLInitializerMLP(2, hidden=8))
            >>> est.denoise_step(m, torch.zeros(3, 2)).shape
            torch.Size([3, 2])
        """
        energy, _ = _networks(model)
        e = guided(energy, labels, self.null_label, guidance)
        s = self.schedule
        a1 = float(s.signal_prime[1])
        s2 = float(s.step_size(self.denoise_b2)[0]) ** 2
        t0 = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(e(a1 * xg, t0).sum(), xg)
        score = -grad / s2
        return (x.detach() + float(s.sigma_bar[0]) ** 2 * score) / float(s.signal_bar[0])

    # ------------------------------------------------------------------ training
    def loss(
        self, model, batch: Tensor, generator=None, labels: Tensor | None = None
    ) -> LossOutput:
        """One CDRL loss on clean data ``(batch, *event)`` (with ``labels`` ``(batch,)`` for a
        class-conditional model). ``loss = loss_ebm + initializer_weight * loss_init``."""
        if not isinstance(batch, Tensor) or not batch.is_floating_point() or batch.ndim < 2:
            raise TypeError("batch must be a floating-point tensor of shape (batch, *event)")
        energy, _ = _networks(model)
        n = batch.shape[0]
        labels = self._check_labels(labels, n)
        if self.num_classes is not None:
            if labels is None:
                raise ValueError("a class-conditional estimator (num_classes set) needs labels")
            labels = labels.to(batch.device)
            drop = torch.rand(n, generator=generator, device=batch.device) < self.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        sched = self.schedule
        t = sched.sample_levels(n, generator=generator, device=batch.device)
        x_t, x_next = sched.training_pair(
            batch, t, generator=generator, shared_noise=self.variance_reduction
        )
        a_prime = gather(sched.signal_prime, t + 1, batch)
        y_pos = a_prime * x_t
        e = guided(energy, labels, self.null_label)
        e_pos = e(y_pos, t)
        y0 = self.propose(model, t, x_next, generator, labels)
        y_neg = self.refine(model, t, x_next, y0.detach(), generator, labels)
        with _eval_mode(energy, self.sampler_eval_mode):
            e_neg = e(y_neg, t)
        w = gather(self.loss_weight, t, e_pos).reshape(t.shape)
        loss_ebm = (w * (e_pos - e_neg)).mean()
        loss_init = ((y_neg - y0) ** 2).flatten(1).sum(1).mean()
        loss = loss_ebm + self.initializer_weight * loss_init
        if not torch.isfinite(loss):
            raise FloatingPointError("CDRL loss is not finite (energies or proposals diverged)")
        with torch.no_grad():
            stats = {
                "e_pos": float(e_pos.mean()),
                "e_neg": float(e_neg.mean()),
                "loss_ebm": float(loss_ebm),
                "loss_init": float(loss_init),
                "recovery_mse": float(((y_neg - y_pos) ** 2).flatten(1).sum(1).mean()),
                "proposal_mse": float(((y0 - y_pos) ** 2).flatten(1).sum(1).mean()),
            }
        return LossOutput(loss, stats, (y_neg / a_prime).detach())

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        model,
        shape,
        generator=None,
        labels: Tensor | None = None,
        guidance: float = 0.0,
        noise_scale: float = 1.0,
        clip: tuple[float, float] | None = (-1.0, 1.0),
        denoise: bool | None = None,
        device=None,
        dtype=torch.float32,
        eval_mode: bool = True,
        progress: bool = False,
        callback: Callable[[int, Tensor, Tensor], None] | None = None,
    ) -> Tensor:
        """Generation from ``x_T ~ N(0, I)``: per level ``t = T-1 .. 0``, one proposal from
        ``x_{t+1}``, ``K`` Langevin steps, ``x_t = yK / a'_{t+1}``; then the Tweedie step.

        ``T`` initializer calls and ``T * K`` energy gradients (twice as many network
        evaluations with guidance).

        Args:
            model: a model with an ``energy`` and an ``initializer``.
            shape: ``(num, *event)``.
            generator: random generator.
            labels: class labels ``(num,)`` of a class-conditional model (``None``: the null
                class, i.e. unconditional samples).
            guidance: classifier-free guidance weight ``w`` (applied to the initializer, the
                Langevin energy and the Tweedie step).
            noise_scale: ``lambda`` of the Langevin noise (1 in the paper's generation).
            clip: clip the final samples to this range (``None``: no clipping).
            denoise: the final Tweedie step (``None``: the estimator's ``denoise``).
            eval_mode: put both networks in eval mode (dropout off, no spectral-norm updates)
                while generating, restoring their modes afterwards.
            progress: a progress bar over levels.
            callback: called as ``callback(t, proposal, refined)`` per level (in ``x`` units,
                before the Tweedie step), e.g. to record the initializer's proposals.

        Returns:
            Samples of ``shape``.
        """
        from tqdm.auto import tqdm

        energy, init = _networks(model)
        shape = tuple(shape)
        labels = self._check_labels(labels, shape[0], guidance)
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        if labels is not None:
            labels = labels.to(x.device)
        s = self.schedule
        with _eval_mode(energy, eval_mode), _eval_mode(init, eval_mode):
            for level in tqdm(range(s.num_levels - 1, -1, -1), disable=not progress,
                              desc="CDRL generate"):  # fmt: skip
                t = torch.full((shape[0],), level, dtype=torch.long, device=x.device)
                a_prime = gather(s.signal_prime, t + 1, x)
                y0 = self.propose(model, t, x, generator, labels, guidance)
                with torch.enable_grad():
                    y = self.refine(model, t, x, y0, generator, labels, guidance, noise_scale)
                if callback is not None:
                    callback(level, y0 / a_prime, y / a_prime)
                x = y / a_prime
            if self.denoise if denoise is None else denoise:
                x = self.denoise_step(model, x, labels, guidance)
        return x.clamp(*clip) if clip is not None else x
