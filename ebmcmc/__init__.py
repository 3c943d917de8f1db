"""ebmcmc: energy-based models and the MCMC that trains and samples them.

The top level re-exports the pieces most scripts need: :func:`sample`, :class:`Trace`,
:class:`WindowAdaptation`, :func:`make_generator`, and the modules :mod:`ebmcmc.energy`,
:mod:`ebmcmc.kernels` and :mod:`ebmcmc.targets`. ``ebmcmc.diagnostics`` (which loads ArviZ,
xarray, pandas and matplotlib) is imported on first use, so ``import ebmcmc`` and running a
kernel stay light.

Example:
    >>> import torch, ebmcmc
    >>> from ebmcmc.kernels import MALA
    >>> from ebmcmc.targets import Gaussian
    >>> target = Gaussian(torch.zeros(2), torch.eye(2))
    >>> trace = ebmcmc.sample(target, MALA(0.5), torch.zeros(16, 2), num_samples=100,
    ...                       num_warmup=100, generator=0, progress=False)
    >>> trace.draws.shape
    torch.Size([16, 100, 2])
"""

from . import energy, kernels, targets
from ._random import make_generator
from .adaptation import WindowAdaptation
from .sampling import SamplingError, sample
from .trace import Trace

__version__ = "0.2.0"

__all__ = [
    "energy",
    "kernels",
    "targets",
    "diagnostics",
    "sample",
    "SamplingError",
    "make_generator",
    "Trace",
    "WindowAdaptation",
    "__version__",
]


def __getattr__(name: str):
    # heavy subpackages load on first use (``ebmcmc.diagnostics`` pulls in ArviZ and pandas)
    if name == "diagnostics":
        import importlib

        return importlib.import_module(".diagnostics", __name__)
    raise AttributeError(f"module 'ebmcmc' has no attribute {name!r}")
