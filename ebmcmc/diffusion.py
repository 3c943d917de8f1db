"""Noise schedules for diffusion-based EBM training: DRL, CDRL and DAEBM.

A schedule holds the per-level constants of a discrete forward (noising) process
``x_0 -> x_1 -> ... -> x_T`` as **float64 tensors on the CPU**, and draws noisy data from it.
Constants are gathered per example with :func:`gather`, which casts them to the dtype and
device of the data, so one schedule serves every device and precision. Levels passed to
:meth:`NoiseSchedule.q_sample` and :meth:`RecoverySchedule.training_pair` are range-checked
(which reads two numbers back from the device).

Every schedule exposes the same *uniform* attributes, all of length ``T + 1`` and indexed by the
level ``k = 0..T`` (``T = num_levels``):

| attribute    | meaning                                                                    |
|--------------|----------------------------------------------------------------------------|
| `signal`     | coefficient of `x_{k-1}` in `x_k` (one forward step)                       |
| `sigma`      | standard deviation of the noise added by that step                         |
| `signal_bar` | coefficient of the data `x` in `x_k`                                       |
| `sigma_bar`  | standard deviation of the accumulated noise in `x_k`                       |

so that ``x_k = signal[k] * x_{k-1} + sigma[k] * eps`` and
``x_k = signal_bar[k] * x + sigma_bar[k] * eps``, with ``signal**2 + sigma**2 == 1`` (variance
preserving). The papers name these quantities differently, and **do not agree on what**
``alpha`` **means**:

* DRL (:class:`DRLSchedule`) writes ``a_k`` for the coefficient itself, so
  ``alpha == signal`` and ``alpha_bar == signal_bar``.
* CDRL (:class:`CDRLSchedule`) and DAEBM (:class:`DAEBMSchedule`) follow DDPM, where ``alpha``
  is a *variance*: ``alpha == signal**2`` and ``alpha_bar == signal_bar**2``, so
  ``sqrt(alpha_bar)`` multiplies ``x``.

Code that should work with any schedule should use the uniform names; the paper names exist so
that formulas can be checked against the papers line by line.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "gather",
    "NoiseSchedule",
    "RecoverySchedule",
    "DRLSchedule",
    "CDRLSchedule",
    "DAEBMSchedule",
]

_F64 = torch.float64


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _check_levels(t: Tensor | int, like: Tensor, low: int, high: int, name: str = "t") -> Tensor:
    """Validate a tensor of integer levels against the batch shape of ``like`` and a range."""
    if isinstance(t, int) and not isinstance(t, bool):
        t = torch.tensor(t, device=like.device)
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be an integer tensor of levels, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be an integer tensor of levels, got dtype {t.dtype}")
    if t.ndim > like.ndim or tuple(like.shape[: t.ndim]) != tuple(t.shape):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} but the data has shape {tuple(like.shape)}; "
            f"expected one level per example, i.e. a prefix of the data shape such as "
            f"({like.shape[0] if like.ndim else ''},)"
        )
    if t.numel() > 0:
        lo, hi = int(t.min()), int(t.max())
        if lo < low or hi > high:
            raise ValueError(
                f"{name} must lie in [{low}, {high}] for this schedule; got values in [{lo}, {hi}]"
            )
    return t


def gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """Pick ``values[t]`` per example and shape it to broadcast against ``like``.

    Args:
        values: 1-D tensor of per-level constants, shape ``(L,)`` (any dtype and device).
        t: integer tensor of levels whose shape is a prefix of ``like.shape``, e.g.
            ``(batch,)``; a 0-d tensor applies one level to every example.
        like: the data the constants will multiply, shape ``(*t.shape, *event)``.

    Returns:
        Tensor of shape ``(*t.shape, 1, ..., 1)`` with ``like.ndim`` dimensions in all, in
        ``like``'s dtype and on ``like``'s device. No range checking is done here; indices
        out of range raise PyTorch's ``IndexError``.

    Example:
        >>> import torch
        >>> vals = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
        >>> gather(vals, torch.tensor([2, 0]), torch.ones(2, 3, 4)).shape
        torch.Size([2, 1, 1])
        >>> gather(vals, torch.tensor([2, 0]), torch.ones(2, 3)).flatten()
        tensor([2.0000, 0.5000])
    """
    v = values.to(dtype=like.dtype).to(device=like.device)
    out = v[t.to(device=like.device, dtype=torch.long)]
    return out.reshape(tuple(t.shape) + (1,) * (like.ndim - t.ndim))


class NoiseSchedule:
    """Base class: a variance-preserving forward process over levels ``0..T``.

    Subclasses set ``num_levels`` (``T``) and the float64 tensors ``signal``, ``sigma``,
    ``signal_bar`` and ``sigma_bar`` (each of shape ``(T + 1,)``; see the module docstring).

    Example:
        >>> sched = DAEBMSchedule(num_levels=4)
        >>> isinstance(sched, NoiseSchedule), sched.sigma_bar.shape
        (True, torch.Size([5]))
    """

    num_levels: int
    signal: Tensor
    sigma: Tensor
    signal_bar: Tensor
    sigma_bar: Tensor

    # Range of levels drawn by ``sample_levels`` (inclusive); set by subclasses.
    def _level_range(self) -> tuple[int, int]:
        return 0, self.num_levels

    def q_sample(
        self,
        x0: Tensor,
        t: Tensor | int,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``x_t = signal_bar[t] * x0 + sigma_bar[t] * eps`` with ``eps ~ N(0, I)``.

        Args:
            x0: clean data, shape ``(*batch, *event)``, floating point.
            t: integer levels in ``[0, T]`` whose shape is a prefix of ``x0.shape`` (usually
                ``(batch,)``), or one int for all examples.
            noise: optional ``eps`` of ``x0``'s shape; drawn from ``generator`` if omitted.
            generator: random generator on ``x0``'s device, used to draw ``eps``; pass
                either ``noise`` or ``generator``, not both.

        Returns:
            ``x_t``, same shape, dtype and device as ``x0``.

        Raises:
            ValueError: if ``t`` is out of range or its shape does not match ``x0``.
            TypeError: if ``t`` is not an integer tensor.

        Example:
            >>> import torch
            >>> sched = DRLSchedule(num_levels=6)
            >>> g = torch.Generator().manual_seed(0)
            >>> x0 = torch.zeros(4, 3, 8, 8)
            >>> sched.q_sample(x0, torch.tensor([0, 1, 2, 6]), generator=g).shape
            torch.Size([4, 3, 8, 8])
        """
        if not isinstance(x0, Tensor) or not x0.is_floating_point():
            raise TypeError("x0 must be a floating-point tensor")
        t = _check_levels(t, x0, 0, self.num_levels)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        else:
            if generator is not None:
                raise ValueError("pass either noise or generator to q_sample, not both")
            if noise.shape != x0.shape:
                raise ValueError(
                    f"noise has shape {tuple(noise.shape)}, expected x0's shape {tuple(x0.shape)}"
                )
        return gather(self.signal_bar, t, x0) * x0 + gather(self.sigma_bar, t, x0) * noise

    def sample_levels(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw training levels uniformly.

        :class:`RecoverySchedule` subclasses (DRL, CDRL) draw the lower level ``t`` of a
        training pair, uniform on ``{0..T-1}``; :class:`DAEBMSchedule` draws a level of the
        joint model, uniform on ``{0..T}``.

        Args:
            batch_size: number of levels to draw.
            generator: random generator; its device is used when ``device`` is omitted.
            device: device of the result.

        Returns:
            int64 tensor of shape ``(batch_size,)``.

        Example:
            >>> import torch
            >>> t = DRLSchedule(6).sample_levels(1000, torch.Generator().manual_seed(0))
            >>> int(t.min()), int(t.max())
            (0, 5)
        """
        _check_int(batch_size, "batch_size", 0)
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        low, high = self._level_range()
        return torch.randint(low, high + 1, (batch_size,), generator=generator, device=device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_levels={self.num_levels})"


class RecoverySchedule(NoiseSchedule):
    """Base class of the recovery-likelihood schedules (DRL, CDRL).

    Training works on pairs of adjacent levels ``(x_t, x_{t+1})``, ``t = 0..T-1``. The
    conditional (recovery) energy at pair ``t`` is, in ``y = signal_prime[t+1] * x_t``::

        E_cond(y | x_{t+1}) = E(y, t) / s_t**2 + tether[t+1] * |y - x_{t+1}|**2 / (2 sigma[t+1]**2)

    Besides the :class:`NoiseSchedule` attributes, subclasses provide (shape ``(T + 1,)``):
    ``signal_prime`` (``signal`` with the top entry set to 1) and ``tether`` (1 except
    ``tether[T] = 0``: the top level is a plain marginal EBM). Per pair (shape ``(T,)``):
    ``step_size(b2)`` and ``loss_weight``.
    """

    #: whether :meth:`training_pair` builds both levels from the same noise by default.
    shared_noise_default: bool = False

    def _level_range(self) -> tuple[int, int]:
        return 0, self.num_levels - 1

    def _finish(self) -> None:
        """Derive ``signal_prime``, ``tether`` and ``loss_weight`` from the basic constants."""
        T = self.num_levels
        self.signal_prime = self.signal.clone()
        self.signal_prime[T] = 1.0
        self.tether = torch.ones(T + 1, dtype=_F64)
        self.tether[T] = 0.0
        self.loss_weight = self.sigma[1] / self.sigma[1:]

    def step_size(self, b2: float) -> Tensor:
        """Langevin step sizes ``s_t = sqrt(b2 * sigma[t+1]**2 * sigma_bar[t] / sigma_bar[0])``.

        Args:
            b2: the scale ``b**2`` (> 0).

        Returns:
            float64 tensor of shape ``(T,)``, indexed by the pair's lower level ``t``.
        """
        if not (isinstance(b2, int | float) and math.isfinite(b2) and b2 > 0):
            raise ValueError(f"b2 must be a finite positive number, got {b2!r}")
        return torch.sqrt(b2 * self.sigma[1:] ** 2 * (self.sigma_bar[:-1] / self.sigma_bar[0]))

    def training_pair(
        self,
        x0: Tensor,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        shared_noise: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw a training pair ``(x_t, x_{t+1})`` for levels ``t`` in ``[0, T-1]``.

        With independent noise (DRL's choice), ``x_t = signal_bar[t]*x0 + sigma_bar[t]*eps``
        and ``x_{t+1} = signal[t+1]*x_t + sigma[t+1]*eps'``. With ``shared_noise=True``
        (CDRL's variance reduction), both are marginal draws with the same ``eps``:
        ``x_{t+1} = signal_bar[t+1]*x0 + sigma_bar[t+1]*eps``.

        Args:
            x0: clean data, shape ``(*batch, *event)``.
            t: integer levels in ``[0, T-1]``, shape a prefix of ``x0.shape`` (e.g.
                ``(batch,)``).
            generator: random generator on ``x0``'s device.
            shared_noise: see above; ``None`` uses the schedule's ``shared_noise_default``
                (False for DRL, True for CDRL).

        Returns:
            ``(x_t, x_{t+1})``, each of ``x0``'s shape, dtype and device.

        Example:
            >>> import torch
            >>> sched = DRLSchedule(6)
            >>> g = torch.Generator().manual_seed(0)
            >>> t = sched.sample_levels(8, g)
            >>> xt, xt1 = sched.training_pair(torch.zeros(8, 2), t, generator=g)
            >>> xt.shape, xt1.shape
            (torch.Size([8, 2]), torch.Size([8, 2]))
        """
        if not isinstance(x0, Tensor) or not x0.is_floating_point():
            raise TypeError("x0 must be a floating-point tensor")
        t = _check_levels(t, x0, 0, self.num_levels - 1)
        if shared_noise is None:
            shared_noise = self.shared_noise_default
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_t = gather(self.signal_bar, t, x0) * x0 + gather(self.sigma_bar, t, x0) * eps
        if shared_noise:
            x_next = (
                gather(self.signal_bar, t + 1, x0) * x0 + gather(self.sigma_bar, t + 1, x0) * eps
            )
        else:
            eps2 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            x_next = gather(self.signal, t + 1, x0) * x_t + gather(self.sigma, t + 1, x0) * eps2
        return x_t, x_next


class DRLSchedule(RecoverySchedule):
    """The noise schedule of Diffusion Recovery Likelihood (Gao et al., ICLR 2021).

    Built from DDPM's 1000 linear betas ``beta_i`` (1e-4 to 0.02). With ``T = num_levels``,
    level boundaries are ``b_k = k * floor(1000 / (2 (T - 1)))`` for ``k = 0..T-1`` and
    ``b_T = 999``; ``a_0 = sqrt(1 - beta_0)`` and, for ``k >= 1``,
    ``a_k = prod_{i = b_{k-1}+1 .. b_k} sqrt(1 - beta_i)``. Then ``sigma_k = sqrt(1 - a_k^2)``,
    ``abar_k = prod_{j <= k} a_j`` and ``sigmabar_k = sqrt(1 - abar_k^2)``. Level 0 already
    carries ``sigmabar_0 = 0.01`` of noise; the levels cover DDPM steps 0..~500 and then jump
    to 999. For ``T = 6``, ``sigma = (0.0100, 0.3237, 0.5165, 0.6322, 0.7132, 0.7734, 0.9997)``.

    Conventions: DRL's ``a`` is a *signal coefficient* (not a variance), so here
    ``alpha is signal``, ``alpha_bar is signal_bar`` and ``alpha_prime is signal_prime``.

    Attributes (float64, CPU):
        num_levels: ``T``.
        betas: the 1000 DDPM betas, shape ``(1000,)``.
        boundaries: ``b_k``, int64, shape ``(T + 1,)``.
        alpha, sigma, alpha_bar, sigma_bar: ``a_k``, ``sigma_k``, ``abar_k``, ``sigmabar_k``,
            shape ``(T + 1,)``.
        alpha_prime: ``a'`` (``a`` with ``a'_T = 1``), shape ``(T + 1,)``.
        tether: ``r`` (1 with ``r_T = 0``), shape ``(T + 1,)``.
        loss_weight: ``w_t = sigma_1 / sigma_{t+1}``, shape ``(T,)``.

    Args:
        num_levels: ``T``, an int in ``[2, 501]`` (the boundary formula needs ``T >= 2`` and
            degenerates for ``T >= 502``, where ``floor(1000 / (2 (T - 1))) == 0``).

    Example:
        >>> sched = DRLSchedule(num_levels=6)
        >>> [round(v, 4) for v in sched.sigma_bar.tolist()]
        [0.01, 0.3238, 0.5862, 0.7785, 0.898, 0.9603, 1.0]
        >>> [round(v, 4) for v in sched.step_size().tolist()]
        [0.0046, 0.0416, 0.0685, 0.089, 0.1036, 0.1386]
        >>> [round(v, 3) for v in sched.loss_weight.tolist()]
        [1.0, 0.627, 0.512, 0.454, 0.419, 0.324]
    """

    num_ddpm_steps = 1000
    beta_start = 1e-4
    beta_end = 0.02

    def __init__(self, num_levels: int = 6) -> None:
        T = _check_int(num_levels, "num_levels", 2, 501)
        self.num_levels = T
        n = self.num_ddpm_steps
        self.betas = torch.linspace(self.beta_start, self.beta_end, n, dtype=_F64)
        stride = n // (2 * (T - 1))
        self.boundaries = torch.tensor([k * stride for k in range(T)] + [n - 1])
        # log of prod_{i <= j} sqrt(1 - beta_i), j = 0..999
        log_cum = torch.cumsum(0.5 * torch.log1p(-self.betas), 0)
        log_abar = log_cum[self.boundaries]
        log_a = torch.cat([log_abar[:1], log_abar[1:] - log_abar[:-1]])
        self.alpha = torch.exp(log_a)
        self.sigma = torch.sqrt(-torch.expm1(2 * log_a))
        self.alpha_bar = torch.exp(log_abar)
        self.sigma_bar = torch.sqrt(-torch.expm1(2 * log_abar))
        self.signal, self.signal_bar = self.alpha, self.alpha_bar
        self._finish()
        self.alpha_prime = self.signal_prime

    def step_size(self, b2: float = 2e-4) -> Tensor:
        """DRL's Langevin step sizes ``s_t`` for ``t = 0..T-1``.

        ``s_t**2 = b2 * sigma_{t+1}**2 * (sigmabar_t / sigmabar_0)`` (the ratio is not
        squared); ``b2 = 2e-4`` in DRL.

        Args:
            b2: the scale ``b**2`` (> 0).

        Returns:
            float64 tensor of shape ``(T,)``.

        Example:
            >>> [round(v, 4) for v in DRLSchedule(6).step_size(2e-4).tolist()]
            [0.0046, 0.0416, 0.0685, 0.089, 0.1036, 0.1386]
        """
        return super().step_size(b2)


class CDRLSchedule(RecoverySchedule):
    """The log-SNR schedule of Cooperative DRL (Zhu et al., ICLR 2024).

    Levels ``k = 0..T`` sit at times ``u_k = k / T`` with
    ``logSNR(u) = -2 log tan(a u + b)``, ``b = arctan(exp(-logsnr_max / 2))`` and
    ``a = arctan(exp(-logsnr_min / 2)) - b`` (so ``logSNR(0) = logsnr_max`` and
    ``logSNR(1) = logsnr_min``). ``alpha_bar = sigmoid(logSNR)``.

    Conventions (they differ from :class:`DRLSchedule`): following the CDRL paper and DDPM,
    ``alpha_bar`` and ``alpha`` are **variances**, so ``sqrt(alpha_bar[k])`` (not
    ``alpha_bar[k]``) multiplies the data in ``x_k``:

    * ``alpha_bar[k] = sigmoid(logsnr[k])`` (about 0.99994, 0.936, 0.768, 0.535, 0.294, 0.102,
      0.0061 for the defaults); ``signal_bar = sqrt(alpha_bar)``;
      ``sigma_bar = sqrt(1 - alpha_bar)``.
    * ``alpha[k] = alpha_bar[k] / alpha_bar[k-1]`` for ``k >= 1`` and ``alpha[0] =
      alpha_bar[0]`` (the step from clean data); ``signal = sqrt(alpha)``;
      ``sigma = sqrt(1 - alpha)`` (the paper's ``sigma_t``).
    * ``signal_prime``, ``tether``, ``loss_weight`` mean the same as in :class:`DRLSchedule`
      (``signal_prime`` is the paper's ``sqrt(alpha_t)`` with 1 at the top level, where the
      tether is dropped). There is no ``alpha_prime`` attribute, to avoid a third meaning.
    * Step sizes and loss weights are indexed by the **lower** level of the pair, as in DRL:
      the paper's ``s_t**2 = 4e-4 c_t sigma_t**2`` with ``c_t = sigmabar_{t-1} /
      sigmabar_0`` (its ``t = 1..T``) is ``step_size()[t-1]``, and the paper's
      ``E(y, t-1)`` is the network at level ``t-1``.

    Attributes (float64, CPU, shape ``(T + 1,)`` unless noted):
        num_levels: ``T``.
        logsnr: ``logSNR(k / T)``.
        alpha_bar, alpha: variances as above.
        signal, sigma, signal_bar, sigma_bar, signal_prime, tether: uniform names.
        time_embedding_input: ``arctan(exp(-logsnr / 2)) / (pi / 2)``, in ``(0, 1)``: the
            scalar the CDRL networks embed sinusoidally.
        posterior_variance: DDPM's ``beta_tilde_k = sigmabar_{k-1}**2 / sigmabar_k**2 *
            sigma_k**2`` (with ``sigmabar_{-1} = 0``), used by the initializer's proposal.
        loss_weight: ``w_t = sigma_1 / sigma_{t+1}`` (the paper's ``sigma_1 / sigma_t`` at
            its pair ``t = 1..T``), shape ``(T,)``.

    Args:
        num_levels: ``T >= 1``.
        logsnr_max: log-SNR at ``u = 0`` (the least noisy level).
        logsnr_min: log-SNR at ``u = 1`` (the noisiest level); must be below ``logsnr_max``.

    Example:
        >>> sched = CDRLSchedule()
        >>> [round(v, 4) for v in sched.alpha_bar.tolist()]
        [0.9999, 0.9364, 0.768, 0.5352, 0.294, 0.1023, 0.0061]
        >>> round(sched.logsnr[0].item(), 6), round(sched.logsnr[-1].item(), 6)
        (9.8, -5.1)
    """

    shared_noise_default = True

    def __init__(
        self, num_levels: int = 6, logsnr_max: float = 9.8, logsnr_min: float = -5.1
    ) -> None:
        T = _check_int(num_levels, "num_levels", 1)
        for name, v in (("logsnr_max", logsnr_max), ("logsnr_min", logsnr_min)):
            if not (isinstance(v, int | float) and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not logsnr_max > logsnr_min:
            raise ValueError(
                f"logsnr_max must exceed logsnr_min, got logsnr_max={logsnr_max}, "
                f"logsnr_min={logsnr_min}"
            )
        self.num_levels = T
        self.logsnr_max, self.logsnr_min = float(logsnr_max), float(logsnr_min)
        u = torch.arange(T + 1, dtype=_F64) / T
        b = math.atan(math.exp(-0.5 * logsnr_max))
        a = math.atan(math.exp(-0.5 * logsnr_min)) - b
        self.logsnr = -2.0 * torch.log(torch.tan(a * u + b))
        self.alpha_bar = torch.sigmoid(self.logsnr)
        # log alpha_bar and log(1 - alpha_bar), computed stably from logsnr
        log_abar = -torch.nn.functional.softplus(-self.logsnr)
        log_a = torch.cat([log_abar[:1], log_abar[1:] - log_abar[:-1]])
        self.alpha = torch.exp(log_a)
        self.signal = torch.exp(0.5 * log_a)
        self.sigma = torch.sqrt(-torch.expm1(log_a))
        self.signal_bar = torch.exp(0.5 * log_abar)
        self.sigma_bar = torch.sqrt(torch.sigmoid(-self.logsnr))
        self.time_embedding_input = torch.atan(torch.exp(-0.5 * self.logsnr)) / (math.pi / 2)
        prev = torch.cat([torch.zeros(1, dtype=_F64), self.sigma_bar[:-1]])
        self.posterior_variance = prev**2 / self.sigma_bar**2 * self.sigma**2
        self._finish()

    def step_size(self, b2: float = 4e-4) -> Tensor:
        """CDRL's Langevin step sizes, indexed by the pair's lower level ``t = 0..T-1``.

        ``step_size(b2)[t]**2 = b2 * c * sigma_{t+1}**2`` with ``c = sigmabar_t /
        sigmabar_0``: the paper's ``s_{t+1}**2 = 4e-4 c_{t+1} sigma_{t+1}**2``.

        Args:
            b2: the scale (> 0); 4e-4 in CDRL.

        Returns:
            float64 tensor of shape ``(T,)``.

        Example:
            >>> CDRLSchedule().step_size().shape
            torch.Size([6])
        """
        return super().step_size(b2)

    def __repr__(self) -> str:
        return (
            f"CDRLSchedule(num_levels={self.num_levels}, logsnr_max={self.logsnr_max}, "
            f"logsnr_min={self.logsnr_min})"
        )


class DAEBMSchedule(NoiseSchedule):
    """The "sqrtcumlinear" schedule of the diffusion-assisted EBM (Zhang, Ou, Tan, 2023).

    With ``T = num_levels``, the per-step noise standard deviations are cumulative sums of a
    linear ramp: ``sqrt(beta_k) = sum_{j=1..k} d_j`` for ``k = 1..T``, where
    ``d = linspace(delta_start, delta_end, T)``, and ``beta_0 = 0``: **level 0 is the clean
    data** (``sigma_bar[0] = 0``). For the defaults ``sigma[T] = sqrt(beta_T) =
    T (delta_start + delta_end) / 2 = 0.505`` (the per-step noise at the top level), and the
    marginal ``sigma_bar[T]`` is about 0.9723 (``signal_bar[T]`` about 0.234).

    Conventions: as in DDPM (and unlike :class:`DRLSchedule`), ``alpha = 1 - beta`` and
    ``alpha_bar = prod alpha`` are **variances**: ``x_k ~ N(sqrt(alpha_bar_k) x,
    (1 - alpha_bar_k) I)``. ``signal = sqrt(alpha)``, ``sigma = sqrt(beta)``,
    ``signal_bar = sqrt(alpha_bar)``, ``sigma_bar = sqrt(1 - alpha_bar)``.

    DAEBM models the joint ``p(x, t)`` over all ``T + 1`` levels, so :meth:`sample_levels`
    draws ``t`` uniformly from ``{0..T}``.

    Attributes (float64, CPU, shape ``(T + 1,)``):
        num_levels: ``T``.
        beta, alpha, alpha_bar: DDPM-style variances as above.
        signal, sigma, signal_bar, sigma_bar: uniform names.

    Args:
        num_levels: ``T >= 1`` (50 in DAEBM's image experiments, 6 for its 2-D toys).
        delta_start: first increment of ``sqrt(beta)`` (> 0).
        delta_end: last increment of ``sqrt(beta)`` (> 0).

    Raises:
        ValueError: if some ``beta_k`` exceeds 1.

    Example:
        >>> sched = DAEBMSchedule(num_levels=50)
        >>> round(sched.sigma[-1].item(), 4), sched.sigma_bar[0].item()
        (0.505, 0.0)
    """

    def __init__(
        self, num_levels: int = 50, delta_start: float = 2e-4, delta_end: float = 2e-2
    ) -> None:
        T = _check_int(num_levels, "num_levels", 1)
        for name, v in (("delta_start", delta_start), ("delta_end", delta_end)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite positive number, got {v!r}")
        self.num_levels = T
        self.delta_start, self.delta_end = float(delta_start), float(delta_end)
        sqrt_beta = torch.cumsum(torch.linspace(delta_start, delta_end, T, dtype=_F64), 0)
        if sqrt_beta[-1] > 1:
            raise ValueError(
                f"the schedule reaches sqrt(beta_T) = {sqrt_beta[-1].item():.4g} > 1; "
                "choose smaller delta_start / delta_end or fewer levels"
            )
        self.sigma = torch.cat([torch.zeros(1, dtype=_F64), sqrt_beta])
        self.beta = self.sigma**2
        self.alpha = 1.0 - self.beta
        self.signal = torch.sqrt(self.alpha)
        self.alpha_bar = torch.cumprod(self.alpha, 0)
        self.signal_bar = torch.sqrt(self.alpha_bar)
        # |expm1| rather than -expm1 so that level 0 gives +0.0, not -0.0
        self.sigma_bar = torch.sqrt(torch.expm1(torch.cumsum(torch.log1p(-self.beta), 0)).abs())

    def __repr__(self) -> str:
        return (
            f"DAEBMSchedule(num_levels={self.num_levels}, delta_start={self.delta_start}, "
            f"delta_end={self.delta_end})"
        )
