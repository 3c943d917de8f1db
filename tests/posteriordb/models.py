"""Pyro ports of six posteriordb posteriors, written to broadcast over a leading chain batch.

Every model takes posteriordb's data fields as arguments (sizes as ints; arrays, counts
included, as float64 tensors) and reproduces the Stan program's log density on the
unconstrained space up to a constant: the same priors and likelihood, and every constrained
parameter declared with the same support, so that ``biject_to`` gives Stan's transform
(``<lower=0>``: ``exp``; ``<lower=0, upper=1>``: the logistic function; ``ordered``: first
element, then cumulative ``exp`` increments) and ebmcmc adds the same log-Jacobian Stan does.
Stan's improper flat priors are :class:`Flat` sites; Stan's ``~`` on a constrained parameter
drops normalizing constants (``cauchy`` on ``sigma > 0`` is a half-Cauchy up to a factor 2),
which only shifts the energy by a constant.

The latent sites are sampled in the order of the Stan ``parameters`` block and carry its
names, so the flat unconstrained vector ``z`` of ``ebmcmc.energy.from_pyro`` is laid out like
Stan's unconstrained parameter vector:

=========================================  ====  ==============================================
posterior                                   D     flat unconstrained z (0-based slices)
=========================================  ====  ==============================================
eight_schools-eight_schools_noncentered    10    theta_trans 0:8, mu 8, log tau 9
sblrc-blr                                   6    beta 0:5, log sigma 5
kidiq-kidscore_momiq                        3    beta 0:2, log sigma 2
gp_pois_regr-gp_pois_regr                  13    log rho 0, log alpha 1, f_tilde 2:13
arK-arK                                     7    alpha 0, beta 1:6, log sigma 6
low_dim_gauss_mix-low_dim_gauss_mix         5    mu[1] 0, log(mu[2] - mu[1]) 1, log sigma 2:4,
                                                 logit theta 4
=========================================  ====  ==============================================

posteriordb's reference draws are of the constrained parameters and, for the non-centered
eight schools and the GP, of the transformed parameters ``theta = mu + tau * theta_trans`` and
``f = L f_tilde`` instead of the raw ones; :data:`QUANTITIES` maps constrained site values to
the reference's quantities in the reference's order (Stan's 1-based ``beta[1]`` is Pyro's
``beta[..., 0]``).

Vectorization: ebmcmc runs each model once for all chains under an extra plate to the left of
the model's own plates, so a scalar site arrives with shape ``(chains, 1)`` and a vector site
sampled outside a plate with ``(chains, 1, n)``. The models therefore combine parameters with
data by broadcasting (``(X * beta).sum(-1)``, never ``X @ beta``) and keep per-observation
vectors inside the observation plate.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor
from torch.distributions import biject_to

__all__ = [
    "Flat",
    "eight_schools_noncentered",
    "blr",
    "kidscore_momiq",
    "gp_pois_regr",
    "arK",
    "low_dim_gauss_mix",
    "MODELS",
    "QUANTITIES",
]


class Flat(TorchDistribution):
    """Stan's improper flat prior on a support: ``log_prob`` is 0 everywhere on it.

    Unlike Pyro's ``ImproperUniform`` it can be sampled (``biject_to(support)`` of zeros), so
    models tracing it without conditioning (as ``from_pyro`` does once, for the shapes) work.

    Shapes: ``event_shape`` as given, no batch shape; ``log_prob(value)`` has the shape of
    ``value`` without its event dimensions.

    Example:
        >>> import torch
        >>> from pyro.distributions import constraints
        >>> d = Flat(constraints.ordered_vector, (2,))
        >>> d.sample(), d.log_prob(torch.zeros(3, 2)).shape
        (tensor([0., 1.], dtype=torch.float64), torch.Size([3]))
    """

    arg_constraints: dict = {}

    def __init__(self, support, event_shape=(), dtype: torch.dtype = torch.float64):
        self._support = support
        self._dtype = dtype
        super().__init__(torch.Size(), torch.Size(event_shape), validate_args=False)

    @property
    def support(self):
        return self._support

    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        t = biject_to(self._support)
        shape = torch.Size(sample_shape) + self.event_shape
        return t(torch.zeros(t.inv.forward_shape(shape), dtype=self._dtype))

    def log_prob(self, value: Tensor) -> Tensor:
        batch = value.shape[: value.dim() - len(self.event_shape)]
        return value.new_zeros(batch)


def _c(x: float, like: Tensor) -> Tensor:
    """A constant with the dtype and device of ``like``."""
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def eight_schools_noncentered(J: int, y: Tensor, sigma: Tensor) -> None:
    """posteriordb ``eight_schools_noncentered``: ``theta_trans ~ N(0, 1)`` (J),
    ``mu ~ N(0, 5)``, ``tau ~ Cauchy(0, 5)`` on ``tau > 0``,
    ``y ~ N(mu + tau * theta_trans, sigma)``.

    Shapes: ``y``, ``sigma``: ``(J,)``. Sites ``theta_trans (J,)``, ``mu ()``, ``tau ()``.

    Example:
        >>> import torch
        >>> from pyro import poutine
        >>> y, s = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
        >>> tr = poutine.trace(eight_schools_noncentered).get_trace(8, y, s)
        >>> tr.nodes["theta_trans"]["value"].shape
        torch.Size([8])
    """
    schools = pyro.plate("schools", J, dim=-1)
    with schools:
        theta_trans = pyro.sample("theta_trans", dist.Normal(_c(0.0, y), _c(1.0, y)))
    mu = pyro.sample("mu", dist.Normal(_c(0.0, y), _c(5.0, y)))
    tau = pyro.sample("tau", dist.HalfCauchy(_c(5.0, y)))
    with schools:
        pyro.sample("y", dist.Normal(mu + tau * theta_trans, sigma), obs=y)


def blr(N: int, D: int, X: Tensor, y: Tensor) -> None:
    """posteriordb ``blr``: ``beta ~ N(0, 10)`` (D), ``sigma ~ N(0, 10)`` on ``sigma > 0``,
    ``y ~ N(X beta, sigma)``.

    Shapes: ``X``: ``(N, D)``, ``y``: ``(N,)``. Sites ``beta (D,)``, ``sigma ()``.

    Example:
        >>> import torch
        >>> from pyro import poutine
        >>> X, y = torch.ones(4, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
        >>> poutine.trace(blr).get_trace(4, 2, X, y).nodes["beta"]["value"].shape
        torch.Size([2])
    """
    beta = pyro.sample("beta", dist.Normal(_c(0.0, y), _c(10.0, y)).expand([D]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(_c(10.0, y)))
    with pyro.plate("data", N, dim=-1):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)


def kidscore_momiq(N: int, kid_score: Tensor, mom_iq: Tensor) -> None:
    """posteriordb ``kidscore_momiq``: flat ``beta`` (2), ``sigma ~ Cauchy(0, 2.5)`` on
    ``sigma > 0``, ``kid_score ~ N(beta[1] + beta[2] * mom_iq, sigma)``.

    Shapes: ``kid_score``, ``mom_iq``: ``(N,)``.
    Sites ``beta (2,)``, ``sigma ()``.

    Example:
        >>> import torch
        >>> from pyro import poutine
        >>> k = torch.full((3,), 90.0, dtype=torch.float64)
        >>> poutine.trace(kidscore_momiq).get_trace(3, k, k).nodes["sigma"]["value"].shape
        torch.Size([])
    """
    beta = pyro.sample("beta", Flat(constraints.real, (2,), kid_score.dtype))
    sigma = pyro.sample("sigma", dist.HalfCauchy(_c(2.5, kid_score)))
    with pyro.plate("data", N, dim=-1):
        mean = beta[..., 0] + beta[..., 1] * mom_iq
        pyro.sample("kid_score", dist.Normal(mean, sigma), obs=kid_score)


def _gp_f(x: Tensor, rho: Tensor, alpha: Tensor, f_tilde: Tensor) -> Tensor:
    """``f = L f_tilde`` with ``L L^T = alpha^2 exp(-|x_i - x_j|^2 / (2 rho^2)) + 1e-10 I``.

    Shapes: ``f_tilde`` ``(*b, N)`` -> ``(*b, N)``; ``rho``, ``alpha`` ``(*b, 1)`` (as under a
    chain plate) or ``()`` (one chain, ``b = ()``)."""
    d2 = (x[:, None] - x[None, :]) ** 2
    cov = alpha[..., None] ** 2 * torch.exp(-d2 / (2 * rho[..., None] ** 2))
    cov = cov + 1e-10 * torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    # where the matrix is not numerically positive definite (far out in rho), Stan rejects the
    # proposal: f turns NaN there, a non-finite energy that ebmcmc's kernels reject
    L, info = torch.linalg.cholesky_ex(cov)
    f = (L * f_tilde[..., None, :]).sum(-1)
    return torch.where((info == 0)[..., None], f, torch.nan)


def gp_pois_regr(N: int, x: Tensor, k: Tensor) -> None:
    """posteriordb ``gp_pois_regr``: ``rho ~ Gamma(25, 4)``, ``alpha ~ N(0, 2)`` on
    ``alpha > 0``, ``f_tilde ~ N(0, 1)`` (N), ``f = cholesky(K_SE(x; alpha, rho) + 1e-10 I)
    f_tilde``, ``k ~ Poisson(exp(f))``.

    Shapes: ``x``, ``k``: ``(N,)`` (``k`` as float counts).
    Sites ``rho ()``, ``alpha ()``, ``f_tilde (N,)``.

    Example:
        >>> import torch
        >>> from pyro import poutine
        >>> x = torch.linspace(-1, 1, 5, dtype=torch.float64)
        >>> tr = poutine.trace(gp_pois_regr).get_trace(5, x, torch.ones(5, dtype=torch.float64))
        >>> tr.nodes["f_tilde"]["value"].shape
        torch.Size([5])
    """
    rho = pyro.sample("rho", dist.Gamma(_c(25.0, x), _c(4.0, x)))
    alpha = pyro.sample("alpha", dist.HalfNormal(_c(2.0, x)))
    obs = pyro.plate("obs", N, dim=-1)
    with obs:
        f_tilde = pyro.sample("f_tilde", dist.Normal(_c(0.0, x), _c(1.0, x)))
    # rho, alpha: (*b, 1) under the chain plate, () without; f_tilde: (*b, N) or (N,)
    f = _gp_f(x, rho, alpha, f_tilde)
    with obs:
        pyro.sample("k", dist.Poisson(torch.exp(f)), obs=k)


def arK(K: int, T: int, y: Tensor) -> None:
    """posteriordb ``arK``: ``alpha ~ N(0, 10)``, ``beta ~ N(0, 10)`` (K),
    ``sigma ~ Cauchy(0, 2.5)`` on ``sigma > 0``,
    ``y[t] ~ N(alpha + sum_k beta[k] y[t-k], sigma)`` for ``t = K+1..T``.

    Shapes: ``y``: ``(T,)``. Sites ``alpha ()``, ``beta (K,)``, ``sigma ()``.

    Example:
        >>> import torch
        >>> from pyro import poutine
        >>> y = torch.zeros(10, dtype=torch.float64)
        >>> poutine.trace(arK).get_trace(2, 10, y).nodes["beta"]["value"].shape
        torch.Size([2])
    """
    alpha = pyro.sample("alpha", dist.Normal(_c(0.0, y), _c(10.0, y)))
    beta = pyro.sample("beta", dist.Normal(_c(0.0, y), _c(10.0, y)).expand([K]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(_c(2.5, y)))
    # lags[i, k - 1] = y[t - k] for the (0-based) t = K + i
    lags = torch.stack([y[K - k : T - k] for k in range(1, K + 1)], dim=-1)
    with pyro.plate("time", T - K, dim=-1):
        pyro.sample("y", dist.Normal(alpha + (lags * beta).sum(-1), sigma), obs=y[K:])


def low_dim_gauss_mix(N: int, y: Tensor) -> None:
    """posteriordb ``low_dim_gauss_mix``: ``mu`` ordered (2) with ``mu ~ N(0, 2)``,
    ``sigma ~ N(0, 2)`` on ``sigma > 0`` (2), ``theta ~ Beta(5, 5)``,
    ``y[n] ~ theta N(mu[1], sigma[1]) + (1 - theta) N(mu[2], sigma[2])``.

    Stan's ``mu ~ normal(0, 2)`` on an ordered vector adds the normal log density without
    renormalizing to the ordered half-space: here a :class:`Flat` ordered site plus that
    density as a ``pyro.factor``.

    Shapes: ``y``: ``(N,)``. Sites ``mu (2,)``, ``sigma (2,)``, ``theta ()``.

    Example:
        >>> import torch
        >>> from pyro import poutine
        >>> y = torch.tensor([-1.0, 1.0], dtype=torch.float64)
        >>> tr = poutine.trace(low_dim_gauss_mix).get_trace(2, y)
        >>> bool(tr.nodes["mu"]["value"][1] > tr.nodes["mu"]["value"][0])
        True
    """
    mu = pyro.sample("mu", Flat(constraints.ordered_vector, (2,), y.dtype))
    pyro.factor("mu_prior", dist.Normal(_c(0.0, y), _c(2.0, y)).log_prob(mu).sum(-1))
    sigma = pyro.sample("sigma", dist.HalfNormal(_c(2.0, y)).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(_c(5.0, y), _c(5.0, y)))
    logits = torch.stack([torch.log(theta), torch.log1p(-theta)], dim=-1)
    mixture = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(mu, sigma))
    with pyro.plate("data", N, dim=-1):
        pyro.sample("y", mixture, obs=y)


def _q_eight_schools(v: dict[str, Tensor], data: dict) -> Tensor:
    theta = v["mu"][..., None] + v["tau"][..., None] * v["theta_trans"]
    return torch.cat([theta, v["mu"][..., None], v["tau"][..., None]], dim=-1)


def _q_gp(v: dict[str, Tensor], data: dict) -> Tensor:
    # rho, alpha: (*b,) -> (*b, 1), the shapes they have in the model under a chain plate
    f = _gp_f(data["x"], v["rho"][..., None], v["alpha"][..., None], v["f_tilde"])
    return torch.cat([v["rho"][..., None], v["alpha"][..., None], f], dim=-1)


def _q_sites(*names_and_sizes: tuple[str, int]):
    """Quantities that are the sites themselves, in order; size 0 marks a scalar site."""

    def quantities(v: dict[str, Tensor], data: dict) -> Tensor:
        return torch.cat([v[n] if size else v[n][..., None] for n, size in names_and_sizes], -1)

    return quantities


#: posterior name -> Pyro model
MODELS = {
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "sblrc-blr": blr,
    "kidiq-kidscore_momiq": kidscore_momiq,
    "gp_pois_regr-gp_pois_regr": gp_pois_regr,
    "arK-arK": arK,
    "low_dim_gauss_mix-low_dim_gauss_mix": low_dim_gauss_mix,
}

#: posterior name -> ``f(site_values, data) -> (*batch, P)``: the reference's quantities
QUANTITIES = {
    "eight_schools-eight_schools_noncentered": _q_eight_schools,
    "sblrc-blr": _q_sites(("beta", 5), ("sigma", 0)),
    "kidiq-kidscore_momiq": _q_sites(("beta", 2), ("sigma", 0)),
    "gp_pois_regr-gp_pois_regr": _q_gp,
    "arK-arK": _q_sites(("alpha", 0), ("beta", 5), ("sigma", 0)),
    "low_dim_gauss_mix-low_dim_gauss_mix": _q_sites(("mu", 2), ("sigma", 2), ("theta", 0)),
}
