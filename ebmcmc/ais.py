"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) bounds on log Z.

AIS anneals particles from a tractable base ``p_0 ∝ exp(-E_base)`` (with known ``log Z_0``) to
the target ``p_1 ∝ exp(-E)`` along the geometric path
``E_beta = (1 - beta) E_base + beta E``, ``0 = beta_0 < … < beta_K = 1``. Each particle
accumulates ``log w += -(E_{beta_k}(x) - E_{beta_{k-1}}(x))`` before the transition at
``beta_k``; ``mean(w)`` is an unbiased estimate of ``Z_1 / Z_0`` and ``log Z_0 +
log mean(w)`` a stochastic lower bound of ``log Z_1``. Run in reverse from exact target
samples, the same recursion gives an unbiased estimate of ``Z_0 / Z_1`` and so a stochastic
upper bound: the two together are BDMC (Grosse et al., 2015), whose gap closes as the number of
temperatures grows.

Any kernel works as the transition (``MALA``, ``HMC``, ``Langevin``, ``RandomWalk``); its
step size is adapted per temperature from the particles' mean acceptance rate. A conditional
energy (one normalizer per condition, e.g. the recovery likelihood for one noisy input per
condition) is handled by giving particles the shape ``(num_chains, *conditions, *event)``:
``log_z`` then has the shape ``conditions``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._checks import check_int
from ._deprecation import renamed_kwargs
from ._random import make_generator
from .energy import Annealed
from .kernels.base import Kernel, State

__all__ = ["ais", "bdmc", "AISResult", "BDMCResult", "beta_schedule"]


@renamed_kwargs(num_steps="num_temperatures")
def beta_schedule(
    num_temperatures: int, kind: str = "sigmoid", dtype=torch.float64, **kw
) -> Tensor:
    """Inverse temperatures ``0 = beta_0 < … < beta_K = 1`` with ``K = num_temperatures``.

    Args:
        num_temperatures: number of temperatures after ``beta_0`` (``>= 1``).
        kind: ``"linear"``; ``"geometric"`` (log-spaced from ``beta_min``, default ``1e-4``);
            ``"sigmoid"`` (Grosse et al.: ``sigmoid`` of a linear grid on
            ``[-delta, delta]``, default ``delta=4``, rescaled to ``[0, 1]``).

    Returns:
        Tensor of shape ``(num_temperatures + 1,)``.

    Example:
        >>> beta_schedule(4, "linear")
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000], dtype=torch.float64)
    """
    n = num_temperatures
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_temperatures must be an int >= 1, got {n!r}")
    if kind == "linear":
        b = torch.linspace(0, 1, n + 1, dtype=dtype)
    elif kind == "geometric":
        beta_min = kw.get("beta_min", 1e-4)
        if not 0 < beta_min < 1:
            raise ValueError(f"beta_min must lie in (0, 1), got {beta_min}")
        b = torch.cat(
            [
                torch.zeros(1, dtype=dtype),
                torch.logspace(math.log10(beta_min), 0, n, dtype=dtype),
            ]
        )
    elif kind == "sigmoid":
        delta = kw.get("delta", 4.0)
        s = torch.sigmoid(torch.linspace(-delta, delta, n + 1, dtype=dtype))
        b = (s - s[0]) / (s[-1] - s[0])
    else:
        raise ValueError(f"kind must be 'linear', 'geometric' or 'sigmoid', got {kind!r}")
    b[0], b[-1] = 0.0, 1.0
    return b


def _check_betas(betas) -> Tensor:
    b = torch.as_tensor(betas, dtype=torch.float64)
    if b.ndim != 1 or b.numel() < 2:
        raise ValueError("betas must be a 1-D sequence with at least two entries")
    if b[0] != 0 or b[-1] != 1:
        raise ValueError(f"betas must start at 0 and end at 1, got {b[0]:.3g} … {b[-1]:.3g}")
    if not (b[1:] > b[:-1]).all():
        raise ValueError("betas must be strictly increasing")
    return b


