"""The two networks of cooperative DRL (CDRL) as one module, and small MLP versions of them for
2-D toys and flattened images."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from .levels import _check_num_classes, _check_positive_int, sinusoidal_embedding
from .logsnr import LogSNRLevels, one_hot_labels

__all__ = ["CooperativeModel", "CDRLEnergyMLP", "CDRLInitializerMLP"]


def _call(net, x: Tensor, t, labels: Tensor | None) -> Tensor:
    """``net(x, t)``, or ``net(x, t, labels)`` when labels are given (so unconditional
    networks such as :class:`~ebmcmc.nn.TimeMLP` serve unchanged)."""
    return net(x, t) if labels is None else net(x, t, labels)


class CooperativeModel(nn.Module):
    """CDRL's pair of networks in one module: an energy and an initializer.

    ``energy(y, t[, labels])`` returns one energy per example at level ``t`` (the lower level
    of a recovery pair); ``initializer(x, t[, labels])`` maps ``x_t`` at the upper level ``t``
    to the mean of its proposal for the rescaled lower level (an output of ``x``'s shape).
    The module's own ``forward`` is the energy, so a ``CooperativeModel`` is also an energy
    ``model(x, t)``. Its parameters are named ``energy.*`` and ``initializer.*``, which is how
    :class:`~ebmcmc.train.TrainConfig`'s parameter groups give each network its own learning
    rate.

    Args:
        energy: the energy network (e.g. :class:`~ebmcmc.nn.CDRLResNet`,
            :class:`~ebmcmc.nn.CDRLEnergyMLP` or :class:`~ebmcmc.nn.TimeMLP`).
        initializer: the initializer (e.g. :class:`~ebmcmc.nn.CDRLUNet`,
            :class:`~ebmcmc.nn.CDRLInitializerMLP`).

    Example:
        >>> import torch
        >>> m = CooperativeModel(CDRLEnergyMLP(2, hidden=8), CDRLInitializerMLP(2, hidden=8))
        >>> x, t = torch.zeros(3, 2), torch.tensor([0, 1, 5])
        >>> m(x, t).shape, m.propose(x, t + 1).shape
        (torch.Size([3]), torch.Size([3, 2]))
        >>> sorted({name.split(".")[0] for name, _ in m.named_parameters()})
        ['energy', 'initializer']
    """

    def __init__(self, energy: nn.Module, initializer: nn.Module) -> None:
        super().__init__()
        if not isinstance(energy, nn.Module) or not isinstance(initializer, nn.Module):
            raise TypeError("energy and initializer must be torch.nn.Module instances")
        self.energy = energy
        self.initializer = initializer

    def forward(self, x: Tensor, t=None, labels: Tensor | None = None) -> Tensor:
        """The energy network's output ``energy(x, t[, labels])``, shape ``batch``."""
        return _call(self.energy, x, t, labels)

    def propose(self, x: Tensor, t, labels: Tensor | None = None) -> Tensor:
        """The initializer's output ``initializer(x, t[, labels])``, shape of ``x``."""
        return _call(self.initializer, x, t, labels)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def _maybe_sn(module: nn.Module, on: bool) -> nn.Module:
    return _sn(module, n_power_iterations=1) if on else module


def _check_features(in_features: int, x: Tensor) -> None:
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (*batch, {in_features}), got {tuple(x.shape)}")


class _EnergyBlock(nn.Module):
    def __init__(self, width: int, temb_dim: int, sn: bool) -> None:
        super().__init__()
        self.lin1 = _maybe_sn(nn.Linear(width, width), sn)
        self.lin2 = _maybe_sn(nn.Linear(width, width), sn)
        self.temb_map = _maybe_sn(nn.Linear(temb_dim, width), sn)
        self.gain = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.lin1(_lrelu(x)) + _lrelu(self.temb_map(_lrelu(temb)))
        return x + self.lin2(_lrelu(h)) * self.gain


class CDRLEnergyMLP(nn.Module):
    """A small CDRL energy for flat data: :class:`~ebmcmc.nn.CDRLResNet` with linear layers.

    ``h = Linear(x)``; ``num_blocks`` residual blocks ``h + Linear(act(Linear(act(h)) +
    act(Linear(act(temb))))) * gain`` (act = leaky ReLU 0.2); ``f = sum_c relu(h)_c
    Linear(act(temb))_c``; the module returns ``E = -f``. The level enters as in
    :class:`~ebmcmc.nn.CDRLResNet`: ``1000 * nu(logsnr[t])``, a sinusoidal embedding of size
    ``hidden`` and two linear maps to ``4 * hidden``. With ``spectral_norm`` every linear map
    but the head's is spectrally normalised.

    Args:
        in_features: event size ``d``.
        hidden: width.
        num_blocks: residual blocks.
        spectral_norm: spectral normalisation (one power iteration per training forward).
        logsnr: per-level log-SNRs (default ``CDRLSchedule(6).logsnr``).
        num_classes: class-conditional energy with this many classes (``num_classes`` is the
            null label); ``None``: unconditional.

    Shapes:
        ``x``: ``(*batch, in_features)``; ``t``: integer, broadcastable to ``batch``;
        ``labels``: ``batch`` or ``None``; output ``batch``.

    Example:
        >>> import torch
        >>> net = CDRLEnergyMLP(2, hidden=16)
        >>> net(torch.randn(5, 2), torch.tensor([0, 1, 2, 3, 5])).shape
        torch.Size([5])
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 128,
        num_blocks: int = 2,
        spectral_norm: bool = True,
        logsnr: Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int(in_features, "in_features")
        self.hidden = _check_positive_int(hidden, "hidden", 2)
        self.num_blocks = _check_positive_int(num_blocks, "num_blocks")
        self.num_classes = _check_num_classes(num_classes)
        self.levels = LogSNRLevels(logsnr)
        self.num_levels = self.levels.num_levels
        sn = bool(spectral_norm)
        temb_dim = 4 * hidden
        self.temb_map1 = _maybe_sn(nn.Linear(hidden, temb_dim), sn)
        self.temb_map2 = _maybe_sn(nn.Linear(temb_dim, temb_dim), sn)
        self.label_map = (
            None
            if self.num_classes is None
            else _maybe_sn(nn.Linear(self.num_classes + 1, temb_dim), sn)
        )
        self.lin_in = _maybe_sn(nn.Linear(in_features, hidden), sn)
        self.blocks = nn.ModuleList(_EnergyBlock(hidden, temb_dim, sn) for _ in range(num_blocks))
        self.head = nn.Linear(temb_dim, hidden, bias=False)

    def forward(self, x: Tensor, t=None, labels: Tensor | None = None) -> Tensor:
        """Energies ``E(x, t)``, shape ``batch``."""
        _check_features(self.in_features, x)
        batch_shape = x.shape[:-1]
        level_in = self.levels(t, batch_shape, x.dtype)
        temb = self.temb_map1(sinusoidal_embedding(level_in, self.hidden, dtype=x.dtype))
        temb = self.temb_map2(_lrelu(temb))
        onehot = one_hot_labels(labels, self.num_classes, batch_shape, x.device, x.dtype)
        if self.label_map is not None and onehot is not None:
            temb = temb + self.label_map(onehot)
        h = self.lin_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return -(torch.relu(h) * self.head(_lrelu(temb))).sum(-1)


class _InitBlock(nn.Module):
    def __init__(self, width: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, width, eps=1e-6)
        self.norm2 = nn.GroupNorm(groups, width, eps=1e-6)
        self.lin1 = nn.Linear(width, width)
        self.lin2 = nn.Linear(width, width)
        nn.init.zeros_(self.lin2.weight)
        self.dropout = nn.Dropout(dropout)
        self.film = nn.Linear(temb_dim, 2 * width)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.lin1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(temb)).chunk(2, dim=-1)
        h = F.silu(self.norm2(h) * (1.0 + scale) + shift)
        return x + self.lin2(self.dropout(h))


class CDRLInitializerMLP(nn.Module):
    """A small CDRL initializer for flat data: :class:`~ebmcmc.nn.CDRLUNet`'s blocks without
    the spatial structure, with the residual output ``x + net(x, t)``.

    ``h = Linear(x)``; ``num_blocks`` residual blocks (GroupNorm -> SiLU -> Linear ->
    GroupNorm scaled by ``1 + scale`` and shifted by ``shift`` from ``Linear(SiLU(temb))`` ->
    SiLU -> dropout -> Linear with zero weights); ``net = Linear(SiLU(h))`` with zero weights
    and no bias, so the untrained initializer is exactly the identity. The level embedding is
    ``1000 * nu(logsnr[t])`` -> sinusoidal (size ``hidden``) -> Linear -> SiLU -> Linear
    (``4 * hidden``), plus ``Linear(one_hot(label))`` for a class-conditional initializer.

    Args:
        in_features: event size ``d``.
        hidden: width (divisible by ``num_groups`` after the reduction below).
        num_blocks: residual blocks.
        dropout: dropout rate inside the blocks.
        num_groups: GroupNorm groups (reduced to a divisor of ``hidden``).
        logsnr: per-level log-SNRs (default ``CDRLSchedule(6).logsnr``).
        num_classes: class-conditional initializer (``num_classes`` is the null label).

    Shapes:
        ``x``: ``(batch, in_features)``; ``t``: integer ``(batch,)``; output like ``x``.

    Example:
        >>> import torch
        >>> net = CDRLInitializerMLP(2, hidden=16)
        >>> x = torch.randn(4, 2)
        >>> torch.equal(net(x, torch.tensor([1, 2, 3, 6])), x)  # the identity until trained
        True
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 128,
        num_blocks: int = 2,
        dropout: float = 0.0,
        num_groups: int = 32,
        logsnr: Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int(in_features, "in_features")
        self.hidden = _check_positive_int(hidden, "hidden", 2)
        self.num_blocks = _check_positive_int(num_blocks, "num_blocks")
        _check_positive_int(num_groups, "num_groups")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = _check_num_classes(num_classes)
        groups = min(num_groups, hidden)
        while hidden % groups:
            groups -= 1
        self.levels = LogSNRLevels(logsnr)
        self.num_levels = self.levels.num_levels
        temb_dim = 4 * hidden
        self.temb = nn.Sequential(nn.Linear(hidden, temb_dim), nn.SiLU(),
                                  nn.Linear(temb_dim, temb_dim))  # fmt: skip
        self.label_map = (
            None if self.num_classes is None else nn.Linear(self.num_classes + 1, temb_dim)
        )
        self.lin_in = nn.Linear(in_features, hidden)
        self.blocks = nn.ModuleList(
            _InitBlock(hidden, temb_dim, groups, dropout) for _ in range(num_blocks)
        )
        self.lin_out = nn.Linear(hidden, in_features, bias=False)
        nn.init.zeros_(self.lin_out.weight)

    def forward(self, x: Tensor, t=None, labels: Tensor | None = None) -> Tensor:
        """``x + net(x, t)``, shape of ``x``."""
        _check_features(self.in_features, x)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (batch, {self.in_features}), got {tuple(x.shape)}")
        batch_shape = x.shape[:1]
        level_in = self.levels(t, batch_shape, x.dtype)
        temb = self.temb(sinusoidal_embedding(level_in, self.hidden, dtype=x.dtype))
        onehot = one_hot_labels(labels, self.num_classes, batch_shape, x.device, x.dtype)
        if self.label_map is not None and onehot is not None:
            temb = temb + self.label_map(onehot)
        h = self.lin_in(x)
        for block in cast(nn.ModuleList, self.blocks):
            h = block(h, temb)
        return x + self.lin_out(F.silu(h))
