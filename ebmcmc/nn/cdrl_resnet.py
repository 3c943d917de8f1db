"""The CDRL image energy (Zhu et al., ICLR 2024): a spectral-norm ResNet conditioned on the
log-SNR of its level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from .levels import (
    _check_channel_mult,
    _check_num_classes,
    _check_positive_int,
    sinusoidal_embedding,
)
from .logsnr import LogSNRLevels, one_hot_labels

__all__ = ["CDRLResNet"]


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def _maybe_sn(module: nn.Module, on: bool) -> nn.Module:
    return _sn(module, n_power_iterations=1) if on else module


class _Block(nn.Module):
    """act -> conv -> + act(Linear(act(temb))) -> act -> conv * gain; + shortcut."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, sn: bool) -> None:
        super().__init__()
        self.conv1 = _maybe_sn(nn.Conv2d(c_in, c_out, 3, padding=1), sn)
        self.conv2 = _maybe_sn(nn.Conv2d(c_out, c_out, 3, padding=1), sn)
        self.temb_map = _maybe_sn(nn.Linear(temb_dim, c_out), sn)
        self.gain = nn.Parameter(torch.ones(c_out))
        self.shortcut = (
            _maybe_sn(nn.Conv2d(c_in, c_out, 3, padding=1), sn) if c_in != c_out else nn.Identity()
        )

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(_lrelu(x))
        h = h + _lrelu(self.temb_map(_lrelu(temb)))[:, :, None, None]
        h = self.conv2(_lrelu(h)) * self.gain[:, None, None]
        return h + self.shortcut(x)


