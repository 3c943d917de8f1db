"""Recording a run's draws in chunks: little work per draw, memory bounded by what is kept.

:func:`ebmcmc.sample` hands every recorded draw to a :class:`Recorder`, which keeps the
step's tensors by reference (kernels return fresh tensors) in a short list, checks that
``trace_fn`` keeps returning the same names, shapes and dtypes, and hands each full chunk to a
*sink*: :class:`MemorySink` copies it into preallocated ``(chain, draw, …)`` buffers (so the
final trace costs its own size, never a second copy), and the stream writer of
:mod:`ebmcmc.stream` writes it to a chunk file. Statistics are kept compactly: a step size that
stays constant is one value per chain, divergences are one byte per draw.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from .kernels.proposal import per_chain

__all__ = ["Chunk", "Recorder", "MemorySink", "as_record", "CHUNK_BYTES"]

#: a chunk kept in memory before it is handed on holds at most about this many bytes
CHUNK_BYTES = 64 * 2**20
#: and at most this many draws when nothing asks for another size
MAX_CHUNK = 256


def as_record(value, name: str = "trace_fn") -> dict[str, Tensor]:
    """``trace_fn``'s output as ``name -> tensor`` (a lone tensor is ``"x"``).

    Example:
        >>> import torch
        >>> sorted(as_record(torch.zeros(2)))
        ['x']
    """
    if isinstance(value, Tensor):
        return {"x": value}
    if isinstance(value, dict) and value and all(isinstance(v, Tensor) for v in value.values()):
        return value
    raise TypeError(f"{name} must return a Tensor or a non-empty dict of Tensors")


class Chunk(NamedTuple):
    """Consecutive recorded draws, draw-major (``(n, chain, …)``), as a sink receives them.

    Attributes:
        start: index of the first draw in this run.
        variables: ``name -> (n, chain, *shape)``.
        energy: ``(n, chain)``.
        accept_prob: ``(n, chain)``, in the energy's dtype.
        diverging: ``(n, chain)`` bools.
        step_size: ``(chain,)`` when the step size stayed the same over the chunk, ``(n,
            chain)`` when it varied, ``None`` for kernels without one.

    Example:
        >>> import torch
        >>> c = Chunk(0, {"x": torch.zeros(3, 2, 1)}, torch.zeros(3, 2), torch.ones(3, 2),
        ...           torch.zeros(3, 2, dtype=torch.bool), torch.full((2,), 0.1))
        >>> c.num_draws
        3
    """

    start: int
    variables: dict[str, Tensor]
    energy: Tensor
    accept_prob: Tensor
    diverging: Tensor
    step_size: Tensor | None

    @property
    def num_draws(self) -> int:
        """Draws in the chunk."""
        return int(self.energy.shape[0])


class Sink(Protocol):
    """Where full chunks go: ``write(chunk, snapshot)``; ``snapshot`` is what a resume needs
    after the chunk's last draw (``(state, generator_state, draws)``)."""

    def write(self, chunk: Chunk, snapshot: tuple) -> None: ...


#: column specification: ``name -> (shape after (chain, draw), dtype)``
Spec = dict[str, tuple[tuple[int, ...], torch.dtype]]


