"""ebmcmc: energy-based models and the MCMC that trains and samples them.

The top level re-exports the pieces most scripts need:

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

from . import (
    diagnostics,  # noqa: E402,I001  (diagnostics sits above the driver)
    energy,
    kernels,
    targets,
)
from .adaptation import WindowAdaptation
from .sampling import make_generator, sample
from .trace import Trace

__version__ = "0.1.0"

__all__ = [
    "energy",
    "kernels",
    "targets",
    "diagnostics",
    "sample",
    "make_generator",
    "Trace",
    "WindowAdaptation",
    "__version__",
]
