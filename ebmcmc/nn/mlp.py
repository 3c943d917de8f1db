"""A small MLP energy of flat ``x`` and a level, for 2-D toys and small images on CPU."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .levels import _check_positive_int, _levels, sinusoidal_embedding

__all__ = ["TimeMLP"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


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

    fourier_b: Tensor | None  # buffer, registered in __init__

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
        if self.fourier_b is not None:  # set exactly when fourier_features > 0
            proj = (2 * math.pi) * (x @ self.fourier_b.to(x.dtype).T)
            h = torch.cat([x, torch.sin(proj), torch.cos(proj)], dim=-1)
        for layer, shift in zip(self.layers, shifts, strict=True):
            h = self.act(layer(h) + shift)
        return self.out(h).squeeze(-1)
