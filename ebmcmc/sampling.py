"""The sampling driver: warm-up with adaptation, thinning, recording, progress and resume.

A run stops cleanly wherever it stops: Ctrl-C is taken at the next step boundary (see
:mod:`ebmcmc._interrupts`), an exception from the energy, the kernel or ``trace_fn`` rolls the
run back to its last complete draw (or warm-up step), and in both cases everything done so far
is kept (returned, attached to the error, and with ``out=`` on disk) in a form that resumes
bit for bit.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._checks import check_flag
from ._interrupts import deferred_interrupts
from ._random import make_generator
from .adaptation import WindowAdaptation
from .convergence import check_run
from .energy import declared_event_shape, validate
from .kernels.base import ChainState, Info, Kernel
from .kernels.proposal import take_chains
from .recording import MAX_CHUNK, MemorySink, Recorder
from .resume import adapter_state, restore_adapter, resume_kernel
from .stream import StreamWriter, load_stream
from .trace import Trace, WarmupProgress

__all__ = ["sample", "make_generator", "ConvergenceWarning", "SamplingError"]

TraceFn = Callable[[ChainState, Info], "Tensor | dict[str, Tensor]"]

#: the end-of-run R-hat of a streamed run uses at most this many (evenly spaced) draws a chain
CHECK_DRAWS = 1000
#: draws per chunk file when ``out=`` is given without ``checkpoint_every``
DEFAULT_CHECKPOINT = 1000


def _default_trace_fn(state: ChainState, info: Info) -> Tensor:
    return state.position


class ConvergenceWarning(UserWarning):
    """A sampling run that diverged, disagrees across chains (R-hat) or has stuck chains.

    Example:
        >>> issubclass(ConvergenceWarning, UserWarning)
        True
    """


class SamplingError(RuntimeError):
    """A run failed part-way; what it had done is kept.

    :func:`sample` raises it, chaining the original exception (``err.__cause__``), when the
    energy, the kernel or ``trace_fn`` raises after the run has done something (a warm-up step
    or a draw), or when ``trace_fn``'s output changes shape. An exception raised before that
    propagates as it is, and so does the ``TypeError`` or ``ValueError`` that says
    ``trace_fn``'s first output is unusable (not tensors, not of the batch shape), with the
    warm-up's progress in its ``partial_trace`` attribute.

    Attributes:
        partial_trace: the draws recorded before the failure, with the state, kernel and
            generator state after the last of them, so ``sample(..., init=err.partial_trace)``
            continues as if the run had not failed. A failure during warm-up gives a trace
            without draws that holds the warm-up's progress. With ``out=``, this is the trace
            directory, where everything is on disk.
        step: the step of this call that failed (warm-up steps first, counted from 0).

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA
        >>> calls = []
        >>> def energy(x):
        ...     calls.append(1)
        ...     if len(calls) == 50:
        ...         raise FloatingPointError("the network returned garbage")
        ...     return 0.5 * (x**2).sum(-1)
        >>> try:
        ...     ebmcmc.sample(energy, MALA(0.5), torch.zeros(64, 2), 1000, generator=0,
        ...                   progress=False)
        ... except ebmcmc.SamplingError as err:
        ...     kept, cause = err.partial_trace, err.__cause__
        >>> kept.num_draws, type(cause).__name__
        (47, 'FloatingPointError')
    """

    def __init__(self, message: str, partial_trace: Trace | None = None, step: int = 0):
        super().__init__(message)
        self.partial_trace = partial_trace
        self.step = step


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
        stacklevel=4,
    )
    return take_chains(state, index, batch_shape), torch.ones_like(moved)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def sample(
    energy: Callable[[Tensor], Tensor],
    kernel: Kernel,
    init: Tensor | ChainState | Trace | str | os.PathLike,
    num_samples: int,
    num_warmup: int = 0,
    thin: int = 1,
    generator: torch.Generator | int | None = None,
    trace_fn: TraceFn | None = None,
    progress: bool = True,
    adaptation: WindowAdaptation | None | str = "default",
    check: bool = True,
    out: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
) -> Trace:
    """Run many chains of ``kernel`` on ``energy`` and record a :class:`~ebmcmc.Trace`.

    Args:
        energy: batched energy, ``(*batch, *event) -> batch``.
        kernel: any ebmcmc kernel (``Langevin``, ``MALA``, ``HMC``, ``RandomWalk``, …).
        init: starting positions ``(*batch, *event)`` (one chain per batch element), a
            ``State`` from ``kernel.init``, or a ``Trace`` (or the path of a trace file or
            directory) to continue: its final state and (unless ``generator`` is given) its
            generator state are used, so sampling 1,000 steps equals sampling 500, saving,
            loading and sampling 500 more, bit for bit. Pass the trace's kernel
            (``trace.kernel``). A trace stopped during warm-up finishes that warm-up first
            (pass the interrupted call's ``num_warmup``).
        num_samples: draws to record per chain.
        num_warmup: adaptation steps before recording (not recorded).
        thin: record every ``thin``-th step; ``accept_prob`` is averaged and ``diverging``
            OR-ed over the steps between records.
        generator: ``torch.Generator`` (on the chains' device) or int seed; ``None`` draws a
            fresh seed (not reproducible).
        trace_fn: ``(state, info) -> Tensor | dict[str, Tensor]`` choosing what to record per
            draw; each tensor must have the batch as its leading dimensions and keep its
            shape and dtype from draw to draw. Default: the positions, recorded as ``"x"``.
            Record summaries for image-sized states.
        progress: show a tqdm progress bar.
        adaptation: warm-up adaptation: ``"default"`` (:class:`WindowAdaptation` with its
            defaults), a configured :class:`WindowAdaptation`, or ``None`` (off). With
            ``restart_stuck`` (the default), chains that have not accepted a single proposal
            halfway through warm-up are moved to randomly chosen moving chains' states, and a
            warning names them.
        check: after sampling, check the run and warn (:class:`ConvergenceWarning`, one line
            each) when draws diverged, when the rank-normalised R-hat of a recorded variable is
            at least 1.01, or when chains never moved; the figures are kept in
            ``trace.attrs`` (``max_rhat``, ``divergent``, ``stuck_chains``). R-hat reads at
            most 250,000 values per coordinate (every ``k``-th draw of every chain in longer
            runs) and, with ``out=``, at most 1,000 evenly spaced draws a chain.
        out: a directory to stream the draws to (see :mod:`ebmcmc.stream`): memory then
            holds one chunk, not the run, and the directory is a complete, resumable trace
            after every chunk. It must not exist, unless ``init`` is that directory (or the
            trace read from it): then the run is appended to it. The returned trace reads the
            directory lazily.
        checkpoint_every: with ``out=``, draws per chunk file (the index, with the state to
            resume from, is rewritten after each), and warm-up steps between saves of the
            warm-up's progress. Default 1,000 (fewer when 1,000 draws take over 64 MiB).

    Returns:
        A ``Trace`` with variables ``(chain, draw, *shape)`` and stats ``(chain, draw)``:
        ``energy``, ``accept_prob``, ``step_size``, ``diverging``. Batch dimensions are
        flattened into the chain dimension. A step size that stays constant is stored once per
        chain (a zero-stride view).

    Raises:
        SamplingError: the energy, the kernel or ``trace_fn`` failed part-way; the error's
            ``partial_trace`` holds what was done (see :class:`SamplingError`).

    Interrupted (Ctrl-C), the run stops after the step it is in (a second Ctrl-C stops at
    once) and returns, with a warning, the draws so far as a trace that resumes bit for bit;
    interrupted during warm-up, a trace without draws that finishes the warm-up when resumed.

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
    if checkpoint_every is not None:
        _check_int("checkpoint_every", checkpoint_every, 1)
        if out is None:
            raise ValueError("checkpoint_every needs out= (a directory to write the draws to)")

    if isinstance(init, str | os.PathLike):
        init = Trace.load(init)
    resumed = init if isinstance(init, Trace) else None
    if resumed is not None:
        if resumed.final_state is None:
            raise ValueError("init trace has no final state to resume from")
        kernel = resume_kernel(kernel, resumed, num_warmup, adaptation)
        state = kernel.init_from(energy, resumed.final_state)
    elif isinstance(init, ChainState):
        state = kernel.init_from(energy, init)
    elif isinstance(init, Tensor):
        state = kernel.init(energy, init)
        if state.event_ndim == 0 and declared_event_shape(energy) is None:
            validate(energy, init)  # a kernel that skipped the check: raise its error
    else:
        raise TypeError(f"init must be a Tensor, State or Trace, got {type(init).__name__}")
    x0 = state.position
    if generator is None and resumed is not None and resumed.generator_state is not None:
        gen = torch.Generator(device=x0.device)
        gen.set_state(resumed.generator_state)
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
    num_chains = int(torch.Size(batch_shape).numel())
    resumed_warmup = resumed.warmup if resumed is not None else None

    # ------------------------------------------------------------------ warm-up set-up
    adapter = None
    if num_warmup and adaptation is not None:
        adapter = adaptation.start(kernel, state, num_warmup)
        if resumed_warmup is not None and resumed_warmup.adapter is not None:
            restore_adapter(adapter, resumed_warmup.adapter, x0.device)
    if resumed_warmup is not None:
        moved = resumed_warmup.moved.to(x0.device)
        first_warmup = resumed_warmup.done
    else:
        moved = torch.zeros(batch_shape, dtype=torch.bool, device=x0.device)
        first_warmup = 0
    restart_at = num_warmup // 2 if adaptation and adaptation.restart_stuck else -1

    attrs: dict[str, Any] = {"kernel": type(kernel).__name__, "num_warmup": num_warmup,
                             "thin": thin}  # fmt: skip
    writer: StreamWriter | None = None
    continuing = False
    if out is not None:
        source = resumed.source if resumed is not None else None
        continuing = source is not None and Path(source).resolve() == Path(out).resolve()
        chunks = resumed.source_chunks if continuing and resumed is not None else None
        writer = StreamWriter(out, continuing, attrs, chunks)
        writer.kernel, writer.batch_shape = kernel, tuple(batch_shape)
        writer.check_stride = max(1, math.ceil(num_samples / CHECK_DRAWS))
    every = checkpoint_every or DEFAULT_CHECKPOINT

    def warmup_progress(done: int) -> WarmupProgress:
        kept = adapter_state(adapter) if adapter is not None else None
        return WarmupProgress(done, num_warmup, moved, kept)

    if writer is not None and not continuing:  # a valid trace from the start
        start = warmup_progress(first_warmup) if num_warmup > first_warmup else None
        writer.commit(state, gen.get_state(), kernel, start)

    bar = tqdm(
        total=num_warmup - first_warmup + num_samples * thin,
        disable=not progress,
        desc="warm-up" if num_warmup > first_warmup else "sampling",
        dynamic_ncols=True,
    )
    in_warmup = num_warmup > first_warmup
    done, gen_done = first_warmup, gen.get_state()  # the last complete warm-up step
    snap = (state, gen_done, 0)  # the last complete draw: (state, generator state, draws)
    memory: MemorySink | None = None
    sink: StreamWriter | MemorySink
    if writer is None:
        sink = memory = MemorySink(num_samples)
    else:
        sink = writer
    expect = writer.variables if writer is not None else None
    recorder = Recorder(batch_shape, state.energy, sink, checkpoint_every, expect,
                        DEFAULT_CHECKPOINT if writer is not None else MAX_CHUNK)  # fmt: skip
    accepted_any = torch.zeros(batch_shape, dtype=torch.bool, device=x0.device)

    def finish(failed: bool) -> Trace:
        """The trace of what was done: up to the last complete draw, or the warm-up's
        progress (checked, on disk with out=, unless the run failed)."""
        run = dict(attrs)
        if in_warmup:
            # the adapter matches the last complete step unless the failure tore an update
            torn = adapter is not None and adapter.iteration != done
            gen.set_state(gen_done)  # a generator passed in continues from the trace too
            progress = None if torn else warmup_progress(done)
            run["warmup_done"] = done
            if torn:  # an update broke half-way: the state is kept, the warm-up cannot be
                run["warmup_lost"] = 1
            if writer is not None:
                writer.commit(state, gen_done, kernel, progress)
                return load_stream(writer.path)
            return Trace({}, {}, state, kernel, gen_done, tuple(batch_shape), run, progress)
        last, last_gen, n = snap
        if n < num_samples:  # stopped early: roll a generator passed in back with the trace
            gen.set_state(last_gen)
        recorder.flush(snap, upto=n)
        run["recorded"] = ", ".join(sorted(recorder.names))
        if writer is not None:
            if check and n and not failed:
                found = check_run(writer.check_draws(), None, accepted_any.reshape(num_chains),
                                  divergent=(writer.divergent, n * num_chains))  # fmt: skip
                run.update(_checked(found))
            writer.commit(
                last,
                last_gen,
                kernel,
                attrs={k: v for k, v in run.items() if k not in attrs or k == "recorded"},
            )
            return load_stream(writer.path)
        run["num_samples"] = n
        variables, stats = memory.columns() if memory is not None and n else ({}, {})
        if check and n and not failed:
            run.update(_checked(check_run(variables, stats["diverging"],
                                          accepted_any.reshape(num_chains))))  # fmt: skip
        return Trace(variables, stats, last, kernel, last_gen, tuple(batch_shape), run)

    step = 0
    try:
        with deferred_interrupts() as flag:
            # ---------------------------------------------------------------- warm-up
            for i in range(first_warmup, num_warmup):
                new_state, info = kernel.step(energy, state, gen)
                new_moved = moved | info.accepted
                if i + 1 == restart_at:
                    new_state, new_moved = _restart_stuck(new_state, new_moved, batch_shape, gen)
                if adapter is not None:
                    kernel = adapter.update(kernel, new_state, info)
                gen_new = gen.get_state()
                state, moved, done, gen_done, step = new_state, new_moved, i + 1, gen_new, step + 1
                bar.update(1)
                if writer is not None and done % every == 0 and done < num_warmup:
                    writer.commit(state, gen_done, kernel, warmup_progress(done))
                if flag.requested:
                    raise KeyboardInterrupt
            if in_warmup:
                if adapter is not None:
                    kernel = adapter.finalize(kernel)
                    for msg in getattr(adapter, "messages", ()):
                        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
                if not bool(moved.all()):
                    stuck = (~moved).reshape(-1).nonzero().reshape(-1).tolist()
                    warnings.warn(
                        f"{len(stuck)} of {num_chains} chains never moved during warm-up "
                        f"(chains {_listed(stuck)}); they may start where the density is "
                        "degenerate or the step size is too large for them",
                        ConvergenceWarning,
                        stacklevel=2,
                    )
                bar.set_description("sampling")
                snap = (state, gen_done, 0)
                if writer is not None:
                    writer.kernel = kernel
                    writer.commit(state, gen_done, kernel)
                in_warmup = False

            # ---------------------------------------------------------------- sampling
            acc_sum = div_any = None
            for i in range(num_samples * thin):
                state, info = kernel.step(energy, state, gen)
                step += 1
                accepted_any |= info.accepted
                if thin > 1:
                    acc_sum = info.accept_prob if acc_sum is None else acc_sum + info.accept_prob
                    div_any = info.diverging if div_any is None else div_any | info.diverging
                    if (i + 1) % thin:
                        bar.update(1)
                        if flag.requested:
                            raise KeyboardInterrupt
                        continue
                    accept, diverging = acc_sum / thin, div_any
                    acc_sum = div_any = None
                else:
                    accept, diverging = info.accept_prob, info.diverging
                full = recorder.add(trace_fn(state, info), state.energy, accept, diverging,
                                    info.step_size)  # fmt: skip
                snap = (state, gen.get_state(), recorder.count)
                if full:
                    recorder.flush(snap)
                bar.update(1)
                if progress and recorder.count % 100 == 0:
                    bar.set_postfix(accept=f"{float(accept.double().mean()):.3f}")
                if flag.requested:
                    raise KeyboardInterrupt
            recorder.flush(snap)
    except KeyboardInterrupt:
        bar.close()
        if done == first_warmup and not snap[2]:
            gen.set_state(snap[1])  # a generator passed in is as it was
            raise  # nothing done in this call: nothing to keep
        where = (f"during warm-up after {done} of {num_warmup} steps" if in_warmup
                 else f"after {snap[2]} of {num_samples} draws")  # fmt: skip
        warnings.warn(
            f"sampling interrupted {where}; the returned trace holds "
            + ("the warm-up's progress" if in_warmup else "them")
            + " and resumes with sample(energy, trace.kernel, trace, ...)"
            + (f" (num_warmup={num_warmup})" if in_warmup else "")
            + (f"; all of it is in {str(out)!r}" if out is not None else ""),
            stacklevel=2,
        )
        return finish(False)
    except Exception as err:
        bar.close()
        if done == first_warmup and not snap[2]:
            gen.set_state(snap[1])
            raise  # nothing done in this call: the error as it is
        if getattr(err, "bad_argument", None) == "trace_fn":
            # what trace_fn returns at the first draw is unusable: an argument error, raised as
            # it is, with the warm-up kept on it
            err.partial_trace = finish(True)  # type: ignore[attr-defined]
            err.add_note("the warm-up is kept in err.partial_trace")
            raise
        stage = "warm-up" if in_warmup else "sampling"
        try:
            partial: Trace | None = finish(True)
            kept = (f"the warm-up's progress ({done} of {num_warmup} steps)" if in_warmup
                    else f"{snap[2]} draws")  # fmt: skip
        except Exception as inner:  # noqa: BLE001 - e.g. the disk is full: report both
            partial, kept = None, f"nothing (keeping the draws failed too: {inner!r})"
        raise SamplingError(
            f"sampling failed after {step} complete steps of this call ({stage}): "
            f"{type(err).__name__}: {err}. Kept: {kept}, in err.partial_trace"
            + (f" and in {str(out)!r}" if out is not None and partial is not None else ""),
            partial,
            step,
        ) from err
    finally:
        bar.close()
    return finish(False)


def _checked(found) -> dict[str, Any]:
    """The end-of-run check's figures for ``trace.attrs``, with its warnings issued."""
    for msg in found.messages:
        warnings.warn(msg, ConvergenceWarning, stacklevel=4)
    return {"max_rhat": found.max_rhat, "divergent": found.divergent,
            "stuck_chains": " ".join(str(i) for i in found.stuck)}  # fmt: skip
