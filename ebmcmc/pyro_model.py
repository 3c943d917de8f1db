"""Pyro models as batched ebmcmc energies (``ebmcmc.energy.from_pyro``).

A Pyro model's latent sites are mapped to one flat unconstrained vector ``z`` of size ``D``
(each site through ``biject_to(support)``, as Pyro's own HMC does); the energy is the
potential ``-log p(data, constrained(z)) - log|det J|``. Many chains are evaluated at once by
running the model once under an extra ``pyro.plate`` over the chains, outside the model's own
plates: this works for models written with broadcasting in mind (the usual requirement of
Pyro's vectorized particles). For models that do not broadcast, ``vectorize=False`` evaluates
the chains one by one.

A proposal that makes one of the model's distributions fail its argument or support validation
(a scale that overflowed to ``inf`` or underflowed to ``0``, a ``NaN`` location, a value
outside the support) gets energy ``+inf``, so kernels reject it and flag a divergence; only the
chains concerned are affected. Other errors (wrong shapes, a bug in the model) propagate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor

from ._random import Generatorish, make_generator

__all__ = ["PyroEnergy", "from_pyro"]

# the messages of torch.distributions' argument and support validation (Pyro's distributions
# use the same checks); Pyro's tracing re-raises them with the message as a prefix or cause
_VALIDATION = re.compile(r"Expected (parameter \w+|value argument) \(.*found invalid values", re.S)


def _is_numerical_failure(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) says the model was evaluated where its
    density is zero or undefined: a distribution's validation failed (a parameter outside its
    constraint, a value outside the support) or a matrix factorization failed. Shape errors and
    other bugs are not numerical failures."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, torch.linalg.LinAlgError):
            return True
        if isinstance(e, ValueError) and _VALIDATION.match(str(e)):
            return True
        e = e.__cause__  # Pyro re-raises with ``raise ... from err``
    return False


def _assemble(z: Tensor, idx: Tensor, vals: Tensor) -> Tensor:
    """Energies of shape ``(N,)``: ``vals`` at the chains ``idx``, ``+inf`` elsewhere; tied to
    ``z``'s graph (with zero gradient) so the result is differentiable even when no chain is
    valid."""
    dtype = torch.promote_types(z.dtype, vals.dtype)
    anchor = z[:, 0].to(dtype) * 0  # NaN where z is not finite: replaced below
    valid = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    valid[idx] = True
    filled = anchor.index_put((idx,), vals.to(dtype))
    return torch.where(valid, filled, torch.full_like(filled, math.inf))


class PyroEnergy(torch.nn.Module):
    """The potential energy of a Pyro model on a flat unconstrained vector.

    Shapes: ``z`` ``(*batch, D)`` → ``batch``. ``constrain(z)`` maps to a dict
    ``site -> (*batch, *site_shape)`` of the latent sites, ``deterministic(z)`` to one of the
    model's ``pyro.deterministic`` sites.

    Attributes:
        event_shape: ``(D,)``.
        sites: latent site names in order, with their constrained ``shapes`` and the
            ``transforms`` from unconstrained space.
        deterministic_sites: names of the ``pyro.deterministic`` sites, with their
            ``deterministic_shapes``.

    A point where one of the model's distributions fails its validation (a parameter outside
    its constraint, e.g. a scale that overflowed to ``inf`` or underflowed to ``0``, or a value
    outside the support) or a matrix factorization fails has energy ``+inf``: kernels reject
    it and flag a divergence. Only the chains concerned get ``+inf``; the others keep their
    energies and gradients. Any other error raised by the model propagates.

    Use ``trace_fn=energy.trace_fn`` in :func:`ebmcmc.sample` to record the constrained
    latent and deterministic sites under their own names, so ``trace.to_arviz()`` shows them.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model(y):
        ...     scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        ...     pyro.deterministic("var", scale**2)
        ...     pyro.sample("y", dist.Normal(0.0, scale), obs=y)
        >>> e = from_pyro(model, torch.tensor(1.0))
        >>> e(torch.zeros(3, 1)).shape, e.constrain(torch.zeros(3, 1))["scale"].shape
        (torch.Size([3]), torch.Size([3]))
        >>> e.deterministic(torch.tensor([[0.0], [1.0]]))["var"]
        tensor([1.0000, 7.3891])
        >>> e(torch.tensor([[0.0], [-200.0]]))  # exp(-200) underflows: a scale of 0 is invalid
        tensor([2.3379,    inf])
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
        self.supports: dict = {}
        self._validates: dict[str, bool] = {}
        self.deterministic_sites: list[str] = []
        self.deterministic_shapes: dict[str, torch.Size] = {}
        nest = 0
        for name, site in proto.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    nest = max(nest, -frame.dim)
            if (site["infer"] or {}).get("_deterministic"):
                self.deterministic_sites.append(name)
                self.deterministic_shapes[name] = cast(Tensor, site["value"]).shape
                continue
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
            self.supports[name] = support
            self._validates[name] = bool(getattr(fn, "_validate_args", False))
            self.unconstrained_shapes[name] = torch.Size(t.inv.forward_shape(shape))
        if not self.sites:
            raise ValueError("the Pyro model has no continuous latent sites to sample")
        self.max_plate_nesting = nest
        self.sizes = [int(math.prod(self.unconstrained_shapes[s])) for s in self.sites]
        self.event_shape = (sum(self.sizes),)
        # every recorded site's value was checked to be a tensor above
        first = cast(Tensor, proto.nodes[self.sites[0]]["value"])
        self.dtype, self.device = first.dtype, first.device
        # deterministic sites are read from the vectorized run when they broadcast over the
        # chains (checked below), else chain by chain
        self._deterministic_vectorizes = vectorize
        if vectorize:
            self._check_vectorization()

    def _check_vectorization(self) -> None:
        """Compare the vectorized potential (and deterministic sites) with the
        one-chain-at-a-time ones at two points."""
        g = torch.Generator(device=self.device).manual_seed(0)
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
                    f"({fast.tolist()} vs {slow.tolist()}): it does not broadcast over a "
                    "leading chain dimension; write it with broadcasting or pass vectorize=False"
                )
            if self.deterministic_sites:
                slow_det = self._deterministic_loop(z)
                try:
                    fast_det = self._deterministic_flat(z)
                except (RuntimeError, ValueError):
                    fast_det = None
                self._deterministic_vectorizes = fast_det is not None and all(
                    torch.allclose(fast_det[s], slow_det[s], rtol=1e-4, atol=1e-4, equal_nan=True)
                    for s in self.deterministic_sites
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
        """Constrained latent site values, ``site -> (*batch, *site_shape)``.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> e = from_pyro(lambda: pyro.sample("s", dist.HalfNormal(1.0)))
            >>> e.constrain(torch.zeros(2, 1))["s"]
            tensor([1., 1.])
        """
        return {s: self.transforms[s](u) for s, u in self._split(z).items()}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        """The flat unconstrained vector of constrained site values (inverse of
        :meth:`constrain`); values carry the same leading batch shape.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> e = from_pyro(lambda: pyro.sample("s", dist.HalfNormal(1.0)))
            >>> e.unconstrain({"s": torch.tensor([1.0, 2.0])})
            tensor([[0.0000],
                    [0.6931]])
        """
        parts = []
        batch = None
        for s in self.sites:
            v = torch.as_tensor(values[s])
            u = self.transforms[s].inv(v)
            nb = u.ndim - len(self.unconstrained_shapes[s])
            batch = u.shape[:nb] if batch is None else batch
            parts.append(u.reshape(tuple(batch) + (-1,)))
        return torch.cat(parts, dim=-1)

    def deterministic(self, z: Tensor) -> dict[str, Tensor]:
        """The model's ``pyro.deterministic`` sites at ``z``, ``site -> (*batch, *site_shape)``
        (an empty dict for a model without any); computed without gradients.

        One vectorized run of the model gives them when they broadcast over the chains
        (checked when the energy is built), else one run per chain. A chain where the model
        fails its validation gets ``NaN`` values.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> def model():
            ...     x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            ...     pyro.deterministic("total", x.sum(-1))
            >>> e = from_pyro(model)
            >>> e.deterministic(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))["total"]
            tensor([3., 7.])
        """
        if not self.deterministic_sites:
            return {}
        batch = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        out = None
        with torch.no_grad():
            if self.vectorize and self._deterministic_vectorizes:
                try:
                    out = self._deterministic_flat(flat)
                except (RuntimeError, ValueError) as err:
                    if not _is_numerical_failure(err):
                        raise
            if out is None:
                out = self._deterministic_loop(flat)
        return {s: v.reshape(batch + self.deterministic_shapes[s]) for s, v in out.items()}

    def trace_fn(self, state, info, deterministic: bool = True) -> dict[str, Tensor]:
        """A ``trace_fn`` for :func:`ebmcmc.sample` recording the constrained latent sites and
        (unless ``deterministic=False``, e.g. through ``functools.partial``) the
        ``pyro.deterministic`` sites, each under its own name with shape
        ``(*batch, *site_shape)``.

        Example:
            >>> import pyro, pyro.distributions as dist, ebmcmc
            >>> def model():
            ...     s = pyro.sample("s", dist.HalfNormal(1.0))
            ...     pyro.deterministic("s2", s**2)
            >>> e = from_pyro(model)
            >>> tr = ebmcmc.sample(e, ebmcmc.kernels.MALA(0.5), e.initial_position(4, 0),
            ...                    num_samples=5, generator=0, trace_fn=e.trace_fn,
            ...                    progress=False)
            >>> sorted(tr.variables), tr.variables["s2"].shape
            (['s', 's2'], torch.Size([4, 5]))
            >>> bool(torch.allclose(tr.variables["s2"], tr.variables["s"] ** 2))
            True
        """
        values = self.constrain(state.position)
        if deterministic:
            values.update(self.deterministic(state.position))
        return values

    def initial_position(
        self,
        num_chains: int,
        generator: Generatorish = None,
        radius: float = 2.0,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Stan-style starting points: independent uniform draws on ``[-radius, radius]`` in
        unconstrained space, shape ``(num_chains, D)``.

        Args:
            num_chains: how many chains.
            generator: a ``torch.Generator`` (on the model's device) or an int seed; ``None``
                seeds a new generator from fresh entropy (not reproducible).
            radius: half-width of the box (Stan's default 2: constrained positive sites start
                in ``[e^-2, e^2]``).
            dtype: defaults to the dtype of the model's latent sites.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> a = dist.Normal(0.0, 1.0).expand([3]).to_event(1)
            >>> e = from_pyro(lambda: pyro.sample("a", a))
            >>> z = e.initial_position(5, generator=0)
            >>> z.shape, bool((z.abs() <= 2).all())
            (torch.Size([5, 3]), True)
            >>> bool((z == e.initial_position(5, generator=0)).all())
            True
        """
        if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"num_chains must be an int >= 1, got {num_chains!r}")
        if not (isinstance(radius, int | float) and math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a positive finite number, got {radius!r}")
        dtype = dtype or self.dtype
        gen = make_generator(generator, self.device)
        u = torch.rand(
            num_chains, self.event_shape[0], generator=gen, dtype=dtype, device=gen.device
        )
        return (2 * u - 1) * radius

    # ------------------------------------------------------------------ energy
    def _conditioned_trace(self, z: Tensor, log_prob: bool):
        """One run of the model under the chains plate with the latents set to ``T(z)``,
        ``z`` of shape ``(N, D)``; returns the trace and the log-Jacobian, shape ``(N,)``."""
        pyro, poutine = self._pyro, self._poutine
        n = z.shape[0]
        nest = self.max_plate_nesting
        data, log_det = {}, torch.zeros(n, dtype=z.dtype, device=z.device)
        for s, u in self._split(z).items():
            t = self.transforms[s]
            v = t(u)
            if log_prob:
                log_det = log_det + t.log_abs_det_jacobian(u, v).reshape(n, -1).sum(-1)
            pad = nest - self.batch_ndims[s]
            data[s] = v.reshape((n,) + (1,) * pad + tuple(self.shapes[s]))
        with pyro.plate("_ebmcmc_chains", n, dim=-(nest + 1)):
            tr = poutine.trace(poutine.condition(self.model, data=data)).get_trace(
                *self.args, **self.kwargs
            )
        return tr, log_det

    def _run(self, z: Tensor) -> Tensor:
        """Energies of ``z`` of shape ``(N, D)`` from one vectorized run of the model."""
        n = z.shape[0]
        nest = self.max_plate_nesting
        tr, log_det = self._conditioned_trace(z, log_prob=True)
        # deterministic sites carry no density: skip them
        tr.compute_log_prob(site_filter=lambda name, site: name not in self.deterministic_shapes)
        log_p = torch.zeros(n, dtype=z.dtype, device=z.device)
        for site in tr.nodes.values():
            if site["type"] != "sample" or "log_prob" not in site:
                continue
            lp = site["log_prob"]
            lp = lp.reshape((1,) * (nest + 1 - lp.ndim) + tuple(lp.shape))
            lp = lp.sum(dim=tuple(range(1, lp.ndim))) if lp.ndim > 1 else lp
            log_p = log_p + lp.expand(n)
        return -(log_p + log_det)

    def _finite(self, z: Tensor) -> Tensor:
        """Per chain, ``(N,)``: ``z`` and every latent's constrained value are finite (a latent
        at ``±inf``, e.g. ``exp`` overflowed, has density zero: energy ``+inf``)."""
        n = z.shape[0]
        ok = torch.isfinite(z).all(-1)
        for s, u in self._split(z).items():
            ok = ok & torch.isfinite(self.transforms[s](u)).reshape(n, -1).all(-1)
        return ok

    def _on_support(self, z: Tensor) -> Tensor:
        """Per chain, ``(N,)``: every latent whose distribution validates its values is on its
        support (e.g. not a scale of ``0`` after ``exp`` underflowed): the check the model's
        own validation makes."""
        n = z.shape[0]
        ok = torch.ones(n, dtype=torch.bool, device=z.device)
        for s, u in self._split(z).items():
            if not self._validates[s]:
                continue
            try:
                inside = self.supports[s].check(self.transforms[s](u))
            except (RuntimeError, ValueError, TypeError):  # a support that cannot be checked
                continue
            ok = ok & inside.reshape(n, -1).all(-1)
        return ok

    def _bisect(self, z: Tensor, idx: Tensor, failed: bool = False) -> Tensor:
        """Energies of the chains ``idx`` of ``z``, ``+inf`` for those where the model fails
        numerically: the chains are halved until each failing one is isolated (``failed``:
        the whole ``idx`` is already known to fail together)."""
        if idx.numel() == 0:
            return z.new_empty(0)
        if not failed:
            try:
                return self._run(z[idx])
            except (RuntimeError, ValueError) as err:
                if not _is_numerical_failure(err):
                    raise
        if idx.numel() == 1:
            return z.new_full((1,), math.inf)
        h = idx.numel() // 2
        return torch.cat([self._bisect(z, idx[:h]), self._bisect(z, idx[h:])])

    def _potential_flat(self, z: Tensor) -> Tensor:
        """Energies of ``z`` of shape ``(N, D)``, normally from one vectorized model run.

        Chains with non-finite latents get ``+inf`` without a run. When the run fails
        numerically (a distribution's validation), chains whose latents are off their support
        get ``+inf`` too and the rest are evaluated again, split in halves until every failing
        chain is isolated; energies and gradients of the valid chains are unchanged.
        """
        with torch.no_grad():
            ok = self._finite(z)
        everywhere = bool(ok.all())
        idx = ok.nonzero().squeeze(-1)
        if idx.numel() == 0:
            return _assemble(z, idx, z.new_empty(0))
        try:
            if everywhere:
                return self._run(z)
            return _assemble(z, idx, self._run(z[idx]))
        except (RuntimeError, ValueError) as err:
            if not _is_numerical_failure(err):
                raise
        with torch.no_grad():
            on_support = ok & self._on_support(z)
        # when the support check excluded no chain, all of idx is known to fail together
        failed = bool((on_support == ok).all())
        idx = on_support.nonzero().squeeze(-1)
        # one run without validation finds the chains whose density is not finite (a NaN
        # location, an overflowed scale); the rest usually pass validation together, and
        # halving (one model run and one formatted error message per failure) is left for
        # the failures the screen cannot see
        screened = self._screen(z, idx)
        if screened is not None and not bool(screened.all()):
            idx = idx[screened]
            if idx.numel() == 0:
                return _assemble(z, idx, z.new_empty(0))
            try:
                return _assemble(z, idx, self._run(z[idx]))
            except (RuntimeError, ValueError) as err:
                if not _is_numerical_failure(err):
                    raise
            failed = True
        return _assemble(z, idx, self._bisect(z, idx, failed=failed))

    def _screen(self, z: Tensor, idx: Tensor) -> Tensor | None:
        """Per chain of ``idx``: whether one run of the model with validation off gives a
        finite energy (``None`` when that run fails too)."""
        if idx.numel() == 0:
            return None
        try:
            with torch.no_grad(), self._pyro.validation_enabled(False):
                return torch.isfinite(self._run(z[idx]))
        except (RuntimeError, ValueError):
            return None

    def _potential_one(self, zi: Tensor) -> Tensor:
        poutine = self._poutine
        data = {s: v for s, v in self.constrain(zi).items()}
        tr = poutine.trace(poutine.condition(self.model, data=data)).get_trace(
            *self.args, **self.kwargs
        )
        lp = tr.log_prob_sum(site_filter=lambda name, site: name not in self.deterministic_shapes)
        ld = sum(
            self.transforms[s].log_abs_det_jacobian(u, data[s]).sum()
            for s, u in self._split(zi).items()
        )
        return -(lp + ld)

    def _potential_loop(self, z: Tensor) -> Tensor:
        """Energies of ``z`` of shape ``(N, D)``, one model run per chain; ``+inf`` for a chain
        where the model fails numerically."""
        done, vals = [], []
        with torch.no_grad():
            finite = self._finite(z).tolist()
        for i, zi in enumerate(z):
            if not finite[i]:
                continue
            try:
                e = self._potential_one(zi)
            except (RuntimeError, ValueError) as err:
                if not _is_numerical_failure(err):
                    raise
                continue
            done.append(i)
            vals.append(e)
        if len(done) == z.shape[0]:
            return torch.stack(vals)
        idx = torch.tensor(done, dtype=torch.long, device=z.device)
        return _assemble(z, idx, torch.stack(vals) if vals else z.new_empty(0))

    def _deterministic_flat(self, z: Tensor) -> dict[str, Tensor]:
        """Deterministic sites of ``z`` ``(N, D)`` from one vectorized run, ``(N, *shape)``."""
        n = z.shape[0]
        tr, _ = self._conditioned_trace(z, log_prob=False)
        out = {}
        for s in self.deterministic_sites:
            v = cast(Tensor, tr.nodes[s]["value"])
            shape = self.deterministic_shapes[s]
            lead = v.ndim - len(shape)
            if lead < 0 or tuple(v.shape[lead:]) != tuple(shape):
                raise ValueError(f"deterministic site {s!r} has shape {tuple(v.shape)}")
            size = math.prod(v.shape[:lead])
            if size == n:
                out[s] = v.reshape((n,) + tuple(shape))
            elif size == 1:
                out[s] = v.reshape(shape).expand((n,) + tuple(shape))
            else:
                raise ValueError(f"deterministic site {s!r} has shape {tuple(v.shape)}")
        return out

    def _deterministic_loop(self, z: Tensor) -> dict[str, Tensor]:
        """Deterministic sites of ``z`` ``(N, D)``, one model run per chain; ``NaN`` for a
        chain where the model fails numerically."""
        poutine = self._poutine
        rows: dict[str, list[Tensor]] = {s: [] for s in self.deterministic_sites}
        for zi in z:
            try:
                tr = poutine.trace(poutine.condition(self.model, data=self.constrain(zi)))
                nodes = tr.get_trace(*self.args, **self.kwargs).nodes
            except (RuntimeError, ValueError) as err:
                if not _is_numerical_failure(err):
                    raise
                nodes = None
            for s in self.deterministic_sites:
                shape = self.deterministic_shapes[s]
                if nodes is None:
                    rows[s].append(torch.full(shape, math.nan, dtype=z.dtype, device=z.device))
                else:
                    rows[s].append(cast(Tensor, nodes[s]["value"]).reshape(shape))
        return {s: torch.stack(r) for s, r in rows.items()}

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1]) if len(batch) != 1 else z
        e = self._potential_flat(flat) if self.vectorize else self._potential_loop(flat)
        # a density the model leaves undefined (NaN: e.g. a scale of 0 with Pyro's validation
        # switched off) is zero density, as a validation failure is: +inf, never a silent NaN
        e = torch.where(torch.isnan(e), torch.full_like(e, math.inf), e)
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
        >>> tr = ebmcmc.sample(e, ebmcmc.kernels.MALA(0.3), e.initial_position(8, 0),
        ...                    num_samples=50, generator=0, trace_fn=e.trace_fn, progress=False)
        >>> tr.variables["mu"].shape
        torch.Size([8, 50])
    """
    if not callable(model):
        raise TypeError("model must be a callable Pyro model")
    return PyroEnergy(model, args, kwargs, vectorize=vectorize)
