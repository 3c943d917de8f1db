"""The DRL image energy (Gao et al., ICLR 2021): an encoder-only DDPM-style ResNet with
spectral normalization."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _torch_spectral_norm

from .levels import _check_channel_mult, _check_positive_int, _levels, sinusoidal_embedding

__all__ = ["DRLResNet"]


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def _ddpm_init_(module: nn.Conv2d | nn.Linear, scale: float = 1.0) -> None:
    """DDPM's initializer: variance scaling, fan_avg, uniform; biases zero.

    ``scale = 0`` is DDPM's "near-zero" initialization (it uses ``1e-10``).
    """
    gain = math.sqrt(1e-10 if scale == 0 else scale)
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class _SpectralNormAtMostOne(nn.Module):
    """Parametrization ``W -> W / max(sigma(W), 1)``, ``sigma`` by power iteration.

    DRL applies this "lower-bounded" spectral norm to the near-zero-initialized second conv of
    each residual block: an ordinary spectral norm would rescale that conv to unit norm and undo
    the near-zero initialization. Like PyTorch's spectral norm, ``u`` and ``v`` are buffers,
    refined by ``n_power_iterations`` steps per forward in training mode only.
    """

    _u: Tensor  # buffers, registered in __init__
    _v: Tensor

    def __init__(self, weight: Tensor, n_power_iterations: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        w = weight.detach().flatten(1)
        u = F.normalize(w.new_empty(w.shape[0]).normal_(), dim=0, eps=eps)
        v = F.normalize(w.new_empty(w.shape[1]).normal_(), dim=0, eps=eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        if w.device.type != "meta":  # nothing to compute on meta; skip the (slow) meta ops
            self._power_method(w, 15)

    @torch.no_grad()
    def _power_method(self, w: Tensor, n: int) -> None:
        for _ in range(n):
            self._v.copy_(F.normalize(torch.mv(w.t(), self._u), dim=0, eps=self.eps))
            self._u.copy_(F.normalize(torch.mv(w, self._v), dim=0, eps=self.eps))

    def forward(self, weight: Tensor) -> Tensor:
        w = weight.flatten(1)
        if self.training:
            self._power_method(w.detach(), self.n_power_iterations)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.dot(u, torch.mv(w, v))
        return weight / torch.clamp(sigma, min=1.0)


def _conv3x3(c_in: int, c_out: int, sn: str | None, scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    _ddpm_init_(conv, scale)
    return _apply_sn(conv, sn)


def _dense(d_in: int, d_out: int, sn: str | None) -> nn.Linear:
    lin = nn.Linear(d_in, d_out)
    _ddpm_init_(lin)
    return _apply_sn(lin, sn)


def _apply_sn(module, sn: str | None):
    if sn == "full":
        return _torch_spectral_norm(module, n_power_iterations=1)
    if sn == "at_most_one":
        parametrize.register_parametrization(
            module, "weight", _SpectralNormAtMostOne(module.weight, n_power_iterations=1)
        )
    return module


class _ResBlock(nn.Module):
    """act -> conv3x3 -> + Dense(act(temb)) -> act -> dropout -> conv3x3 * gain; + shortcut."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, sn: bool) -> None:
        super().__init__()
        full = "full" if sn else None
        self.conv1 = _conv3x3(c_in, c_out, full)
        self.temb_proj = _dense(temb_dim, c_out, full)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(c_out, c_out, "at_most_one" if sn else None, scale=0.0)
        self.gain = nn.Parameter(torch.ones(c_out))
        self.shortcut = _conv3x3(c_in, c_out, full) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb_act: Tensor) -> Tensor:
        h = self.conv1(_lrelu(x))
        h = h + self.temb_proj(temb_act)[:, :, None, None]
        h = self.conv2(self.dropout(_lrelu(h))) * self.gain[:, None, None]
        return self.shortcut(x) + h


