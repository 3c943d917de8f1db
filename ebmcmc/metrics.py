"""Deprecated: the sample-quality figures moved to :mod:`ebmcmc.evaluation` (removed in 0.3)."""

from ._deprecation import warn_deprecated
from .evaluation import *  # noqa: F403
from .evaluation import __all__  # noqa: F401

warn_deprecated("ebmcmc.metrics", "ebmcmc.evaluation", stacklevel=2)