@dataclass
class AISResult:
    """What :func:`ais` returns.

    Attributes:
        log_z: the estimate of ``log Z`` (shape ``conditions``; ``()`` for one energy). For a
            forward run, a stochastic lower bound; for a reverse run, an upper bound.
        log_z_se: its standard error (delta method on the importance weights).
        log_weights: per-particle log weights, shape ``(num_chains, *conditions)``.
        samples: the particles at the end of the run, ``(num_chains, *conditions, *event)``.
        ess: effective sample size of the normalized weights ``(sum w)^2 / sum w^2``.
        num_energy_evals: energy+gradient evaluations per particle.
        step_sizes: the adapted step size at each temperature, ``(K,)``.
        accept_rates: the mean acceptance rate at each temperature, ``(K,)``.
        direction: ``"forward"`` or ``"reverse"``.

    Example:
        >>> import torch
        >>> r = AISResult(torch.tensor(0.0), torch.tensor(0.1), torch.zeros(4), torch.zeros(4, 2),
        ...               torch.tensor(4.0), 10, torch.ones(3), torch.ones(3), "forward")
        >>> float(r.log_z)
        0.0
    """

    log_z: Tensor
    log_z_se: Tensor
    log_weights: Tensor
    samples: Tensor
    ess: Tensor
    num_energy_evals: int
    step_sizes: Tensor
    accept_rates: Tensor
    direction: str


