"""Deprecated: the small training set-ups moved to :mod:`ebmcmc.app.setups` (removed in 0.3)."""

from ._deprecation import warn_deprecated
from .app.setups import ESTIMATORS, ToySetup, digits_setup, toy_setup

warn_deprecated("ebmcmc.toy", "ebmcmc.app.setups", stacklevel=2)

__all__ = ["ESTIMATORS", "ToySetup", "toy_setup", "digits_setup"]
