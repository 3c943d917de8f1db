"""What both sides of the sampler benchmark share: targets' exact answers, starting points,
posteriordb records, and the JSON job format of ``jax_runner.py``.

Standard library and numpy only, so that ebmcmc's own environment (which has no JAX) and the
JAX environment (``benchmarks/.jaxenv``, which has no torch) can both import it::

    sys.path.insert(0, "benchmarks/peers")
    import common
    x0 = common.initial_points("banana", chains=1024, seed=0)   # (1024, 2) float64

Targets (the sampled coordinates are ``x``; every density is up to a constant):

==============  ====  ======================================================================
name            dim   log density and exact answer
==============  ====  ======================================================================
gaussian          2   ``-0.5 x^T S^-1 x``, ``S = [[1, .9], [.9, 1]]``: ebmcmc.targets.Gaussian
                      with that covariance. Mean 0, variances [1, 1].
banana            2   ``-0.5 (1 - x1)^2 - 5 (x2 - x1^2)^2``: ebmcmc.targets.Banana.
                      Mean [1, 2], variances [1, 6.1].
gaussian100     100   ``-0.5 sum x_i^2 / s_i``, ``s = logspace(-2, 1, 100)`` (variances from
                      1e-2 to 1e1, log-spaced, diagonal): ebmcmc.targets.Gaussian(zeros(100),
                      diag(s)). Mean 0, variances s.
funnel10_nc      10   Neal's funnel (ebmcmc.targets.Funnel(10, scale=3): v ~ N(0, 9),
                      x_i | v ~ N(0, e^v), i = 1..9) in the non-centred parametrisation: the
                      sampler moves z in R^10 with v = 3 z_0, x_i = exp(v / 2) z_i. The
                      density of z is the funnel's density times the Jacobian
                      3 exp(9 v / 2), which is exactly the standard normal: log p(z) =
                      -0.5 |z|^2. All summaries are of z: mean 0, variances 1.
logistic          5   posteriordb ``wells_data-wells_dae_c_model``: Bernoulli-logit
                      regression of ``switched`` on (centred dist/100, centred arsenic, their
                      product, educ/4), flat priors on (alpha, beta[1..4]); 3,020
                      observations. No closed form: the reference mean/sd come with the record
                      (see ``posteriordb_logistic.py``).
blr               6   posteriordb ``sblrc-blr``: linear regression, beta ~ N(0, 10) (5),
                      sigma ~ N(0, 10) on sigma > 0, y ~ N(X beta, sigma). Sampled: (beta,
                      log sigma), Stan's unconstrained space (log density + log sigma).
                      Summaries are of (beta, sigma) against posteriordb's reference.
==============  ====  ======================================================================

Starting points: every chain starts from ``numpy.random.default_rng(seed).uniform(-2, 2,
size=(chains, dim))`` (Stan's default), for every target; both sides call
:func:`initial_points` (or pass the array in the job) so ebmcmc and the JAX peers start from
identical points.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: where posteriordb records (``<posterior>.json``, the tests/posteriordb format) are looked
#: for, in order, after the job's ``posteriordb_dir`` and ``$EBMCMC_POSTERIORDB_DIR``
POSTERIORDB_DIRS = (ROOT / "tests" / "posteriordb", HERE / "posteriordb")

#: target name -> posteriordb posterior name
POSTERIORDB = {
    "logistic": "wells_data-wells_dae_c_model",
    "blr": "sblrc-blr",
}

TARGETS = ("gaussian", "banana", "gaussian100", "funnel10_nc", "logistic", "blr")
SAMPLERS = ("blackjax_chees", "blackjax_nuts", "numpyro_nuts")

#: default number of chains per sampler (the job's ``chains`` overrides it)
DEFAULT_CHAINS = {"blackjax_chees": 1024, "blackjax_nuts": 128, "numpyro_nuts": 128}

#: defaults of a job (see ``jax_runner.py``)
DEFAULT_JOB = {
    "warmup": 500,
    "draws": 1000,
    "seed": 0,
    "dtype": "float32",
    "repeat": True,
}

#: tiny sizes for ``--smoke`` (seconds; too short for the statistics to mean anything)
SMOKE_SIZES = {"chains": 8, "warmup": 30, "draws": 30}

GAUSSIAN_COV = [[1.0, 0.9], [0.9, 1.0]]


def gaussian100_variances() -> np.ndarray:
    """The 100 variances of ``gaussian100``: ``numpy.logspace(-2, 1, 100)``."""
    return np.logspace(-2.0, 1.0, 100)


@dataclass
class Truth:
    """A target's reference answer for the summarised quantities.

    ``mean``/``var`` are exact for the analytic targets (``*_se`` zero) and posteriordb's (or our
    importance-sampling) estimates with their standard errors for the posteriordb ones.
    """

    names: list[str]
    mean: np.ndarray
    var: np.ndarray
    mean_se: np.ndarray
    var_se: np.ndarray
    source: str
    extra: dict = field(default_factory=dict)


def find_posteriordb(posterior: str, directory: str | os.PathLike | None = None) -> Path:
    """Path of the stored record ``<posterior>.json``.

    Raises:
        FileNotFoundError: naming the places searched and how to provide the record.
    """
    dirs = [Path(d) for d in (directory, os.environ.get("EBMCMC_POSTERIORDB_DIR")) if d]
    dirs += list(POSTERIORDB_DIRS)
    for d in dirs:
        p = d / f"{posterior}.json"
        if p.exists():
            return p
    raise FileNotFoundError(
        f"posteriordb record {posterior}.json not found in {[str(d) for d in dirs]}; pass "
        f"'posteriordb_dir' in the job or set EBMCMC_POSTERIORDB_DIR (tests/posteriordb/ records "
        f"come from the posteriordb branch; benchmarks/peers/posteriordb_logistic.py writes the "
        f"logistic one)"
    )


def load_posteriordb(posterior: str, directory: str | os.PathLike | None = None) -> dict:
    """The stored record of ``posterior`` as a dict (data, Stan code, reference summary)."""
    return json.loads(find_posteriordb(posterior, directory).read_text())


def dim(target: str, posteriordb_dir: str | os.PathLike | None = None) -> int:
    """Number of sampled coordinates of ``target``."""
    fixed = {"gaussian": 2, "banana": 2, "gaussian100": 100, "funnel10_nc": 10}
    if target in fixed:
        return fixed[target]
    if target in POSTERIORDB:
        rec = load_posteriordb(POSTERIORDB[target], posteriordb_dir)
        return int(sum(int(v) for v in rec["dimensions"].values()))
    raise ValueError(f"unknown target {target!r}; known: {TARGETS}")


def initial_points(
    target: str, chains: int, seed: int, posteriordb_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """Starting points, shape ``(chains, dim)`` float64: Uniform(-2, 2) per coordinate from
    ``numpy.random.default_rng(seed)`` (the same for every target and both sides).

    Example:
        >>> initial_points("gaussian", 3, 0).shape
        (3, 2)
    """
    if not isinstance(chains, int) or chains < 1:
        raise ValueError(f"chains must be a positive int, got {chains!r}")
    size = (chains, dim(target, posteriordb_dir))
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=size)


def truth(target: str, posteriordb_dir: str | os.PathLike | None = None) -> Truth:
    """The reference mean and variance of ``target``'s summarised quantities."""
    if target == "gaussian":
        z = np.zeros(2)
        return Truth(["x[0]", "x[1]"], z, np.ones(2), z, z, "exact")
    if target == "banana":
        z = np.zeros(2)
        return Truth(["x[0]", "x[1]"], np.array([1.0, 2.0]), np.array([1.0, 6.1]), z, z, "exact")
    if target == "gaussian100":
        z = np.zeros(100)
        names = [f"x[{i}]" for i in range(100)]
        return Truth(names, z, gaussian100_variances(), z, z, "exact")
    if target == "funnel10_nc":
        z = np.zeros(10)
        return Truth([f"z[{i}]" for i in range(10)], z, np.ones(10), z, z, "exact")
    if target in POSTERIORDB:
        rec = load_posteriordb(POSTERIORDB[target], posteriordb_dir)
        ref = rec["reference"]
        mean, sd = np.asarray(ref["mean"], float), np.asarray(ref["sd"], float)
        if "mcse_mean" in ref:
            mean_se = np.asarray(ref["mcse_mean"], float)
        else:  # posteriordb's reference draws are thinned to be near-independent
            mean_se = sd / math.sqrt(int(ref["n_draws"]))
        var_se = 2.0 * sd * np.asarray(ref["mcse_sd"], float)
        source = f"posteriordb {rec['posterior']} reference ({ref.get('inference', '')})"
        return Truth(list(ref["names"]), mean, sd**2, mean_se, var_se, source)
    raise ValueError(f"unknown target {target!r}; known: {TARGETS}")
