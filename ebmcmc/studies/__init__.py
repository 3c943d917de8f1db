"""Studies that run kernels and trained models far and judge what they see.

:func:`stability` is the long-run stability study of a trained EBM's sampler: chains from data
and from noise run 100x (or more) past the training horizon, judged against
:class:`StabilityCriteria`; :func:`report_stability` writes the study as a report.

Example:
    >>> import torch
    >>> from ebmcmc.kernels import MALA
    >>> from ebmcmc.studies import StabilityCriteria, stability
    >>> res = stability(lambda x: 0.5 * (x**2).sum(-1), MALA(0.9),
    ...                 {"a": torch.zeros(16, 2), "b": torch.ones(16, 2)}, 200,
    ...                 criteria=StabilityCriteria(window=100))
    >>> sorted(res.curves)
    ['a', 'b']
"""

from .judge import StabilityCriteria
from .report import report_stability
from .runner import CURVE_COLUMNS
from .stability import StabilityResult, checkpoints_for, stability

__all__ = [
    "stability",
    "StabilityCriteria",
    "StabilityResult",
    "report_stability",
    "checkpoints_for",
    "CURVE_COLUMNS",
]
