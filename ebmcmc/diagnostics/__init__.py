"""Convergence diagnostics: summaries of traces through the ArviZ bridge.

Example:
    >>> import torch, ebmcmc
    >>> from ebmcmc.kernels import MALA
    >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), MALA(0.8), torch.zeros(4, 2),
    ...                    num_samples=200, generator=0, progress=False)
    >>> list(ebmcmc.diagnostics.summary(tr).columns)
    ['mean', 'sd', 'mcse_mean', 'ess_bulk', 'ess_tail', 'r_hat']
"""

from .report import check_trace, report
from .summary import summary

__all__ = ["summary", "report", "check_trace"]
