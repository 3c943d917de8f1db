"""``python -m ebmcmc``: the ``ebmcmc`` command line (see :mod:`ebmcmc.app.cli`)."""

import sys

from .app.cli import main

sys.exit(main())
