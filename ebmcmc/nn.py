"""Reference energy networks conditioned on a noise level.

Every network here is called as ``model(x, t)`` with ``t`` an integer tensor of levels (one per
example, shape ``batch``) and returns **one energy per example**, shape ``batch``. The sign is
ebmcmc's: the density is proportional to ``exp(-E)``. The papers (DRL, CDRL, DAEBM) write
``f = -E``; where a network reproduces a paper's architecture, its last operation is a
negation so that the module is an energy. Levels are checked on every call (integer dtype,
shape, range ``0..num_levels-1``); the range check reads two numbers back from the device.

* :func:`sinusoidal_embedding`: DDPM's sinusoidal embedding of (integer or real) levels.
* :class:`TimeMLP`: a small MLP energy of flat ``x`` and a level, for 2-D toys on CPU.
* :class:`DRLResNet`: the DRL image energy (Gao et al., ICLR 2021): an encoder-only DDPM-style
  ResNet with spectral normalization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _torch_spectral_norm

__all__ = ["sinusoidal_embedding", "TimeMLP", "LevelScaled", "DRLResNet"]


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


_ACTIVATIONS = {"silu": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


class TimeMLP(nn.Module):
    """A small MLP energy ``E(x, t)`` of flat ``x`` and an integer level ``t``.

    ``h = x``; for each of ``num_layers`` hidden layers ``h = act(W_i h + b_i + c_i(t))``,
    where the shifts ``c_i(t)`` come from ``act(Dense(sinusoidal_embedding(t, time_dim)))``
    through one linear map; then ``E = w . h + b``. With the defaults (``in_features=2``) it
    has about 87k parameters: cheap enough to train on 2-D toys on a CPU.

    Called with ``t=None`` it uses level 0, so ``TimeMLP(d)`` is also a plain energy
    ``model(x)``.

    Args:
        in_features: event size ``d``.
        hidden: width of the hidden layers.
        num_layers: number of hidden layers (``>= 1``).
        num_levels: levels accepted, ``t`` in ``{0..num_levels-1}``.
        time_dim: size of the sinusoidal level embedding.
        activation: ``"silu"`` or ``"leaky_relu"`` (slope 0.2).
        fourier_features: if > 0, the input is first mapped to
            ``[x, sin(2 pi B x), cos(2 pi B x)]`` with a fixed random
            ``B ~ N(0, fourier_scale^2)`` of shape ``(fourier_features, in_features)``
            (Tancik et al. 2020). An MLP learns high-frequency structure (eight modes around
            a ring) slowly from raw coordinates; these features remove that spectral bias.
        fourier_scale: standard deviation of ``B``, in cycles per unit of ``x``.
        fourier_seed: seed of ``B`` (``B`` is a buffer, saved with the weights).
        zero_output: initialise the output layer's weights to zero, so training starts
            from a flat energy (recommended with Fourier features: their large input
            gradients would otherwise make the first Langevin steps diverge).

    Shapes:
        ``x``: ``(*batch, in_features)``; ``t``: integer tensor broadcastable to ``batch``
        (usually ``(batch,)``), a Python int, or ``None``; output: ``batch``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = TimeMLP(2, hidden=32, num_levels=6)
        >>> model(torch.randn(5, 2), torch.tensor([0, 1, 2, 3, 5])).shape
        torch.Size([5])
        >>> model(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 128,
        num_layers: int = 3,
        num_levels: int = 6,
        time_dim: int = 32,
        activation: str = "silu",
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        fourier_seed: int = 0,
        zero_output: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int(in_features, "in_features")
        self.fourier_features = _check_positive_int(fourier_features, "fourier_features", 0)
        if not (isinstance(fourier_scale, (int, float)) and math.isfinite(fourier_scale)
                and fourier_scale > 0):  # fmt: skip
            raise ValueError(f"fourier_scale must be finite and > 0, got {fourier_scale!r}")
        b = None  # a saved buffer only when used (checkpoints without features stay valid)
        if self.fourier_features:
            g = torch.Generator().manual_seed(int(fourier_seed))
            b = float(fourier_scale) * torch.randn(
                self.fourier_features, self.in_features, generator=g
            )
        self.register_buffer("fourier_b", b)
        self.hidden = _check_positive_int(hidden, "hidden")
        self.num_layers = _check_positive_int(num_layers, "num_layers")
        self.num_levels = _check_positive_int(num_levels, "num_levels")
        self.time_dim = _check_positive_int(time_dim, "time_dim", 2)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = activation
        self.act = _ACTIVATIONS[activation]()
        self.time_mlp = nn.Linear(time_dim, hidden)
        self.time_shift = nn.Linear(hidden, hidden * num_layers)
        width_in = in_features + 2 * self.fourier_features
        self.layers = nn.ModuleList(
            [nn.Linear(width_in if i == 0 else hidden, hidden) for i in range(num_layers)]
        )
        self.out = nn.Linear(hidden, 1)
        if zero_output:
            nn.init.zeros_(self.out.weight)

    def forward(self, x: Tensor, t: Tensor | int | None = None) -> Tensor:
        """Energy of ``x`` at level ``t``.

        Args:
            x: points, shape ``(*batch, in_features)``.
            t: integer levels broadcastable to ``batch``, an int, or ``None`` (level 0).

        Returns:
            Energies, shape ``batch``.
        """
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (*batch, {self.in_features}), got {tuple(x.shape)}"
            )
        batch_shape = x.shape[:-1]
        t = _levels(t, batch_shape, self.num_levels, x.device)
        temb = self.act(self.time_mlp(sinusoidal_embedding(t, self.time_dim, dtype=x.dtype)))
        shifts = self.time_shift(temb).chunk(self.num_layers, dim=-1)
        h = x
        if self.fourier_features:
            proj = (2 * math.pi) * (x @ self.fourier_b.to(x.dtype).T)
            h = torch.cat([x, torch.sin(proj), torch.cos(proj)], dim=-1)
        for layer, shift in zip(self.layers, shifts, strict=True):
            h = self.act(layer(h) + shift)
        return self.out(h).squeeze(-1)


# ----------------------------------------------------------------------------- DRL ResNet


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
        >>> _ = torch.manual_seed(0)
        >>> net = TimeMLP(2, hidden=16, num_levels=3)
        >>> model = LevelScaled(net, torch.tensor([1e-3, 1e-2, 1e-1]))
        >>> t = torch.tensor([0, 2])
        >>> x = torch.randn(2, 2)
        >>> torch.allclose(model(x, t), net(x, t) * torch.tensor([1e-3, 1e-1]))
        True
    """

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
        channel_mult = tuple(channel_mult)
        if not channel_mult or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in channel_mult
        ):
            raise ValueError(
                f"channel_mult must be a non-empty sequence of ints >= 1, got {channel_mult!r}"
            )
        self.channel_mult = channel_mult
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
            for block in blocks:
                h = block(h, temb_act)
            if i != len(self.levels) - 1:
                h = F.avg_pool2d(h, 2, ceil_mode=True)
        h = torch.relu(h).sum(dim=(2, 3))
        f = (h * self.head_dense(temb_act)).sum(dim=1)
        return -f.reshape(batch_shape)
