"""Level conditioning of the CDRL networks: integer levels read through a log-SNR table, and
class labels with a null class for classifier-free guidance."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .levels import _levels

__all__ = ["logsnr_to_unit", "LogSNRLevels"]


def logsnr_to_unit(logsnr: Tensor) -> Tensor:
    """CDRL's level input ``nu = arctan(exp(-clip(logsnr, -20, 20) / 2)) / (pi / 2)``.

    ``nu`` lies in ``(0, 1)``, grows with the noise, and is linear in time for CDRL's schedule
    (``logSNR(u) = -2 log tan(a u + b)`` gives ``nu = (a u + b) / (pi / 2)``).

    Args:
        logsnr: log signal-to-noise ratios, any shape, floating point.

    Returns:
        ``nu``, same shape and dtype.

    Example:
        >>> import torch
        >>> [round(v, 4) for v in logsnr_to_unit(torch.tensor([0.0, 9.8, -5.1])).tolist()]
        [0.5, 0.0047, 0.9504]
    """
    if not isinstance(logsnr, Tensor) or not logsnr.is_floating_point():
        raise TypeError("logsnr must be a floating-point tensor")
    return torch.atan(torch.exp(-0.5 * logsnr.clamp(-20.0, 20.0))) / (math.pi / 2)


def _default_logsnr() -> Tensor:
    from ..diffusion import CDRLSchedule  # same layer; imported here to keep nn's import light

    return CDRLSchedule(6).logsnr


class LogSNRLevels(nn.Module):
    """Integer levels ``t`` -> ``1000 * nu(logsnr[t])``, the scalar a CDRL network embeds.

    The table of per-level log-SNRs is a float32 buffer (saved with the weights); level ``t``
    is accepted for ``0 <= t < len(logsnr)``. CDRL's energy network is called at the lower
    level of a pair (``0..T-1``) and its initializer at the upper one (``1..T``), so both take
    the schedule's full table of ``T + 1`` values.

    Args:
        logsnr: per-level log-SNRs, shape ``(L,)`` (default: ``CDRLSchedule(6).logsnr``).

    Example:
        >>> import torch
        >>> lv = LogSNRLevels()
        >>> lv.num_levels
        7
        >>> [round(v, 1) for v in lv(torch.tensor([0, 6])).tolist()]
        [4.7, 950.4]
    """

    logsnr: Tensor  # buffer, registered in __init__

    def __init__(self, logsnr: Tensor | None = None) -> None:
        super().__init__()
        table = _default_logsnr() if logsnr is None else torch.as_tensor(logsnr)
        table = table.detach().to(torch.float32).clone()
        if table.ndim != 1 or table.numel() == 0:
            raise ValueError("logsnr must be a non-empty 1-D tensor")
        if table.device.type != "meta" and not bool(torch.isfinite(table).all()):
            raise ValueError("logsnr must hold finite values")
        self.register_buffer("logsnr", table)
        self.num_levels = table.numel()

    def forward(
        self,
        t: Tensor | int | None,
        batch_shape: torch.Size | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Validate ``t`` (integer, broadcastable to ``batch_shape``, in range; ``None`` means
        level 0) and return ``1000 * nu`` of shape ``batch_shape`` (default ``t``'s shape) in
        ``dtype``."""
        if batch_shape is None:
            batch_shape = t.shape if isinstance(t, Tensor) else torch.Size()
        lv = _levels(t, batch_shape, self.num_levels, self.logsnr.device)
        return (1000.0 * logsnr_to_unit(self.logsnr))[lv].to(dtype)


def one_hot_labels(
    labels: Tensor | None, num_classes: int | None, batch_shape: torch.Size, device, dtype
) -> Tensor | None:
    """One-hot labels with the null class ``num_classes`` (``labels=None``: every example
    null); ``None`` when the network is unconditional (then ``labels`` must be ``None``)."""
    if num_classes is None:
        if labels is not None:
            raise ValueError("labels given to an unconditional network (num_classes=None)")
        return None
    if labels is None:
        labels = torch.full(batch_shape, num_classes, dtype=torch.long, device=device)
    if not isinstance(labels, Tensor) or labels.dtype == torch.bool or labels.is_floating_point():
        raise TypeError("labels must be an integer tensor of class indices")
    if tuple(labels.shape) != tuple(batch_shape):
        raise ValueError(
            f"labels has shape {tuple(labels.shape)}, expected the batch shape {tuple(batch_shape)}"
        )
    labels = labels.to(device)
    if labels.numel() and labels.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}] ({num_classes} is the null class); "
                f"got values in [{lo}, {hi}]"
            )
    return F.one_hot(labels.long(), num_classes + 1).to(dtype)
