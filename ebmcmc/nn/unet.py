"""CDRL's initializer (Zhu et al., ICLR 2024): a level-conditioned U-Net that maps a noisy
image to a proposal for the less noisy one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .levels import (
    _check_channel_mult,
    _check_num_classes,
    _check_positive_int,
    sinusoidal_embedding,
)
from .logsnr import LogSNRLevels, one_hot_labels

__all__ = ["CDRLUNet"]


def _groups(channels: int, num_groups: int) -> int:
    g = min(num_groups, channels)
    while channels % g:
        g -= 1
    return g


class _Block(nn.Module):
    """GroupNorm -> SiLU -> [resample] -> conv -> GroupNorm * (1 + scale) + shift -> SiLU ->
    dropout -> conv (zero weights) -> + shortcut."""

    def __init__(
        self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int,
        resample: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in, eps=1e-6)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out, eps=1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        self.dropout = nn.Dropout(dropout)
        self.film = nn.Linear(temb_dim, 2 * c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.resample = resample

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = F.silu(self.norm1(x))
        h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        scale, shift = self.film(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1.0 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return h + self.shortcut(x)


class _Attention(nn.Module):
    """GroupNorm -> multi-head self-attention over pixels -> 1x1 conv (zero weights) -> + x."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, groups), channels, eps=1e-6)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        q, k, v = (
            z.reshape(b * self.heads, c // self.heads, hh * ww)
            for z in self.qkv(self.norm(x)).chunk(3, dim=1)
        )
        w = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c // self.heads), dim=-1)
        out = (v @ w.transpose(1, 2)).reshape(b, c, hh, ww)
        return self.out(out) + x


def _pairs(stages: nn.ModuleList) -> list[tuple[_Block, nn.Module]]:
    """The ``(block, attention or identity)`` pairs of a path built in ``CDRLUNet.__init__``."""
    return [(cast(_Block, p[0]), p[1]) for p in cast(list[nn.ModuleList], list(stages))]


