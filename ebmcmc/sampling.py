"""The sampling driver: warm-up with adaptation, thinning, recording, progress and resume."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._checks import check_flag
from ._random import make_generator
from .adaptation import WindowAdaptation
from .convergence import check_run
from .kernels.base import ChainState, Info, Kernel
from .kernels.proposal import per_chain, take_chains
from .trace import Trace

__all__ = ["sample", "make_generator", "ConvergenceWarning"]

TraceFn = Callable[[ChainState, Info], "Tensor | dict[str, Tensor]"]


def _default_trace_fn(state: ChainState, info: Info) -> Tensor:
    return state.position


def _as_record(value, name: str = "trace_fn") -> dict[str, Tensor]:
    if isinstance(value, Tensor):
        return {"x": value}
    if isinstance(value, dict) and value and all(isinstance(v, Tensor) for v in value.values()):
        return value
    raise TypeError(f"{name} must return a Tensor or a non-empty dict of Tensors")


class ConvergenceWarning(UserWarning):
    """A sampling run that diverged, disagrees across chains (R-hat) or has stuck chains.

    Example:
        >>> issubclass(ConvergenceWarning, UserWarning)
        True
    """


def _listed(ids: list[int], most: int = 10) -> str:
    return ", ".join(str(i) for i in ids[:most]) + (" …" if len(ids) > most else "")


def _restart_stuck(state, moved: Tensor, batch_shape, gen: torch.Generator):
    """Move the chains that never accepted to the states of randomly chosen moving chains."""
    stuck = (~moved).reshape(-1)
    if not bool(stuck.any()) or bool(stuck.all()):
        return state, moved
    healthy = (~stuck).nonzero().reshape(-1)
    pick = torch.randint(healthy.numel(), (int(stuck.sum()),), generator=gen, device=gen.device)
    index = torch.arange(stuck.numel(), device=moved.device)
    index[stuck] = healthy[pick.to(moved.device)]
    ids = stuck.nonzero().reshape(-1).tolist()
    warnings.warn(
        f"{len(ids)} chains had not moved halfway through warm-up (chains {_listed(ids)}); "
        "restarted from the states of randomly chosen moving chains",
        ConvergenceWarning,
        stacklevel=3,
    )
    return take_chains(state, index, batch_shape), torch.ones_like(moved)


class _StepSizes:
    """The ``step_size`` statistic: one row while the step size is constant, one per draw once
    it changes."""

    def __init__(self, batch_shape, like: Tensor):
        self.batch_shape, self.like = batch_shape, like
        self.first = None
        self.rows: list[Tensor] | None = None  # per draw, once the step size varies
        self.count = 0

    def _row(self, value) -> Tensor:
        return per_chain(value, self.batch_shape, self.like, "step_size")

    def record(self, value) -> None:
        if value is None:
            return
        if self.count == 0:
            self.first = value
        elif (
            self.rows is None
            and value is not self.first
            and not (isinstance(value, float) and value == self.first)
        ):
            self.rows = [self._row(self.first)] * self.count
        if self.rows is not None:
            self.rows.append(self._row(value))
        self.count += 1

    def chain_major(self, recorded: int, num_chains: int) -> Tensor | None:
        if self.count == 0 or self.count < recorded:
            return None
        if self.rows is None:
            row = self._row(self.first).reshape(num_chains)
            return row[:, None].expand(num_chains, recorded).contiguous()
        t = torch.stack(self.rows[:recorded], 0).reshape(recorded, num_chains)
        return t.transpose(0, 1).contiguous()


class _Rows:
    """One recorded quantity, a tensor per step, stacked into a chunk every ``_CHUNK`` steps.

    Kept per step, the tensors would be thousands of long-lived Python objects, and the
    garbage collector's full passes (their cost grows with the objects alive) would cost more
    per step than the step's arithmetic; as chunks they are a few objects.
    """

    __slots__ = ("chunks", "rows")

    def __init__(self) -> None:
        self.chunks: list[Tensor] = []
        self.rows: list[Tensor] = []

    def append(self, t: Tensor) -> None:
        rows = self.rows
        rows.append(t)
        if len(rows) == _CHUNK:
            self.chunks.append(torch.stack(rows))
            rows.clear()

    def stacked(self, n: int) -> Tensor:
        """The first ``n`` rows stacked: ``(n, *shape)``."""
        parts = self.chunks + [torch.stack(self.rows)] if self.rows else self.chunks
        return (torch.cat(parts) if len(parts) > 1 else parts[0])[:n]


class _Ever:
    """Per chain, whether a per-step flag was ever set, OR-ed every ``_CHUNK`` steps (one
    operation per chunk instead of one per step, a few objects alive at a time)."""

    __slots__ = ("value", "rows")

    def __init__(self, like: Tensor) -> None:
        self.value = like
        self.rows: list[Tensor] = []

    def append(self, t: Tensor) -> None:
        rows = self.rows
        rows.append(t)
        if len(rows) == _CHUNK:
            self.value = self.result()
            rows.clear()

    def result(self) -> Tensor:
        """The OR over every step so far."""
        return torch.stack([self.value, *self.rows]).any(0) if self.rows else self.value


_CHUNK = 256


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def sample(
    energy: Callable[[Tensor], Tensor],
    kernel: Kernel,
    init: Tensor | ChainState | Trace,
    num_samples: int,
    num_warmup: int = 0,
    thin: int = 1,
    generator: torch.Generator | int | None = None,
    trace_fn: TraceFn | None = None,
    progress: bool = True,
    adaptation: WindowAdaptation | None | str = "default",
    check: bool = True,
) -> Trace:
    """Run many chains of ``kernel`` on ``energy`` and record a :class:`~ebmcmc.Trace`.

    Args:
        energy: batched energy, ``(*batch, *event) -> batch``.
        kernel: any ebmcmc kernel (``Langevin``, ``MALA``, ``HMC``, ``RandomWalk``, …).
        init: starting positions ``(*batch, *event)`` (one chain per batch element), a
            ``State`` from ``kernel.init``, or a ``Trace`` to continue: its final state and
            (unless ``generator`` is given) its generator state are used, so sampling 1,000
            steps equals sampling 500, saving, loading and sampling 500 more, bit for bit.
        num_samples: draws to record per chain.
        num_warmup: adaptation steps before recording (not recorded).
        thin: record every ``thin``-th step; ``accept_prob`` is averaged and ``diverging``
            OR-ed over the steps between records.
        generator: ``torch.Generator`` (on the chains' device) or int seed; ``None`` draws a
            fresh seed (not reproducible).
        trace_fn: ``(state, info) -> Tensor | dict[str, Tensor]`` choosing what to record per
            draw; each tensor must have the batch as its leading dimensions. Default: the
            positions, recorded as ``"x"``. Record summaries for image-sized states.
        progress: show a tqdm progress bar.
        adaptation: warm-up adaptation: ``"default"`` (:class:`WindowAdaptation` with its
            defaults), a configured :class:`WindowAdaptation`, or ``None`` (off). With
            ``restart_stuck`` (the default), chains that have not accepted a single proposal
            halfway through warm-up are moved to randomly chosen moving chains' states, and a
            warning names them.
        check: after sampling, check the run and warn (:class:`ConvergenceWarning`, one line
            each) when draws diverged, when the rank-normalised R-hat of a recorded variable is
            at least 1.01, or when chains never moved; the figures are kept in
            ``trace.attrs`` (``max_rhat``, ``divergent``, ``stuck_chains``).

    Returns:
        A ``Trace`` with variables ``(chain, draw, *shape)`` and stats ``(chain, draw)``:
        ``energy``, ``accept_prob``, ``step_size``, ``diverging``. Batch dimensions are
        flattened into the chain dimension.

    If interrupted (``KeyboardInterrupt``) while recording, the draws so far are returned as
    a resumable trace, with a warning.

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import HMC
        >>> from ebmcmc.targets import Banana
        >>> tr = ebmcmc.sample(Banana(), HMC(step_size=0.1, num_leapfrog_steps=10),
        ...                    torch.zeros(64, 2),
        ...                    num_samples=200, num_warmup=200, generator=0, progress=False)
        >>> tr.draws.shape
        torch.Size([64, 200, 2])
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be an ebmcmc Kernel, got {type(kernel).__name__}")
    num_samples = _check_int("num_samples", num_samples, 1)
    num_warmup = _check_int("num_warmup", num_warmup, 0)
    thin = _check_int("thin", thin, 1)
    if not callable(energy):
        raise TypeError("energy must be callable")
    if trace_fn is not None and not callable(trace_fn):
        raise TypeError(
            f"trace_fn must be callable (state, info) -> Tensor or dict, got {trace_fn!r}"
        )
    progress, check = check_flag("progress", progress), check_flag("check", check)
    trace_fn = trace_fn or _default_trace_fn
    if adaptation == "default":
        adaptation = WindowAdaptation()
    elif adaptation is not None and not isinstance(adaptation, WindowAdaptation):
        raise TypeError("adaptation must be 'default', a WindowAdaptation or None")

    resumed_gen_state = None
    if isinstance(init, Trace):
        if init.final_state is None:
            raise ValueError("init trace has no final state to resume from")
        state = kernel.init_from(energy, init.final_state)
        resumed_gen_state = init.generator_state
    elif isinstance(init, ChainState):
        state = kernel.init_from(energy, init)
    elif isinstance(init, Tensor):
        state = kernel.init(energy, init)
    else:
        raise TypeError(f"init must be a Tensor, State or Trace, got {type(init).__name__}")
    x0 = state.position
    if generator is None and resumed_gen_state is not None:
        gen = torch.Generator(device=x0.device)
        gen.set_state(resumed_gen_state)
    else:
        gen = make_generator(generator, x0.device)
    if gen.device.type != x0.device.type:
        raise ValueError(
            f"generator is on {gen.device} but the chains are on {x0.device}; create it with "
            f"torch.Generator(device={str(x0.device)!r})"
        )
    batch_shape = state.batch_shape
    if len(batch_shape) == 0:
        raise ValueError(
            "the energy returned a scalar: init needs a leading chain dimension, e.g. "
            "x[None] for one chain"
        )
    nb = len(batch_shape)
    num_chains = int(torch.Size(batch_shape).numel())

    bar = tqdm(
        total=num_warmup + num_samples * thin,
        disable=not progress,
        desc="warm-up" if num_warmup else "sampling",
        dynamic_ncols=True,
    )
    # ------------------------------------------------------------------ warm-up
    if num_warmup:
        adapter = adaptation.start(kernel, state, num_warmup) if adaptation else None
        restart_at = num_warmup // 2 if adaptation and adaptation.restart_stuck else -1
        moved = torch.zeros(batch_shape, dtype=torch.bool, device=x0.device)
        try:
            for i in range(num_warmup):
                state, info = kernel.step(energy, state, gen)
                moved |= info.accepted
                if i + 1 == restart_at:
                    state, moved = _restart_stuck(state, moved, batch_shape, gen)
                if adapter is not None:
                    kernel = adapter.update(kernel, state, info)
                bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            raise
        if adapter is not None:
            kernel = adapter.finalize(kernel)
        if not bool(moved.all()):
            stuck = (~moved).reshape(-1).nonzero().reshape(-1).tolist()
            warnings.warn(
                f"{len(stuck)} of {num_chains} chains never moved during warm-up (chains "
                f"{_listed(stuck)}); they may start where the density is degenerate or the "
                "step size is too large for them",
                ConvergenceWarning,
                stacklevel=2,
            )
        bar.set_description("sampling")

    # ------------------------------------------------------------------ sampling
    # Per-step tensors are kept by reference (kernels return fresh tensors), stacked in chunks.
    records: dict[str, _Rows] = {}
    stat_lists: dict[str, _Rows] = {"energy": _Rows(), "accept_prob": _Rows(), "diverging": _Rows()}
    # the step size each recorded step used: kept once while it stays the same object (a
    # tuned constant), per draw as soon as it varies (jitter, per-level step sizes)
    steps = _StepSizes(batch_shape, state.energy)
    acc_sum = div_any = None
    accepted = _Ever(torch.zeros(batch_shape, dtype=torch.bool, device=x0.device))
    recorded = 0
    try:
        for i in range(num_samples * thin):
            state, info = kernel.step(energy, state, gen)
            accepted.append(info.accepted)
            if thin > 1:
                acc_sum = info.accept_prob if acc_sum is None else acc_sum + info.accept_prob
                div_any = info.diverging if div_any is None else div_any | info.diverging
                if (i + 1) % thin:
                    bar.update(1)
                    continue
                accept, diverging = acc_sum / thin, div_any
                acc_sum = div_any = None
            else:
                accept, diverging = info.accept_prob, info.diverging
            rec = _as_record(trace_fn(state, info))
            if not records:
                for k, v in rec.items():
                    if tuple(v.shape[:nb]) != tuple(batch_shape):
                        raise ValueError(
                            f"trace_fn output {k!r} has shape {tuple(v.shape)}; its leading "
                            f"dimensions must be the batch shape {tuple(batch_shape)}"
                        )
                    records[k] = _Rows()
            for k, v in rec.items():
                records[k].append(v.detach() if v.requires_grad else v)
            stat_lists["energy"].append(state.energy)
            stat_lists["accept_prob"].append(accept)
            stat_lists["diverging"].append(diverging)
            steps.record(info.step_size)
            recorded += 1
            bar.update(1)
            if recorded % 100 == 0 and progress:
                bar.set_postfix(accept=f"{float(accept.double().mean()):.3f}")
    except KeyboardInterrupt:
        if recorded == 0:
            bar.close()
            raise
        warnings.warn(
            f"sampling interrupted after {recorded} of {num_samples} draws; the returned trace "
            "holds them and can be resumed with sample(..., init=trace)",
            stacklevel=2,
        )
    finally:
        bar.close()

    def chain_major(items: _Rows) -> Tensor:
        t = items.stacked(recorded)  # (draw, *batch, ...)
        t = t.reshape((recorded, num_chains) + tuple(t.shape[1 + nb :]))
        return t.transpose(0, 1).contiguous()

    variables = {k: chain_major(v) for k, v in records.items()}
    stats = {k: chain_major(v) for k, v in stat_lists.items()}
    stats["accept_prob"] = stats["accept_prob"].to(state.energy.dtype)
    step_stat = steps.chain_major(recorded, num_chains)
    if step_stat is not None:
        stats["step_size"] = step_stat
    attrs: dict[str, Any] = {
        "kernel": type(kernel).__name__,
        "num_warmup": num_warmup,
        "thin": thin,
        "num_samples": recorded,
        "recorded": ", ".join(sorted(records)),
    }
    if check and recorded:
        found = check_run(variables, stats["diverging"], accepted.result().reshape(num_chains))
        attrs.update(max_rhat=found.max_rhat, divergent=found.divergent,
                     stuck_chains=" ".join(str(i) for i in found.stuck))  # fmt: skip
        for msg in found.messages:
            warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    return Trace(variables, stats, state, kernel, gen.get_state(), tuple(batch_shape), attrs)