class Recorder:
    """Collects recorded draws and hands them on in chunks.

    Args:
        batch_shape: the chains' batch shape.
        like: a ``batch``-shaped tensor of the chains' dtype and device (for step sizes).
        sink: receives the chunks (:class:`MemorySink` or a stream writer).
        chunk_size: draws per chunk; ``None``: as many as fit in :data:`CHUNK_BYTES`, at most
            ``max_chunk``.
        expect: the variables a continued file already records (``name -> (shape, dtype)``);
            the first draw must match them.
        max_chunk: the most draws a chunk chosen by memory holds.

    :meth:`add` returns whether the chunk is full; the caller then calls :meth:`flush` with
    the snapshot of that draw (so a file's index always matches its last chunk).

    Example:
        >>> import torch
        >>> sink = MemorySink(capacity=4)
        >>> rec = Recorder(torch.Size([2]), torch.zeros(2), sink, chunk_size=2)
        >>> for i in range(4):
        ...     if rec.add(torch.full((2, 1), float(i)), torch.zeros(2), torch.ones(2),
        ...                torch.zeros(2, dtype=torch.bool), 0.1):
        ...         rec.flush(None)
        >>> sink.columns()[0]["x"][0, :, 0]
        tensor([0., 1., 2., 3.])
    """

    def __init__(self, batch_shape, like: Tensor, sink: Sink, chunk_size: int | None = None,
                 expect: Spec | None = None, max_chunk: int = MAX_CHUNK):  # fmt: skip
        self.batch_shape = torch.Size(batch_shape)
        self.nb = len(self.batch_shape)
        self.num_chains = math.prod(self.batch_shape)
        self.like = like
        self.sink = sink
        self.chunk_size = chunk_size
        self.expect = expect
        self.max_chunk = max_chunk
        self.names: tuple[str, ...] = ()
        self.single = False  # trace_fn returns a lone tensor
        self.shapes: list[torch.Size] = []
        self.dtypes: list[torch.dtype] = []
        self.lists: list[list[Tensor]] = []
        self.energy: list[Tensor] = []
        self.accept: list[Tensor] = []
        self.diverging: list[Tensor] = []
        self.steps: list[Any] = []
        self.flushed = 0  # draws handed to the sink

    @property
    def count(self) -> int:
        """Draws recorded so far (handed on or pending)."""
        return self.flushed + len(self.energy)

    @property
    def spec(self) -> Spec:
        """``name -> (shape after (chain, draw), dtype)`` of the recorded variables."""
        return {n: (tuple(s[self.nb :]), d)
                for n, s, d in zip(self.names, self.shapes, self.dtypes, strict=True)}  # fmt: skip

    def _first(self, value) -> None:
        try:
            self._first_draw(value)
        except (TypeError, ValueError) as err:
            setattr(err, "bad_argument", "trace_fn")  # noqa: B010 - read by sample()
            raise

    def _first_draw(self, value) -> None:
        rec = as_record(value)
        for k, v in rec.items():
            if tuple(v.shape[: self.nb]) != tuple(self.batch_shape):
                raise ValueError(
                    f"trace_fn output {k!r} has shape {tuple(v.shape)}; its leading "
                    f"dimensions must be the batch shape {tuple(self.batch_shape)}"
                )
        self.single = isinstance(value, Tensor)
        self.names = tuple(rec)
        self.shapes = [v.shape for v in rec.values()]
        self.dtypes = [v.dtype for v in rec.values()]
        self.lists = [[] for _ in self.names]
        if self.expect is not None:
            want = {k: (tuple(s), d) for k, (s, d) in self.expect.items()}
            if self.spec != want:
                raise ValueError(
                    f"trace_fn records {_spec_text(self.spec)} but the trace being continued "
                    f"records {_spec_text(want)}; use the same trace_fn"
                )
        if self.chunk_size is None:
            size = sum(v.numel() * v.element_size() for v in rec.values())
            size += 3 * self.num_chains * self.like.element_size() + self.num_chains
            self.chunk_size = max(1, min(self.max_chunk, CHUNK_BYTES // max(size, 1)))

    def _check(self, value) -> None:
        """Raise an error that says how ``trace_fn``'s output changed at this draw (the slow
        path of :meth:`add`; returns when nothing changed)."""
        draw = self.count
        try:
            rec = as_record(value)
        except TypeError as err:
            raise TypeError(f"at draw {draw}: {err}") from None
        if tuple(rec) != self.names:
            raise ValueError(
                f"trace_fn returned {sorted(rec)} at draw {draw} but {sorted(self.names)} "
                "before; it must return the same names at every draw"
            )
        if isinstance(value, Tensor) != self.single:
            raise TypeError(f"trace_fn returned a {type(value).__name__} at draw {draw}, "
                            "not what it returned before")  # fmt: skip
        for k, s, d in zip(self.names, self.shapes, self.dtypes, strict=True):
            v = rec[k]
            if v.shape != s or v.dtype != d:
                raise ValueError(
                    f"trace_fn output {k!r} changed at draw {draw}: shape {tuple(v.shape)} "
                    f"{str(v.dtype).removeprefix('torch.')}, was {tuple(s)} "
                    f"{str(d).removeprefix('torch.')}; it must keep its shape and dtype"
                )

    def add(self, value, energy: Tensor, accept: Tensor, diverging: Tensor, step) -> bool:
        """Record one draw (``trace_fn``'s output and the step's statistics); return whether
        the chunk is full."""
        if not self.names:
            self._first(value)
        if self.single:
            if (
                type(value) is not Tensor
                or value.shape != self.shapes[0]
                or (value.dtype != self.dtypes[0])
            ):
                self._check(value)
            self.lists[0].append(value.detach())
        else:
            if type(value) is not dict or len(value) != len(self.names):
                self._check(value)
            for name, lst, s, d in zip(self.names, self.lists, self.shapes, self.dtypes,
                                       strict=True):  # fmt: skip
                v = value.get(name)
                if type(v) is not Tensor or v.shape != s or v.dtype != d:
                    self._check(value)
                lst.append(value[name].detach())
        self.energy.append(energy)
        self.accept.append(accept)
        self.diverging.append(diverging)
        self.steps.append(step)
        return len(self.energy) >= self.chunk_size  # type: ignore[operator]

    def _step_column(self, steps: list) -> Tensor | None:
        if not steps or any(s is None for s in steps):
            return None
        first = steps[0]
        if all(s is first or (isinstance(s, float) and s == first) for s in steps):
            return self._row(first).contiguous()  # one value per chain, not a broadcast
        return torch.stack([self._row(s) for s in steps], 0)

    def _row(self, value) -> Tensor:
        return per_chain(value, self.batch_shape, self.like, "step_size").reshape(self.num_chains)

    def flush(self, snapshot, upto: int | None = None) -> None:
        """Hand the pending draws (up to draw ``upto`` of the run) to the sink."""
        n = (self.count if upto is None else upto) - self.flushed
        if n <= 0:
            self._clear(len(self.energy))
            return
        c, nb = self.num_chains, self.nb

        def stack(items: list[Tensor]) -> Tensor:
            t = torch.stack(items[:n], 0)
            return t.reshape((n, c) + tuple(t.shape[1 + nb :]))

        dtype = self.like.dtype
        chunk = Chunk(
            self.flushed,
            {k: stack(lst) for k, lst in zip(self.names, self.lists, strict=True)},
            stack(self.energy),
            stack(self.accept).to(dtype),
            stack(self.diverging),
            self._step_column(self.steps[:n]),
        )
        self.sink.write(chunk, snapshot)
        self._clear(len(self.energy))
        self.flushed += n

    def _clear(self, n: int) -> None:
        for lst in (*self.lists, self.energy, self.accept, self.diverging, self.steps):
            del lst[:n]


def _spec_text(spec) -> str:
    return ", ".join(f"{k} {tuple(s)} {str(d).removeprefix('torch.')}"
                     for k, (s, d) in sorted(spec.items()))  # fmt: skip


class MemorySink:
    """Chunks copied into ``(chain, draw, …)`` buffers allocated once for the whole run.

    Args:
        capacity: the run's number of draws (the buffers' length).

    Example:
        >>> import torch
        >>> sink = MemorySink(capacity=3)
        >>> sink.write(Chunk(0, {"x": torch.ones(2, 4)}, torch.zeros(2, 4), torch.ones(2, 4),
        ...                  torch.zeros(2, 4, dtype=torch.bool), torch.full((4,), 0.5)), None)
        >>> v, s = sink.columns()
        >>> v["x"].shape, s["step_size"].shape, s["step_size"].stride()
        (torch.Size([4, 2]), torch.Size([4, 2]), (1, 0))
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.count = 0
        self.buffers: dict[str, Tensor] = {}
        self.stat_buffers: dict[str, Tensor] = {}
        self.step_row: Tensor | None = None  # the step size while it stays the same
        self.step_buffer: Tensor | None = None  # per draw, once it varies
        self.no_step = False

    def _buffer(self, like: Tensor) -> Tensor:
        shape = (like.shape[1], self.capacity) + tuple(like.shape[2:])
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def write(self, chunk: Chunk, snapshot) -> None:
        """Copy a chunk into the buffers (allocated at the first chunk)."""
        a, n = self.count, chunk.num_draws
        if a + n > self.capacity:
            raise ValueError(f"more draws than the {self.capacity} the buffers hold")
        stats = {"energy": chunk.energy, "accept_prob": chunk.accept_prob,
                 "diverging": chunk.diverging}  # fmt: skip
        for target, items in ((self.buffers, chunk.variables), (self.stat_buffers, stats)):
            for k, v in items.items():
                if k not in target:
                    target[k] = self._buffer(v)
                target[k][:, a : a + n].copy_(v.movedim(0, 1))
        self._steps(chunk.step_size, a, n)
        self.count += n

    def _steps(self, steps: Tensor | None, a: int, n: int) -> None:
        if steps is None or self.no_step:
            self.no_step = True
            self.step_row = self.step_buffer = None
            return
        if self.step_buffer is None:
            if steps.ndim == 1 and (
                a == 0 or (self.step_row is not None and torch.equal(self.step_row, steps))
            ):
                self.step_row = steps
                return
            self.step_buffer = torch.empty((steps.shape[-1], self.capacity), dtype=steps.dtype,
                                           device=steps.device)  # fmt: skip
            if self.step_row is not None and a:
                self.step_buffer[:, :a] = self.step_row[:, None]
            self.step_row = None
        self.step_buffer[:, a : a + n] = steps[:, None] if steps.ndim == 1 else steps.T

    def columns(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(variables, stats)`` of the draws written so far (views of the buffers)."""
        n = self.count
        variables = {k: b[:, :n] for k, b in self.buffers.items()}
        stats = {k: b[:, :n] for k, b in self.stat_buffers.items()}
        if self.step_buffer is not None:
            stats["step_size"] = self.step_buffer[:, :n]
        elif self.step_row is not None:
            stats["step_size"] = self.step_row[:, None].expand(-1, n)
        return variables, stats
