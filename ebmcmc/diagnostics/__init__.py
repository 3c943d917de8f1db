"""Convergence diagnostics: summaries of traces through the ArviZ bridge, nested R-hat, and
reports people read.

ArviZ, xarray, pandas and matplotlib load with this package, not with ``import ebmcmc``.

Example:
    >>> import torch, ebmcmc
    >>> from ebmcmc.kernels import MALA
    >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), MALA(0.8), torch.zeros(4, 2),
    ...                    num_samples=200, generator=0, progress=False)
    >>> list(ebmcmc.diagnostics.summary(tr).columns)
    ['mean', 'sd', 'mcse_mean', 'ess_bulk', 'ess_tail', 'r_hat']
"""

from .report import Finding, Section, check_trace, report, write_report
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
]

_MOVED = {"stability": "stability", "StabilityResult": "StabilityResult",
          "report_stability": "report_stability"}  # fmt: skip


def __getattr__(name: str):
    # 0.1 names of the long-run study, now in ebmcmc.studies (removed in 0.3)
    if name in _MOVED:
        from .. import studies  # deprecated spelling only
        from .._deprecation import warn_deprecated

        warn_deprecated(f"ebmcmc.diagnostics.{name}", f"ebmcmc.studies.{_MOVED[name]}")
        return getattr(studies, _MOVED[name])
    raise AttributeError(f"module 'ebmcmc.diagnostics' has no attribute {name!r}")
