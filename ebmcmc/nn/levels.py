"""Level conditioning shared by the networks: the sinusoidal embedding, level checks, and
per-level output scaling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sinusoidal_embedding", "LevelScaled"]


def sinusoidal_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, dtype: torch.dtype | None = None
) -> Tensor:
    """DDPM's sinusoidal embedding of levels (the tensor2tensor variant).

    With ``h = dim // 2`` frequencies ``f_i = max_period ** (-i / (h - 1))``,
    ``i = 0..h-1``, the embedding is ``[sin(t f_0), .., sin(t f_{h-1}), cos(t f_0), ..,
    cos(t f_{h-1})]``, zero-padded by one column when ``dim`` is odd.

    Args:
        t: levels of any shape; integer or floating point.
        dim: embedding size, ``>= 2``.
        max_period: the longest period (``10000`` in DDPM).
        dtype: result dtype; defaults to ``t``'s dtype if floating, else PyTorch's default.

    Returns:
        Tensor of shape ``(*t.shape, dim)`` on ``t``'s device.

    Example:
        >>> import torch
        >>> emb = sinusoidal_embedding(torch.tensor([0, 1, 5]), 8)
        >>> emb.shape
        torch.Size([3, 8])
        >>> emb[0]
        tensor([0., 0., 0., 0., 1., 1., 1., 1.])
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a tensor, got {type(t).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    if dtype is None:
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float64) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * exponent).to(dtype)
    args = t.to(dtype)[..., None] * freqs
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _levels(t: Tensor | int | None, batch_shape: torch.Size, num_levels: int, device) -> Tensor:
    """Validate levels and broadcast them to ``batch_shape`` (``None`` means level 0)."""
    if t is None:
        t = 0
    if isinstance(t, int) and not isinstance(t, bool):
        t = torch.tensor(t, device=device)
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be an integer tensor of levels or None, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"t must be an integer tensor of levels, got dtype {t.dtype}")
    try:
        t = t.to(device).expand(batch_shape)
    except RuntimeError:
        raise ValueError(
            f"t has shape {tuple(t.shape)}, which does not broadcast to the batch shape "
            f"{tuple(batch_shape)}"
        ) from None
    if t.numel() == 0:
        return t
    if t.device.type != "cpu" or torch.compiler.is_compiling():
        # no host synchronisation on an accelerator (and no graph break under torch.compile):
        # the check runs on the device and fails there, asynchronously
        torch._assert_async(
            ((t >= 0) & (t < num_levels)).all(), f"t must lie in [0, {num_levels - 1}]"
        )
    else:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_levels:
            raise ValueError(
                f"t must lie in [0, {num_levels - 1}] (num_levels={num_levels}); got values in "
                f"[{lo}, {hi}]"
            )
    return t


def _check_positive_int(value: object, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_num_classes(value: int | None) -> int | None:
    """``num_classes``: ``None`` (an unconditional network) or an int >= 1."""
    return None if value is None else _check_positive_int(value, "num_classes")


def _check_channel_mult(value: Sequence[int]) -> tuple[int, ...]:
    """``channel_mult`` as a tuple, checked: a non-empty sequence of ints >= 1."""
    mult = tuple(value)
    if not mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult):
        raise ValueError(f"channel_mult must be a non-empty sequence of ints >= 1, got {mult!r}")
    return mult


class LevelScaled(nn.Module):
    """An energy whose network works in nats at every level: ``E(x, t) = scale[t] * net(x, t)``.

    DRL divides the energy by ``s_t^2`` in its recovery energy, so with
    ``scale = estimator.step_sizes ** 2`` the network ``net`` outputs the level's negative
    log-density (up to a constant) directly, instead of having to produce outputs whose
    useful range shrinks with ``s_t^2`` (at level 0 of the T = 6 schedule, an error of 1e-3 in
    ``E`` is already several nats). The model family is unchanged; only the network's output
    scale per level is. Pair it with
    ``DiffusionRecoveryLikelihood(..., loss_weight="likelihood")`` so every level's loss is
    counted in nats as well.

    Args:
        net: a module called ``net(x, t)`` returning ``batch`` energies.
        scale: positive scales, shape ``(num_levels,)``; stored as a buffer (float32).

    Shapes:
        ``x``: ``(batch, *event)``; ``t``: integer ``(batch,)`` (``None`` or an int means that
        level for every example, ``None`` being level 0); output ``(batch,)``.

    Example:
        >>> import torch
        >>> from ebmcmc.nn import TimeMLP
        >>> _ = torch.manual_seed(0)
        >>> net = TimeMLP(2, hidden=16, num_levels=3)
        >>> model = LevelScaled(net, torch.tensor([1e-3, 1e-2, 1e-1]))
        >>> t = torch.tensor([0, 2])
        >>> x = torch.randn(2, 2)
        >>> torch.allclose(model(x, t), net(x, t) * torch.tensor([1e-3, 1e-1]))
        True
    """

    scale: Tensor  # buffer, registered in __init__

    def __init__(self, net: nn.Module, scale) -> None:
        super().__init__()
        scale = torch.as_tensor(scale, dtype=torch.float32).detach().clone()
        if scale.ndim != 1 or scale.numel() == 0:
            raise ValueError(
                f"scale must be a non-empty 1-D tensor, got shape {tuple(scale.shape)}"
            )
        if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
            raise ValueError("scale must be finite and > 0 at every level")
        self.net = net
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor, t: Tensor | int | None = None) -> Tensor:
        out = self.net(x, t)
        levels = _levels(t, out.shape, self.scale.numel(), out.device)
        return out * self.scale.to(out.dtype)[levels]