class CDRLResNet(nn.Module):
    """CDRL's energy network: a spectral-norm ResNet conditioned on the log-SNR of its level.

    Architecture (3x3 convolutions, "same" padding; act = leaky ReLU 0.2):

    * level input: integer level ``t`` -> ``1000 * nu(logsnr[t])``
      (:class:`~ebmcmc.nn.LogSNRLevels`) -> sinusoidal embedding of size ``base_channels``
      -> Linear(4 base_channels) -> act -> Linear(4 base_channels) = ``temb``; a
      class-conditional network adds ``Linear(one_hot(label))`` to ``temb``;
    * ``conv_in``: in_channels -> base_channels;
    * per resolution ``i``: ``num_res_blocks`` residual blocks with ``base_channels *
      channel_mult[i]`` channels, then 2x2 average pooling (not after the last). Block:
      act -> conv -> + act(Linear(act(temb))) -> act -> conv times a learned per-channel gain
      (initialised to 1) -> + shortcut (identity, or a 3x3 conv where the channels change);
    * head: ReLU -> sum over height and width -> per-channel product with
      Linear(act(temb)) (no bias) -> sum over channels = ``f``. The module returns ``E = -f``.

    With ``spectral_norm`` every convolution and every linear map of the level (and label)
    embedding is wrapped in PyTorch's spectral norm (one power iteration per forward in
    training mode); the head's linear map is not. Weights keep PyTorch's default
    initialisation. The differences from :class:`~ebmcmc.nn.DRLResNet`: the level enters
    through its log-SNR, the level projection in each block has a second activation, the
    second convolution of a block is an ordinary (spectral-normalised) convolution rather than
    a near-zero one, and the head has no bias.

    Parameter count at the defaults (the paper's CIFAR-10 model: 128 channels, multipliers
    (1, 2, 2, 2), 8 blocks per resolution, 32 px): 34,833,152 (spectral-norm vectors are
    buffers, not parameters; with 10 classes: 34,839,296); the same as the module of the
    paper's code built with these settings.

    Args:
        in_channels: image channels.
        base_channels: width of the first resolution and size of the sinusoidal embedding;
            the level embedding has ``4 * base_channels`` entries.
        channel_mult: width multiplier per resolution.
        num_res_blocks: residual blocks per resolution (8 in the paper).
        image_size: height and width of the inputs (checked at call time).
        spectral_norm: spectral normalisation as described above.
        logsnr: the per-level log-SNRs, shape ``(L,)``; levels ``0..L-1`` are accepted
            (default: ``CDRLSchedule(6).logsnr``, ``L = 7``).
        num_classes: for a class-conditional energy, the number of classes; label
            ``num_classes`` is the null class of classifier-free guidance (``None``:
            unconditional).

    Shapes:
        ``x``: ``(*batch, in_channels, image_size, image_size)``; ``t``: integer levels
        broadcastable to ``batch``, an int, or ``None`` (level 0); ``labels``: integer
        ``batch`` (``None``: the null class); output: ``batch``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = CDRLResNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
        >>> net(torch.randn(2, 3, 32, 32), torch.tensor([0, 5])).shape
        torch.Size([2])
        >>> with torch.device("meta"):
        ...     full = CDRLResNet(spectral_norm=False)
        >>> sum(p.numel() for p in full.parameters())
        34833152
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 8,
        image_size: int = 32,
        spectral_norm: bool = True,
        logsnr: Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.base_channels = _check_positive_int(base_channels, "base_channels", 2)
        self.num_res_blocks = _check_positive_int(num_res_blocks, "num_res_blocks")
        self.image_size = _check_positive_int(image_size, "image_size")
        mult = _check_channel_mult(channel_mult)
        self.channel_mult = mult
        self.num_classes = _check_num_classes(num_classes)
        self.spectral_norm = bool(spectral_norm)
        self.levels = LogSNRLevels(logsnr)
        self.num_levels = self.levels.num_levels
        ch, sn = base_channels, self.spectral_norm
        temb_dim = 4 * ch
        self.temb_map1 = _maybe_sn(nn.Linear(ch, temb_dim), sn)
        self.temb_map2 = _maybe_sn(nn.Linear(temb_dim, temb_dim), sn)
        self.label_map = (
            None
            if self.num_classes is None
            else _maybe_sn(nn.Linear(self.num_classes + 1, temb_dim), sn)
        )
        self.conv_in = _maybe_sn(nn.Conv2d(in_channels, ch, 3, padding=1), sn)
        self.stages = nn.ModuleList()
        c_prev = ch
        for m in mult:
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_Block(c_prev, ch * m, temb_dim, sn))
                c_prev = ch * m
            self.stages.append(blocks)
        self.head = nn.Linear(temb_dim, c_prev, bias=False)

    def forward(
        self, x: Tensor, t: Tensor | int | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """Energy ``E(x, t) = -f(x, t)`` (with ``labels``: of the class-conditional model).

        Args:
            x: images, shape ``(*batch, in_channels, image_size, image_size)``.
            t: integer levels broadcastable to ``batch``, an int, or ``None`` (level 0).
            labels: class indices of shape ``batch`` (class-conditional networks only;
                ``None`` or ``num_classes`` is the null class).

        Returns:
            Energies, shape ``batch``.
        """
        s = self.image_size
        if x.ndim < 4 or tuple(x.shape[-3:]) != (self.in_channels, s, s):
            raise ValueError(
                f"x must have shape (*batch, {self.in_channels}, {s}, {s}), got {tuple(x.shape)}"
            )
        batch_shape = x.shape[:-3]
        level_in = self.levels(t, batch_shape, x.dtype).reshape(-1)
        h = x.reshape(-1, *x.shape[-3:])
        temb = self.temb_map1(sinusoidal_embedding(level_in, self.base_channels, dtype=x.dtype))
        temb = self.temb_map2(_lrelu(temb))
        onehot = one_hot_labels(labels, self.num_classes, batch_shape, x.device, x.dtype)
        if self.label_map is not None and onehot is not None:
            temb = temb + self.label_map(onehot.reshape(-1, onehot.shape[-1]))
        h = self.conv_in(h)
        for i, blocks in enumerate(self.stages):
            for block in cast(nn.ModuleList, blocks):
                h = block(h, temb)
            if i != len(self.stages) - 1:
                h = F.avg_pool2d(h, 2)
        h = torch.relu(h).sum(dim=(2, 3))
        f = (h * self.head(_lrelu(temb))).sum(dim=1)
        return -f.reshape(batch_shape)
