"""Pyro models as batched ebmcmc energies (``ebmcmc.energy.from_pyro``).

A Pyro model's latent sites are mapped to one flat unconstrained vector ``z`` of size ``D``
(each site through ``biject_to(support)``, as Pyro's own HMC does); the energy is the
potential ``-log p(data, constrained(z)) - log|det J|``. Many chains are evaluated at once by
running the model once under an extra ``pyro.plate`` over the chains, outside the model's own
plates: this works for models written with broadcasting in mind (the usual requirement of
Pyro's vectorized particles). For models that do not broadcast, ``vectorize=False`` evaluates
the chains one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor

__all__ = ["PyroEnergy", "from_pyro"]


class PyroEnergy(torch.nn.Module):
    """The potential energy of a Pyro model on a flat unconstrained vector.

    Shapes: ``z`` ``(*batch, D)`` → ``batch``. ``constrain(z)`` maps to a dict
    ``site -> (*batch, *site_shape)``.

    Attributes:
        event_shape: ``(D,)``.
        sites: latent site names in order, with their constrained ``shapes`` and the
            ``transforms`` from unconstrained space.

    Use ``trace_fn=energy.trace_fn`` in :func:`ebmcmc.sample` to record the constrained
    sites under their own names, so ``trace.to_arviz()`` shows them.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        >>> e = from_pyro(model)
        >>> e(torch.zeros(3, 1)).shape, e.constrain(torch.zeros(3, 1))["scale"].shape
        (torch.Size([3]), torch.Size([3]))
    """

    def __init__(
        self, model: Callable, args: tuple = (), kwargs: dict | None = None, vectorize: bool = True
    ):
        super().__init__()
        import pyro
        from pyro import poutine
        from pyro.poutine.util import site_is_subsample
        from torch.distributions import biject_to

        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs or {})
        self.vectorize = vectorize
        self._pyro, self._poutine = pyro, poutine
        with torch.random.fork_rng(devices=[]):
            proto = poutine.trace(model).get_trace(*self.args, **self.kwargs)
        self.sites: list[str] = []
        self.shapes: dict[str, torch.Size] = {}
        self.batch_ndims: dict[str, int] = {}
        self.unconstrained_shapes: dict[str, torch.Size] = {}
        self.transforms: dict = {}
        nest = 0
        for name, site in proto.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    nest = max(nest, -frame.dim)
            if site["is_observed"] or (site["infer"] or {}).get("_do_not_trace"):
                continue
            # a sample site's fn is a distribution (Pyro's are torch distributions)
            fn = cast(torch.distributions.Distribution, site["fn"])
            support = fn.support
            if support is None:
                raise ValueError(f"site {name!r}: its distribution declares no support")
            if support.is_discrete:
                raise ValueError(
                    f"site {name!r} is discrete; ebmcmc's gradient kernels need continuous "
                    "latents (marginalize it out in the model)"
                )
            t = biject_to(support)
            value = site["value"]
            if value is None:
                raise ValueError(f"site {name!r} has no value in the model's trace")
            shape = value.shape
            self.sites.append(name)
            self.shapes[name] = shape
            self.batch_ndims[name] = len(fn.batch_shape)
            self.transforms[name] = t
            self.unconstrained_shapes[name] = torch.Size(t.inv.forward_shape(shape))
        if not self.sites:
            raise ValueError("the Pyro model has no continuous latent sites to sample")
        self.max_plate_nesting = nest
        self.sizes = [int(math.prod(self.unconstrained_shapes[s])) for s in self.sites]
        self.event_shape = (sum(self.sizes),)
        # every recorded site's value was checked to be a tensor above
        self.dtype = cast(Tensor, proto.nodes[self.sites[0]]["value"]).dtype
        if vectorize:
            self._check_vectorization()

    def _check_vectorization(self) -> None:
        """Compare the vectorized potential with the one-chain-at-a-time one at two points."""
        g = torch.Generator().manual_seed(0)
        z = self.initial_position(2, g, radius=1.0)
        with torch.no_grad():
            try:
                fast = self._potential_flat(z)
            except (RuntimeError, ValueError) as err:
                raise ValueError(
                    "the Pyro model does not broadcast over a leading chain dimension "
                    f"({err}); write it with broadcasting (e.g. (X * beta).sum(-1) instead of "
                    "X @ beta) or pass vectorize=False"
                ) from err
            slow = self._potential_loop(z)
        if fast.shape != slow.shape or not torch.allclose(fast, slow, rtol=1e-4, atol=1e-4):
            raise ValueError(
                "the Pyro model gives different potentials when vectorized over chains "
                f"({fast.tolist()} vs {slow.tolist()}): it does not broadcast over a leading "
                "chain dimension; write it with broadcasting or pass vectorize=False"
            )

    # ------------------------------------------------------------------ maps
    def _split(self, z: Tensor) -> dict[str, Tensor]:
        if z.shape[-1] != self.event_shape[0]:
            raise ValueError(
                f"expected unconstrained vectors of size {self.event_shape[0]} in the last "
                f"dimension, got shape {tuple(z.shape)}"
            )
        batch = z.shape[:-1]
        parts = torch.split(z, self.sizes, dim=-1)
        return {
            s: p.reshape(batch + self.unconstrained_shapes[s])
            for s, p in zip(self.sites, parts, strict=True)
        }

    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        """Constrained site values, ``site -> (*batch, *site_shape)``."""
        return {s: self.transforms[s](u) for s, u in self._split(z).items()}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        """The flat unconstrained vector of constrained site values (inverse of
        :meth:`constrain`); values carry the same leading batch shape."""
        parts = []
        batch = None
        for s in self.sites:
            v = torch.as_tensor(values[s])
            u = self.transforms[s].inv(v)
            nb = u.ndim - len(self.unconstrained_shapes[s])
            batch = u.shape[:nb] if batch is None else batch
            parts.append(u.reshape(tuple(batch) + (-1,)))
        return torch.cat(parts, dim=-1)

    def trace_fn(self, state, info) -> dict[str, Tensor]:
        """A ``trace_fn`` for :func:`ebmcmc.sample` recording the constrained sites."""
        return self.constrain(state.position)

    def initial_position(
        self,
        num_chains: int,
        generator: torch.Generator | None = None,
        radius: float = 2.0,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Stan-style starting points: uniform on ``[-radius, radius]`` in unconstrained space,
        shape ``(num_chains, D)``."""
        dtype = dtype or self.dtype
        u = torch.rand(num_chains, self.event_shape[0], generator=generator, dtype=dtype)
        return (2 * u - 1) * radius

    # ------------------------------------------------------------------ energy
    def _potential_flat(self, z: Tensor) -> Tensor:
        """Energies of ``z`` of shape ``(N, D)`` evaluated with one vectorized model run."""
        pyro, poutine = self._pyro, self._poutine
        n = z.shape[0]
        nest = self.max_plate_nesting
        unconstrained = self._split(z)
        data, log_det = {}, torch.zeros(n, dtype=z.dtype, device=z.device)
        for s, u in unconstrained.items():
            t = self.transforms[s]
            v = t(u)
            ladj = t.log_abs_det_jacobian(u, v)
            log_det = log_det + ladj.reshape(n, -1).sum(-1)
            pad = nest - self.batch_ndims[s]
            data[s] = v.reshape((n,) + (1,) * pad + tuple(self.shapes[s]))
        with pyro.plate("_ebmcmc_chains", n, dim=-(nest + 1)):
            tr = poutine.trace(poutine.condition(self.model, data=data)).get_trace(
                *self.args, **self.kwargs
            )
        tr.compute_log_prob()
        log_p = torch.zeros(n, dtype=z.dtype, device=z.device)
        for site in tr.nodes.values():
            if site["type"] != "sample" or "log_prob" not in site:
                continue
            lp = site["log_prob"]
            lp = lp.reshape((1,) * (nest + 1 - lp.ndim) + tuple(lp.shape))
            lp = lp.sum(dim=tuple(range(1, lp.ndim))) if lp.ndim > 1 else lp
            log_p = log_p + lp.expand(n)
        return -(log_p + log_det)

    def _potential_loop(self, z: Tensor) -> Tensor:
        poutine = self._poutine
        out = []
        for zi in z:
            data = {s: v for s, v in self.constrain(zi).items()}
            tr = poutine.trace(poutine.condition(self.model, data=data)).get_trace(
                *self.args, **self.kwargs
            )
            lp = tr.log_prob_sum()
            ld = sum(
                self.transforms[s].log_abs_det_jacobian(u, data[s]).sum()
                for s, u in self._split(zi).items()
            )
            out.append(-(lp + ld))
        return torch.stack(out)

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1]) if len(batch) != 1 else z
        e = self._potential_flat(flat) if self.vectorize else self._potential_loop(flat)
        return e.reshape(batch)


