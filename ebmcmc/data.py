"""Deprecated: the data sets moved to :mod:`ebmcmc.datasets` (removed in ebmcmc 0.3).

``RingsTarget`` is now :class:`ebmcmc.targets.Rings`.
"""

from ._deprecation import warn_deprecated
from .datasets import *  # noqa: F403
from .datasets import __all__ as _datasets_all
from .targets import Rings as RingsTarget

warn_deprecated("ebmcmc.data", "ebmcmc.datasets", stacklevel=2)

__all__ = [*_datasets_all, "RingsTarget"]
