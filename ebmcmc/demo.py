"""Deprecated: the demo moved to :mod:`ebmcmc.app.demo` (removed in 0.3)."""

from ._deprecation import warn_deprecated
from .app.demo import run_demo, sample_reference_targets

warn_deprecated("ebmcmc.demo", "ebmcmc.app.demo", stacklevel=2)

__all__ = ["run_demo", "sample_reference_targets"]