def from_pyro(model: Callable, *args, vectorize: bool = True, **kwargs) -> PyroEnergy:
    """The potential of a Pyro model as a batched ebmcmc energy over a flat vector.

    Args:
        model: a Pyro model (a callable with ``pyro.sample`` statements; observed sites
            conditioned with ``obs=``).
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments.
        vectorize: evaluate all chains in one model run under an extra plate (fast; needs a
            model that broadcasts over a leading chain dimension); ``False`` loops.

    Returns:
        A :class:`PyroEnergy` with ``.event_shape = (D,)``, ``.constrain(z)``,
        ``.initial_position(n, generator)`` and ``.trace_fn``.

    Example:
        >>> import torch, pyro, pyro.distributions as dist, ebmcmc
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> e = from_pyro(model, torch.tensor([1.0, 2.0, 3.0]))
        >>> tr = ebmcmc.sample(e, ebmcmc.kernels.MALA(0.3), e.initial_position(8),
        ...                    num_samples=50, generator=0, trace_fn=e.trace_fn, progress=False)
        >>> tr.variables["mu"].shape
        torch.Size([8, 50])
    """
    if not callable(model):
        raise TypeError("model must be a callable Pyro model")
    return PyroEnergy(model, args, kwargs, vectorize=vectorize)
