"""What every training estimator returns, and the interface it follows."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["LossOutput", "Estimator"]


@dataclass
class LossOutput:
    """The result of ``estimator.loss(model, batch, generator)``.

    Attributes:
        loss: scalar tensor to call ``backward()`` on (gradients reach the model's
            parameters only through the energies of positives and negatives, never through
            the sampler).
        stats: floats worth logging (energies of positives/negatives, acceptance, …).
        negatives: the samples the loss contrasted the data with, detached, in data space,
            shape ``(batch, *event)``.

    Example:
        >>> import torch
        >>> out = LossOutput(torch.tensor(0.5), {"e_pos": 1.0}, torch.zeros(4, 2))
        >>> float(out.loss)
        0.5
    """

    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)
    negatives: Tensor | None = None


class Estimator:
    """Base class: an object with ``loss(model, batch, generator=None) -> LossOutput``.

    Estimators with state that must survive a checkpoint (a replay buffer) implement
    ``state_dict()`` / ``load_state_dict(d)``; the default has none.

    Example:
        >>> Estimator().state_dict()
        {}
    """

    def loss(self, model, batch: Tensor, generator=None) -> LossOutput:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load, got {sorted(state)}")