class DRLResNet(nn.Module):
    """The DRL image energy: an encoder-only DDPM ResNet with spectral norm (Gao et al., 2021).

    Architecture (all convs 3x3, stride 1, "same" padding; act = leaky ReLU 0.2):

    * level embedding: ``sinusoidal_embedding(t, base_channels)`` -> Dense(4 base_channels)
      -> act -> Dense(4 base_channels) = ``temb`` (128 -> 512 -> 512 at the defaults);
    * ``conv_in``: in_channels -> base_channels;
    * for each resolution ``i`` (``len(channel_mult)`` of them), ``num_res_blocks`` residual
      blocks with ``base_channels * channel_mult[i]`` output channels, then 2x2 average pooling
      (except after the last resolution). Block: act -> conv -> + Dense(act(temb)) -> act ->
      dropout -> conv (near-zero init, then times a learned per-channel gain initialized to
      1); the shortcut is the identity, or a 3x3 conv where the channel count changes (the
      first block of a resolution whose multiplier differs from the previous one);
    * head: ReLU -> sum over pixels -> dot product with Dense(act(temb)) -> scalar ``f``.

    The module returns ``E = -f`` (DRL's network output ``f`` is a negative energy).

    Spectral norm (``spectral_norm=True``, as in DRL): every conv and Dense except the head's
    Dense is wrapped in :func:`torch.nn.utils.parametrizations.spectral_norm` with one power
    iteration per forward (in training mode, hence also inside every Langevin step). The
    near-zero-initialized second conv of each block instead gets DRL's lower-bounded variant,
    ``W / max(sigma(W), 1)``: a plain spectral norm would rescale it to unit norm and undo the
    near-zero initialization. Weights use DDPM's initializer (variance scaling, fan_avg,
    uniform; biases zero). Spectral-norm vectors are buffers and not counted as parameters.
    Building the full model on the ``meta`` device with spectral norm takes a few seconds,
    since PyTorch runs 15 power iterations per layer when it registers the spectral norm.

    Parameter count, defaults (128 channels, multipliers (1, 2, 2, 2), 8 blocks per
    resolution, 32 px): 34,833,408 (the paper's "34.8M"), counting ``conv_in`` (3,584), the
    three level-embedding Dense layers (66,048 + 262,656 + 131,328), 32 blocks (each two
    convs, one Dense, a gain; 2.89M at 128 channels, 1.31M at 256) and the one conv shortcut
    (128 -> 256, 295,168). At 64 px with multipliers (1, 2, 2, 2, 4) it is about 74.8M.

    Args:
        in_channels: image channels.
        base_channels: width of the first resolution; the sinusoidal embedding has this size
            and the level embedding ``4 * base_channels`` (as in the DDPM/DRL code).
        channel_mult: width multiplier per resolution; ``None`` picks DRL's choice for
            ``image_size``: ``(1, 2, 2, 2)`` at 32 px, ``(1, 2, 2, 2, 4)`` at 64 px (other sizes
            need an explicit value).
        num_res_blocks: residual blocks per resolution (8 for CIFAR-10).
        num_levels: levels accepted, ``t`` in ``{0..num_levels-1}`` (DRL with ``T`` levels
            calls the network at ``t = 0..T-1``).
        spectral_norm: apply spectral normalization as described above.
        dropout: dropout rate inside the blocks.
        image_size: height and width of the inputs (checked at call time). Odd sizes at a
            pooling step are pooled with a partial last window, like TensorFlow's "SAME".

    Shapes:
        ``x``: ``(*batch, in_channels, image_size, image_size)``; ``t``: integer tensor
        broadcastable to ``batch`` (usually ``(batch,)``), an int, or ``None`` (level 0);
        output: ``batch``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = DRLResNet(base_channels=8, num_res_blocks=1, image_size=32)
        >>> net(torch.randn(2, 3, 32, 32), torch.tensor([0, 5])).shape
        torch.Size([2])
        >>> with torch.device("meta"):  # no memory allocated
        ...     full = DRLResNet(spectral_norm=False)
        >>> sum(p.numel() for p in full.parameters())
        34833408
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: Sequence[int] | None = None,
        num_res_blocks: int = 8,
        num_levels: int = 6,
        spectral_norm: bool = True,
        dropout: float = 0.0,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.base_channels = _check_positive_int(base_channels, "base_channels")
        self.num_res_blocks = _check_positive_int(num_res_blocks, "num_res_blocks")
        self.num_levels = _check_positive_int(num_levels, "num_levels")
        self.image_size = _check_positive_int(image_size, "image_size")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if channel_mult is None:
            defaults = {32: (1, 2, 2, 2), 64: (1, 2, 2, 2, 4)}
            if image_size not in defaults:
                raise ValueError(
                    f"channel_mult must be given for image_size={image_size} (defaults exist "
                    "for 32 and 64)"
                )
            channel_mult = defaults[image_size]
        self.channel_mult = channel_mult = _check_channel_mult(channel_mult)
        self.spectral_norm = bool(spectral_norm)
        full = "full" if spectral_norm else None
        ch = base_channels
        temb_dim = 4 * ch

        self.temb_dense0 = _dense(ch, temb_dim, full)
        self.temb_dense1 = _dense(temb_dim, temb_dim, full)
        self.conv_in = _conv3x3(in_channels, ch, full)
        self.levels = nn.ModuleList()
        c_prev = ch
        for mult in channel_mult:
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(c_prev, ch * mult, temb_dim, dropout, spectral_norm))
                c_prev = ch * mult
            self.levels.append(blocks)
        self.head_dense = _dense(temb_dim, c_prev, None)

    def forward(self, x: Tensor, t: Tensor | int | None = None) -> Tensor:
        """Energy ``E(x, t) = -f(x, t)``.

        Args:
            x: images, shape ``(*batch, in_channels, image_size, image_size)``.
            t: integer levels broadcastable to ``batch``, an int, or ``None`` (level 0).

        Returns:
            Energies, shape ``batch``.
        """
        s = self.image_size
        if x.ndim < 4 or tuple(x.shape[-3:]) != (self.in_channels, s, s):
            raise ValueError(
                f"x must have shape (*batch, {self.in_channels}, {s}, {s}), got {tuple(x.shape)}"
            )
        batch_shape = x.shape[:-3]
        t = _levels(t, batch_shape, self.num_levels, x.device).reshape(-1)
        h = x.reshape(-1, *x.shape[-3:])

        temb = self.temb_dense0(sinusoidal_embedding(t, self.base_channels, dtype=x.dtype))
        temb = self.temb_dense1(_lrelu(temb))
        temb_act = _lrelu(temb)

        h = self.conv_in(h)
        for i, blocks in enumerate(self.levels):
            for block in cast(nn.ModuleList, blocks):  # built as a ModuleList in __init__
                h = block(h, temb_act)
            if i != len(self.levels) - 1:
                h = F.avg_pool2d(h, 2, ceil_mode=True)
        h = torch.relu(h).sum(dim=(2, 3))
        f = (h * self.head_dense(temb_act)).sum(dim=1)
        return -f.reshape(batch_shape)