class CDRLUNet(nn.Module):
    """CDRL's initializer: a level-conditioned U-Net with a residual output ``x + net(x, t)``.

    Architecture (SiLU, GroupNorm with ``num_groups`` groups and eps 1e-6, 3x3 convolutions):

    * level input: ``1000 * nu(logsnr[t])`` (:class:`~ebmcmc.nn.LogSNRLevels`) -> sinusoidal
      embedding of size ``base_channels`` -> Linear(4 base_channels) -> SiLU ->
      Linear(4 base_channels) = ``temb``; a class-conditional network adds
      ``Linear(one_hot(label))``;
    * ``conv_in`` to ``base_channels``; down path: per resolution ``i``, ``num_res_blocks``
      residual blocks to ``base_channels * channel_mult[i]`` channels (each followed by
      self-attention where the resolution is in ``attention_resolutions``), then a residual
      block that halves the resolution by 2x2 average pooling (not after the last); middle:
      block, attention, block; up path: per resolution, ``num_res_blocks + 1`` blocks, each on
      the concatenation with the matching skip activation (and attention where listed), then
      a block that doubles the resolution (nearest neighbour);
    * residual block: GroupNorm -> SiLU -> conv -> GroupNorm, scaled by ``1 + scale`` and
      shifted by ``shift`` (both from ``Linear(SiLU(temb))``) -> SiLU -> dropout -> conv
      (weights initialised to zero) -> + shortcut (1x1 conv where the channels change);
    * output: GroupNorm -> SiLU -> 3x3 conv (weights initialised to zero) ``= net(x, t)``;
      the module returns ``x + net(x, t)`` (``residual=True``), so the untrained initializer
      is the identity plus the last convolution's small bias.

    Parameter count at the defaults (the paper's CIFAR-10 initializer: width 64, multipliers
    (1, 1, 1), 3 blocks per resolution, attention at 16 and 8 px, one head, 32 px):
    3,769,795 (with 10 classes: 3,772,867), as for the paper's code.

    Args:
        in_channels: image channels (the output has as many).
        base_channels: width of ``conv_in`` and size of the sinusoidal embedding.
        channel_mult: width multiplier per resolution.
        num_res_blocks: residual blocks per resolution on the way down.
        attention_resolutions: image sizes (in pixels) that get self-attention.
        dropout: dropout rate in the blocks (0.1 in the paper).
        image_size: height and width of the inputs; must halve cleanly
            ``len(channel_mult) - 1`` times.
        num_heads: attention heads.
        num_groups: GroupNorm groups (reduced to a divisor of the channels where needed).
        residual: return ``x + net(x, t)`` (the paper) rather than ``net(x, t)``.
        logsnr: per-level log-SNRs (default: ``CDRLSchedule(6).logsnr``, levels ``0..6``).
        num_classes: class-conditional initializer with this many classes (label
            ``num_classes`` is the null class); ``None``: unconditional.

    Shapes:
        ``x``: ``(batch, in_channels, image_size, image_size)``; ``t``: integer ``(batch,)``,
        an int, or ``None`` (level 0); ``labels``: integer ``(batch,)`` or ``None``; output:
        like ``x``.

    Example:
        >>> import torch
        >>> net = CDRLUNet(base_channels=8, num_res_blocks=1, image_size=8,
        ...                attention_resolutions=(4,), num_groups=4)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> y = net(x, torch.tensor([1, 6]))
        >>> y.shape, bool((y - x - net.conv_out.bias[:, None, None]).abs().max() < 1e-6)
        (torch.Size([2, 3, 8, 8]), True)
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 1, 1),
        num_res_blocks: int = 3,
        attention_resolutions: Sequence[int] = (16, 8),
        dropout: float = 0.1,
        image_size: int = 32,
        num_heads: int = 1,
        num_groups: int = 32,
        residual: bool = True,
        logsnr: Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.base_channels = _check_positive_int(base_channels, "base_channels", 2)
        self.num_res_blocks = _check_positive_int(num_res_blocks, "num_res_blocks")
        self.image_size = _check_positive_int(image_size, "image_size")
        _check_positive_int(num_heads, "num_heads")
        _check_positive_int(num_groups, "num_groups")
        mult = _check_channel_mult(channel_mult)
        if image_size % 2 ** (len(mult) - 1):
            raise ValueError(
                f"image_size {image_size} does not halve {len(mult) - 1} times; choose another "
                "channel_mult or image size"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.channel_mult = mult
        self.attention_resolutions = tuple(int(r) for r in attention_resolutions)
        self.residual = bool(residual)
        self.num_classes = _check_num_classes(num_classes)
        self.levels = LogSNRLevels(logsnr)
        self.num_levels = self.levels.num_levels
        ch = base_channels
        temb_dim = 4 * ch
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.label_map = (
            None if self.num_classes is None else nn.Linear(self.num_classes + 1, temb_dim)
        )

        def block(c_in: int, c_out: int, resample: str | None = None) -> _Block:
            return _Block(c_in, c_out, temb_dim, dropout, num_groups, resample)

        def attn(c: int, size: int) -> nn.Module:
            if size in self.attention_resolutions:
                return _Attention(c, num_heads, num_groups)
            return nn.Identity()

        self.down = nn.ModuleList()
        skips, c, size = [ch], ch, image_size
        for i, m in enumerate(mult):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([block(c, ch * m), attn(ch * m, size)]))
                c = ch * m
                skips.append(c)
            if i != len(mult) - 1:
                self.down.append(nn.ModuleList([block(c, c, "down"), nn.Identity()]))
                size //= 2
                skips.append(c)
        self.up = nn.ModuleList()  # registered before the middle, as in the paper's code
        self.mid = nn.ModuleList([block(c, c), _Attention(c, num_heads, num_groups), block(c, c)])
        for i, m in reversed(list(enumerate(mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([block(c + skips.pop(), ch * m), attn(ch * m, size)]))
                c = ch * m
            if i != 0:
                self.up.append(nn.ModuleList([block(c, c, "up"), nn.Identity()]))
                size *= 2
        self.norm_out = nn.GroupNorm(_groups(c, num_groups), c, eps=1e-6)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)

    def forward(
        self, x: Tensor, t: Tensor | int | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """The initializer's output ``x + net(x, t)`` (``net(x, t)`` without ``residual``).

        Args:
            x: images, shape ``(batch, in_channels, image_size, image_size)``.
            t: integer levels ``(batch,)``, an int, or ``None`` (level 0).
            labels: class indices ``(batch,)`` (class-conditional networks only; ``None`` or
                ``num_classes`` is the null class).

        Returns:
            A tensor of ``x``'s shape.
        """
        s = self.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, s, s):
            raise ValueError(
                f"x must have shape (batch, {self.in_channels}, {s}, {s}), got {tuple(x.shape)}"
            )
        batch_shape = x.shape[:1]
        level_in = self.levels(t, batch_shape, x.dtype)
        temb = self.temb(sinusoidal_embedding(level_in, self.base_channels, dtype=x.dtype))
        onehot = one_hot_labels(labels, self.num_classes, batch_shape, x.device, x.dtype)
        if self.label_map is not None and onehot is not None:
            temb = temb + self.label_map(onehot)
        h = self.conv_in(x)
        hs = [h]
        for blk, at in _pairs(self.down):
            h = at(blk(h, temb))
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
        for blk, at in _pairs(self.up):
            if blk.resample == "up":
                h = blk(h, temb)
            else:
                h = at(blk(torch.cat([h, hs.pop()], dim=1), temb))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return x + out if self.residual else out
