"""Convergence diagnostics: summaries of traces through the ArviZ bridge, nested R-hat,
long-run stability studies and reports.

Example:
    >>> import torch, ebmcmc
    >>> from ebmcmc.kernels import MALA
    >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), MALA(0.8), torch.zeros(4, 2),
    ...                    num_samples=200, generator=0, progress=False)
    >>> list(ebmcmc.diagnostics.summary(tr).columns)
    ['mean', 'sd', 'mcse_mean', 'ess_bulk', 'ess_tail', 'r_hat']
"""

from .report import Finding, Section, check_trace, report, write_report
from .stability import StabilityResult, report_stability, stability
from .summary import nested_rhat, sample_stats_summary, summary

__all__ = [
    "summary",
    "sample_stats_summary",
    "nested_rhat",
    "report",
    "write_report",
    "Section",
    "Finding",
    "check_trace",
    "stability",
    "StabilityResult",
    "report_stability",
]
