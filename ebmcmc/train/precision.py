"""Faster energy evaluation for training: bf16 autocast and ``torch.compile``, applied to the
model an estimator sees while the trainer keeps the plain module (clean state dicts, EMA and
checkpoints).

* :class:`AutocastEnergy` calls a network (optionally compiled) under bf16 autocast and returns
  float32 energies; with ``sampler_fp32`` the calls whose input requires a gradient (the
  sampler's gradient with respect to ``x``) stay in float32, so only the loss evaluations run
  in bf16. A failed compilation falls back to eager execution with a warning.
* :func:`autocast_wrapper` builds the ``model -> energy`` wrapper once per module.
* :class:`WrappedEstimator` is any estimator called with the wrapped model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..estimators.base import Estimator, LossOutput
from ..nn.cooperative import CooperativeModel

__all__ = ["AutocastEnergy", "autocast_wrapper", "WrappedEstimator"]


class AutocastEnergy(torch.nn.Module):
    """``net(x, t, *args)`` under bf16 autocast (optionally compiled), returning float32.

    Extra positional arguments (class labels) are passed through; any network output (an
    energy, or an initializer's image) comes back in float32.

    Args:
        net: the energy network ``net(x, t) -> (batch,)``.
        bf16: run under ``torch.autocast(dtype=torch.bfloat16)``.
        sampler_fp32: keep calls whose ``x`` requires grad (sampler gradients) in float32.
        compiled: ``torch.compile(net)`` or ``None``.

    Example:
        >>> import torch
        >>> from ebmcmc.nn import TimeMLP
        >>> net = TimeMLP(2, hidden=8, num_levels=2)
        >>> fast = AutocastEnergy(net, bf16=True, sampler_fp32=True)
        >>> fast(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)).dtype
        torch.float32
    """

    def __init__(self, net, bf16: bool, sampler_fp32: bool, compiled=None):
        super().__init__()
        self.net, self.bf16, self.sampler_fp32 = net, bf16, sampler_fp32
        self.compiled = compiled

    def forward(self, x: Tensor, t: Tensor, *args) -> Tensor:
        use_bf16 = self.bf16 and not (self.sampler_fp32 and x.requires_grad)
        fn = self.net if self.compiled is None else self.compiled
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            try:
                out = fn(x, t, *args)
            except Exception as err:  # noqa: BLE001 - any compile failure: fall back
                if self.compiled is None:
                    raise
                warnings.warn(
                    f"torch.compile failed ({type(err).__name__}: {err}); running eagerly",
                    stacklevel=2,
                )
                self.compiled = None
                out = self.net(x, t, *args)
        return out.float()


def autocast_wrapper(
    bf16: bool = False, compile: bool = False, sampler_fp32: bool = True
) -> Callable[[torch.nn.Module], torch.nn.Module]:
    """A ``model -> energy`` function applying bf16 and/or ``torch.compile`` (cached per module).

    With neither option it returns the model itself. A
    :class:`~ebmcmc.nn.CooperativeModel` is wrapped network by network: the result is a
    ``CooperativeModel`` of the wrapped energy and the wrapped initializer (sharing their
    parameters), so a CDRL estimator sees both networks.

    Args:
        bf16: bf16 autocast.
        compile: ``torch.compile`` the model (falls back to eager with a warning).
        sampler_fp32: keep sampler gradients in float32 (see :class:`AutocastEnergy`).

    Example:
        >>> import torch
        >>> wrap = autocast_wrapper()
        >>> m = torch.nn.Linear(2, 1)
        >>> wrap(m) is m
        True
    """
    cache: dict[int, torch.nn.Module] = {}

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        if not (bf16 or compile):
            return model
        if isinstance(model, CooperativeModel):
            if id(model) not in cache:
                cache[id(model)] = CooperativeModel(wrap(model.energy), wrap(model.initializer))
            return cache[id(model)]
        if id(model) not in cache:
            compiled = None
            if compile:
                try:
                    compiled = torch.compile(model)
                except Exception as err:  # noqa: BLE001
                    warnings.warn(
                        f"torch.compile unavailable ({err}); running eagerly", stacklevel=2
                    )
            cache[id(model)] = AutocastEnergy(model, bf16, sampler_fp32, compiled)
        return cache[id(model)]

    return wrap


class WrappedEstimator(Estimator):
    """An estimator whose loss sees ``wrap(model)`` instead of the trainer's module.

    Args:
        inner: any estimator.
        wrap: ``model -> energy`` (e.g. :func:`autocast_wrapper`).

    Example:
        >>> import torch
        >>> from ebmcmc.estimators import ContrastiveDivergence
        >>> from ebmcmc.kernels import Langevin
        >>> est = WrappedEstimator(ContrastiveDivergence(Langevin(0.01), 2), autocast_wrapper())
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0))
        >>> est.loss(m, torch.randn(4, 2), torch.Generator().manual_seed(0)).loss.shape
        torch.Size([])
    """

    def __init__(self, inner: Estimator, wrap: Callable[[torch.nn.Module], torch.nn.Module]):
        self.inner, self.wrap = inner, wrap

    def loss(self, model, batch: Tensor, generator=None, **kwargs) -> LossOutput:
        return self.inner.loss(self.wrap(model), batch, generator, **kwargs)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