def _summarize(log_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(log mean w, se of that, ess)`` over the particle dimension 0."""
    n = log_w.shape[0]
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    w = torch.exp(log_w - log_w.max(0, keepdim=True).values)
    w_bar = w.mean(0)
    se = (
        w.std(0, unbiased=True) / (w_bar * math.sqrt(n))
        if n > 1
        else torch.full_like(w_bar, torch.inf)
    )
    ess = w.sum(0) ** 2 / (w**2).sum(0)
    return log_mean, se, ess


def _base_energy(base) -> Callable[[Tensor], Tensor]:
    energy = getattr(base, "energy", None)
    if energy is None and callable(base):
        energy = base
    if energy is None or not hasattr(base, "log_z"):
        raise TypeError(
            "base must have .energy (or be callable), .log_z and .sample(n, generator=...), "
            "e.g. ebmcmc.targets.Gaussian"
        )
    return energy


def _check_run_args(steps_per_temperature, target_accept) -> int:
    steps = check_int("steps_per_temperature", steps_per_temperature, 1)
    if target_accept is not None:
        if isinstance(target_accept, bool) or not isinstance(target_accept, int | float):
            raise TypeError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    return steps


def _check_particles(energy, x: Tensor, where: str) -> None:
    """The energy evaluates at the particles and answers in their dtype."""
    try:
        with torch.no_grad():
            e = energy(x)
    except RuntimeError as err:
        raise ValueError(
            f"the energy cannot be evaluated at the {x.dtype} particles from {where} ({err}); "
            "give particles of the energy's dtype and device"
        ) from err
    if isinstance(e, Tensor) and e.is_floating_point() and e.dtype != x.dtype:
        raise ValueError(
            f"the energy returns {e.dtype} for the {x.dtype} particles from {where}; give "
            "particles of the energy's dtype (the log weights would mix precisions)"
        )


def _run(
    energy,
    base,
    kernel: Kernel,
    x: Tensor,
    betas: Tensor,
    generator,
    steps_per_temperature: int,
    adapt: bool,
    target_accept: float | None,
    progress: bool,
    reverse: bool,
) -> AISResult:
    base_energy = _base_energy(base)
    path = betas if not reverse else betas.flip(0)
    path = path.to(dtype=x.dtype, device=x.device)
    kernel_step = getattr(kernel, "step_size", None)
    if kernel_step is None:
        raise TypeError(
            f"kernel must have a step_size (e.g. MALA, HMC, Langevin, RandomWalk), got "
            f"{type(kernel).__name__}"
        )
    target = target_accept if target_accept is not None else kernel.default_target_accept
    # the step size adapted per temperature towards the rate `target` (None: not adapted)
    step: Tensor | None = None
    if adapt and target is not None:
        step = torch.as_tensor(kernel_step, dtype=x.dtype, device=x.device)
        rate = target

    def energy_at(beta):
        return Annealed(base_energy, energy, beta)

    state: State = kernel.init(energy_at(path[0]), x)
    log_w = torch.zeros_like(state.energy)
    num_evals = 1
    steps, accepts = [], []
    it = tqdm(
        range(1, len(path)),
        disable=not progress,
        desc=f"AIS ({'reverse' if reverse else 'forward'})",
    )
    for k in it:
        e_k = energy_at(path[k])
        new = kernel.init(e_k, state.position, validate=False)
        num_evals += 1
        # log w += f_k(x) - f_{k-1}(x) with f = -E_beta
        log_w = log_w - (new.energy - state.energy)
        state = new
        acc_sum = 0.0
        for _ in range(steps_per_temperature):
            k_here = kernel.replace(step_size=step) if step is not None else kernel
            state, info = k_here.step(e_k, state, generator)
            num_evals += getattr(kernel, "evals_per_step", 1)
            a = float(info.accept_prob.mean())
            acc_sum += a
            if step is not None:
                # per-temperature Robbins–Monro on log step size towards the target rate
                step = step * math.exp(a - rate)
        accepts.append(acc_sum / steps_per_temperature)
        # a per-chain step-size tensor is recorded by its mean over the chains
        steps.append(float(torch.as_tensor(step if step is not None else kernel_step).mean()))
    if not torch.isfinite(log_w).all():
        bad = int((~torch.isfinite(log_w)).sum())
        raise FloatingPointError(
            f"{bad} AIS log weights are not finite; the energy diverged along the path "
            "(try more temperatures or a smaller step size)"
        )
    log_mean, se, ess = _summarize(log_w)
    base_log_z = torch.as_tensor(base.log_z, dtype=log_mean.dtype, device=log_mean.device)
    log_z = base_log_z + log_mean if not reverse else base_log_z - log_mean
    return AISResult(
        log_z=log_z,
        log_z_se=se,
        log_weights=log_w,
        samples=state.position,
        ess=ess,
        num_energy_evals=num_evals,
        step_sizes=torch.tensor(steps),
        accept_rates=torch.tensor(accepts),
        direction="reverse" if reverse else "forward",
    )


def _resolve_betas(betas, num_temperatures, schedule) -> Tensor:
    if betas is not None and num_temperatures is not None:
        raise ValueError("give either betas or num_temperatures, not both")
    if betas is None:
        n = num_temperatures if num_temperatures is not None else 100
        return beta_schedule(n, schedule)
    return _check_betas(betas)


@renamed_kwargs(num_steps="num_temperatures")
def ais(
    energy: Callable[[Tensor], Tensor],
    base,
    kernel: Kernel,
    num_chains: int,
    betas=None,
    num_temperatures: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = True,
    schedule: str = "sigmoid",
    steps_per_temperature: int = 1,
    adapt_step_size: bool = True,
    target_accept: float | None = None,
    init: Tensor | None = None,
) -> AISResult:
    """Estimate ``log Z`` of ``exp(-energy)`` by annealed importance sampling.

    Args:
        energy: the target energy, ``(*batch, *event) -> batch``.
        base: tractable start with ``.energy`` (or callable), exact ``.log_z`` and
            ``.sample(n, generator=...)``, e.g. ``ebmcmc.targets.Gaussian``. Its samples may
            carry condition dimensions after the particle dimension.
        kernel: transition kernel used at every temperature (its ``step_size`` is the
            starting value of the per-temperature adaptation; a per-chain tensor is scaled by
            one factor per temperature, and ``step_sizes`` records its mean).
        num_chains: number of particles.
        betas: the temperature ladder (``0 … 1``, increasing); or give ``num_temperatures``.
        num_temperatures: number of temperatures for ``schedule`` (default 100 if neither is
            given).
        generator: ``torch.Generator`` or int seed.
        progress: tqdm progress bar.
        schedule: ``"sigmoid"``, ``"linear"`` or ``"geometric"`` (see :func:`beta_schedule`).
        steps_per_temperature: kernel transitions at each temperature.
        adapt_step_size: adapt the step size per temperature towards ``target_accept``
            (default: the kernel's) by ``eps *= exp(accept - target)`` after each transition.
        target_accept: acceptance rate to aim for, in ``(0, 1)``.
        init: starting particles ``(num_chains, *conditions, *event)`` instead of
            ``base.sample(num_chains)``.

    Returns:
        An :class:`AISResult`; ``log_z`` is a stochastic lower bound of the truth.

    Raises:
        TypeError, ValueError: a bad argument (named), or an energy that cannot be evaluated
            at the particles or answers in another dtype than theirs.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA
        >>> from ebmcmc.targets import Gaussian
        >>> target = Gaussian(torch.ones(2), 0.5 * torch.eye(2))
        >>> base = Gaussian(torch.zeros(2), torch.eye(2))
        >>> r = ais(target, base, MALA(0.3), num_chains=512, num_temperatures=50, generator=0,
        ...         progress=False)
        >>> abs(float(r.log_z) - target.log_z) < 4 * float(r.log_z_se) + 0.05
        True
    """

    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be an ebmcmc Kernel, got {type(kernel).__name__}")
    num_chains = check_int("num_chains", num_chains, 1)
    steps = _check_run_args(steps_per_temperature, target_accept)
    b = _resolve_betas(betas, num_temperatures, schedule)
    if init is None:
        gen_cpu = make_generator(generator)
        x = base.sample(num_chains, generator=gen_cpu)
        gen = gen_cpu
    else:
        if not isinstance(init, Tensor) or not init.is_floating_point():
            raise TypeError("init must be a floating-point tensor (num_chains, *conditions, …)")
        x = init
        gen = make_generator(generator, x.device)
    if x.shape[0] != num_chains:
        raise ValueError(f"init has {x.shape[0]} particles, expected num_chains={num_chains}")
    _check_particles(energy, x, "init" if init is not None else "base.sample")
    return _run(
        energy,
        base,
        kernel,
        x,
        b,
        gen,
        steps,
        adapt_step_size,
        target_accept,
        progress,
        reverse=False,
    )


@dataclass
class BDMCResult:
    """Forward (lower) and reverse (upper) AIS estimates of ``log Z``.

    Attributes:
        lower: forward :class:`AISResult` (stochastic lower bound).
        upper: reverse :class:`AISResult` (stochastic upper bound).
        gap: ``upper.log_z - lower.log_z``; shrinks to 0 as the path gets finer.

    Example:
        >>> import torch
        >>> r = AISResult(torch.tensor(0.0), torch.tensor(0.1), torch.zeros(4), torch.zeros(4, 2),
        ...               torch.tensor(4.0), 10, torch.ones(3), torch.ones(3), "forward")
        >>> float(BDMCResult(r, r).gap)
        0.0
    """

    lower: AISResult
    upper: AISResult

    @property
    def gap(self) -> Tensor:
        return self.upper.log_z - self.lower.log_z


@renamed_kwargs(num_steps="num_temperatures")
def bdmc(
    energy: Callable[[Tensor], Tensor],
    base,
    kernel: Kernel,
    exact_samples: Tensor,
    betas=None,
    num_temperatures: int | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = True,
    schedule: str = "sigmoid",
    steps_per_temperature: int = 1,
    adapt_step_size: bool = True,
    target_accept: float | None = None,
) -> BDMCResult:
    """Bidirectional Monte Carlo: sandwich ``log Z`` between forward and reverse AIS.

    The reverse run starts from ``exact_samples`` of the target (as many particles as there
    are samples) and anneals back to the base; the forward run uses as many particles. The
    arguments other than ``exact_samples`` are as in :func:`ais`.

    Args:
        exact_samples: exact draws of the target, ``(num_chains, *conditions, *event)``.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA
        >>> from ebmcmc.targets import Gaussian
        >>> target = Gaussian(torch.ones(2), 0.5 * torch.eye(2))
        >>> base = Gaussian(torch.zeros(2), torch.eye(2))
        >>> x = target.sample(256, generator=torch.Generator().manual_seed(0))
        >>> r = bdmc(target, base, MALA(0.3), x, num_temperatures=30, generator=0,
        ...          progress=False)
        >>> bool(r.lower.log_z < r.upper.log_z)
        True
    """

    steps = _check_run_args(steps_per_temperature, target_accept)
    if not isinstance(exact_samples, Tensor) or not exact_samples.is_floating_point():
        raise TypeError("exact_samples must be a floating-point tensor (num_chains, …)")
    b = _resolve_betas(betas, num_temperatures, schedule)
    n = exact_samples.shape[0]
    gen = make_generator(generator)
    # the forward run starts from base draws of the same shape as the exact samples, so that
    # with condition dimensions both runs estimate one log Z per condition
    x0 = base.sample(n, generator=gen)
    if x0.shape != exact_samples.shape:
        ev = x0.ndim - 1  # a base without conditions draws (n, *event)
        shape = tuple(exact_samples.shape)
        if ev < 0 or len(shape) < ev + 1 or shape[len(shape) - ev :] != tuple(x0.shape[1:]):
            raise ValueError(
                f"exact_samples of shape {shape} do not match the base's samples of shape "
                f"{tuple(x0.shape)}: expected (num_chains, *conditions, *event)"
            )
        m = math.prod(shape[1 : len(shape) - ev])
        x0 = base.sample(n * m, generator=gen).reshape(shape)
    x0 = x0.to(dtype=exact_samples.dtype, device=exact_samples.device)
    lower = ais(
        energy,
        base,
        kernel,
        n,
        betas=b,
        generator=gen,
        progress=progress,
        steps_per_temperature=steps_per_temperature,
        adapt_step_size=adapt_step_size,
        target_accept=target_accept,
        init=x0,
    )
    _check_particles(energy, exact_samples, "exact_samples")
    upper = _run(
        energy,
        base,
        kernel,
        exact_samples,
        b,
        gen,
        steps,
        adapt_step_size,
        target_accept,
        progress,
        reverse=True,
    )
    return BDMCResult(lower, upper)
