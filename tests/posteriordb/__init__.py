"""A few posteriordb posteriors as Pyro models, with their data and reference summaries stored
here (nothing is downloaded).

``load(name)`` gives ``(model, args, reference)``: ``ebmcmc.energy.from_pyro(model, *args)``
is the posterior's energy on Stan's unconstrained space, and ``reference`` holds posteriordb's
reference-posterior summary (10 chains x 1,000 thinned draws of Stan's NUTS) under
posteriordb's names, with ``reference.quantities`` mapping constrained site values to those
quantities.

Importing: pytest puts ``tests/`` on ``sys.path`` for the test files there, so tests write
``from posteriordb import load``. From elsewhere (benchmarks, scripts) put ``tests/`` on the path
first::

    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # from benchmarks/
    from posteriordb import NAMES, load

Stored files, one per posterior: ``tests/posteriordb/<posterior>.json`` with the posteriordb
commit and paths it came from, the Stan code, the data, and per reference quantity the mean,
sd, 5/50/95 % quantiles, MCSE of the sd, bulk ESS and R-hat, plus 500 of the reference draws
(``build.py`` regenerates the files from a posteriordb git snapshot). The Pyro ports and their
site layout: ``models.py``.

Example:
    >>> import torch
    >>> from ebmcmc.energy import from_pyro
    >>> model, args, ref = load("eight_schools-eight_schools_noncentered")
    >>> energy = from_pyro(model, *args)
    >>> energy.sites, energy.event_shape
    (['theta_trans', 'mu', 'tau'], (10,))
    >>> ref.names[:2], ref.n_draws
    (['theta[1]', 'theta[2]'], 10000)
    >>> z = energy.initial_position(4, torch.Generator().manual_seed(0))
    >>> ref.quantities(energy.constrain(z)).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .models import MODELS, QUANTITIES

__all__ = ["NAMES", "Reference", "load", "record"]

HERE = Path(__file__).resolve().parent

#: the stored posteriors, in the order of ``models.MODELS``
NAMES: list[str] = list(MODELS)


@dataclass(frozen=True)
class Reference:
    """posteriordb's reference posterior of one posterior, summarised per quantity.

    Attributes (arrays of shape ``(P,)`` over the ``P`` quantities, in ``names`` order):
        names: posteriordb's names, e.g. ``"theta[1]"`` (1-based, as in Stan).
        mean, sd: the reference draws' mean and standard deviation.
        q05, q50, q95: their 5, 50 and 95 % quantiles.
        mcse_sd: ArviZ's Monte Carlo standard error of ``sd`` on the reference chains.
        ess_bulk, r_hat: the reference run's own diagnostics (posteriordb's info file).
        n_draws: number of reference draws (10,000: near-independent, thinned).
        draws: ``(500, P)``, the first 50 draws of each of the 10 reference chains.
        mcse: ``sd / sqrt(n_draws)``, the standard error of ``mean`` treating the draws as
            independent.
        quantities: ``f(values) -> (*batch, P)`` from the model's constrained site values
            ``{site: (*batch, *site_shape)}`` (``energy.constrain(z)``) to the quantities.

    Example:
        >>> ref = load("kidiq-kidscore_momiq")[2]
        >>> ref.names, ref.mean.shape, ref.draws.shape
        (['beta[1]', 'beta[2]', 'sigma'], (3,), (500, 3))
    """

    name: str
    names: list[str]
    mean: np.ndarray
    sd: np.ndarray
    q05: np.ndarray
    q50: np.ndarray
    q95: np.ndarray
    mcse_sd: np.ndarray
    ess_bulk: np.ndarray
    r_hat: np.ndarray
    n_draws: int
    draws: np.ndarray
    quantities: Callable[[dict[str, Tensor]], Tensor] = field(repr=False)

    @property
    def mcse(self) -> np.ndarray:
        return self.sd / np.sqrt(self.n_draws)

    def errors(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """Our draws ``q`` ``(chain, draw, P)`` of the quantities against this reference: the
        errors of the means and of the sds in combined standard errors (ours: ArviZ's MCSE;
        the reference's: ``mcse``, ``mcse_sd``), each ``(P,)``, and our summary table
        (``ebmcmc.diagnostics.summary``: R-hat, ESS, ... per quantity)."""
        from ebmcmc import arviz_bridge
        from ebmcmc.diagnostics import summary

        draws = {"q": q}
        ours = summary(draws)
        mcse_sd = np.ravel(arviz_bridge.mcse(draws, "sd")["q"].values)
        z_mean = (ours["mean"].values - self.mean) / np.sqrt(
            ours["mcse_mean"].values ** 2 + self.mcse**2
        )
        z_sd = (ours["sd"].values - self.sd) / np.sqrt(mcse_sd**2 + self.mcse_sd**2)
        return z_mean, z_sd, ours


@cache
def record(name: str) -> dict:
    """The stored JSON record of posterior ``name`` (see the module docstring).

    Example:
        >>> record("sblrc-blr")["source"]["commit"][:7]
        '28f8d3d'
    """
    if name not in MODELS:
        raise KeyError(f"unknown posterior {name!r}; stored ones: {NAMES}")
    return json.loads((HERE / f"{name}.json").read_text())


def _arg(value, dtype: torch.dtype):
    return value if isinstance(value, int) else torch.tensor(value, dtype=dtype)


def load(
    name: str, dtype: torch.dtype = torch.float64
) -> tuple[Callable[..., None], tuple, Reference]:
    """The Pyro model of posteriordb posterior ``name``, its arguments and its reference.

    Args:
        name: a posteriordb posterior name, one of :data:`NAMES`.
        dtype: floating dtype of the data tensors (and so of the model's sites); float64 by
            default, as Stan computes (the GP's Cholesky factor needs it).

    Returns:
        ``(model, args, reference)``: ``from_pyro(model, *args)`` is the energy; the args are
        the data fields the model takes, integers as ``int`` and arrays as tensors.

    Example:
        >>> model, args, ref = load("arK-arK")
        >>> model.__name__, args[:2], tuple(args[2].shape)
        ('arK', (5, 200), (200,))
    """
    rec = record(name)
    model = MODELS[name]
    data = rec["data"]
    args = tuple(_arg(data[p], dtype) for p in inspect.signature(model).parameters)
    tensors = {k: _arg(v, dtype) for k, v in data.items()}
    quantities = QUANTITIES[name]
    r = rec["reference"]
    ref = Reference(
        name=name,
        names=list(r["names"]),
        n_draws=int(r["n_draws"]),
        draws=np.asarray(r["draws_subset"], dtype=float),
        quantities=lambda values: quantities(values, tensors),
        **{
            k: np.asarray(r[k], dtype=float)
            for k in ("mean", "sd", "q05", "q50", "q95", "mcse_sd", "ess_bulk", "r_hat")
        },
    )
    return model, args, ref
