"""Deprecated: the command line moved to :mod:`ebmcmc.app.cli` (removed in 0.3).

``python -m ebmcmc`` (or the ``ebmcmc`` command) runs it.
"""

import sys

from ._deprecation import warn_deprecated
from .app.cli import build_parser, main

__all__ = ["main", "build_parser"]

if __name__ == "__main__":
    sys.exit(main())
else:
    warn_deprecated("ebmcmc.cli", "ebmcmc.app.cli", stacklevel=2)
