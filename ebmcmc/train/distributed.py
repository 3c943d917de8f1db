"""Data-parallel training under ``torchrun``: one process per device, gradients averaged.

:class:`DistributedContext` reads the ranks ``torchrun`` sets, picks the device, starts the
process group (NCCL on CUDA, gloo on CPU) and offers the few collectives a trainer needs;
outside ``torchrun`` it is a single-process no-op. :class:`DistributedTrainer` is a
:class:`~ebmcmc.train.Trainer` whose checkpoints hold every rank's generator state (written by
rank 0), so a multi-process run resumes exactly.

Each rank draws its own minibatches with its own generator (seed + rank); the sampler runs on
the plain module; after ``backward`` the parameter gradients are averaged over ranks and the
floating-point buffers (e.g. spectral-norm power-iteration vectors) are broadcast from rank 0,
so all ranks hold identical weights.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist

from .trainer import Trainer, load_checkpoint, save_atomic

__all__ = ["DistributedContext", "DistributedTrainer"]


class DistributedContext:
    """Rank, world size, device and the collectives of a data-parallel run.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, … or ``None`` (CUDA when available).
            Under ``torchrun`` on CUDA, each process takes ``cuda:LOCAL_RANK``.

    Attributes:
        enabled: whether this process is one of several (``RANK`` and ``WORLD_SIZE`` set).
        rank: this process's rank (0 outside ``torchrun``).
        world: the number of processes.
        device: the ``torch.device`` this process computes on.

    Example:
        >>> ctx = DistributedContext("cpu")   # outside torchrun: one process
        >>> ctx.enabled, ctx.rank, ctx.world, ctx.is_main
        (False, 0, 1, True)
        >>> ctx.mean({"loss": 1.5})
        {'loss': 1.5}
    """

    def __init__(self, device: str | None = None):
        self.enabled = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        if device is not None:
            dev = torch.device(device)
        else:
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dev.type == "cuda" and self.enabled:
            dev = torch.device("cuda", local)
        elif dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        self.device = dev
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op with one)."""
        if self.enabled:
            dist.barrier()

    def close(self, wait: bool = True) -> None:
        """Shut the process group down (no-op with one).

        With ``wait`` (a run that ended normally), every rank first waits for the others, so
        that none closes its connections while another is still in a collective; pass
        ``wait=False`` when leaving on an error (the other ranks may never get there). The
        backend is then destroyed and collected while the interpreter is fully alive: gloo's
        worker threads left for interpreter shutdown can abort a process whose work is done.
        """
        if self.enabled and dist.is_initialized():
            try:
                if wait:
                    dist.barrier()
            finally:
                dist.destroy_process_group()
                gc.collect()

    @torch.no_grad()
    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    @torch.no_grad()
    def grad_hook(self, model: torch.nn.Module) -> None:
        """Average the gradients over ranks (one flat all-reduce) and broadcast rank 0's
        floating-point buffers; pass it as the trainer's ``grad_hook``."""
        if not self.enabled:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for p in params:
            n = p.numel()
            assert p.grad is not None
            p.grad.copy_(flat[i : i + n].view_as(p.grad))
            i += n
        bufs = [b for b in model.buffers() if b.is_floating_point()]
        if bufs:
            fb = torch.cat([b.reshape(-1) for b in bufs])
            dist.broadcast(fb, 0)
            i = 0
            for b in bufs:
                b.copy_(fb[i : i + b.numel()].view_as(b))
                i += b.numel()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each logged figure over ranks."""
        if not self.enabled:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        t /= self.world
        return dict(zip(keys, t.tolist(), strict=True))


class DistributedTrainer(Trainer):
    """A :class:`~ebmcmc.train.Trainer` for data-parallel runs.

    Its checkpoints hold every rank's generator state and the world size; rank 0 writes them
    (the others wait), and :meth:`load` restores this rank's generator, so a resumed run
    continues exactly. Resuming with a different number of processes raises ``ValueError``.

    Args:
        *args: as for :class:`~ebmcmc.train.Trainer`.
        context: the run's :class:`DistributedContext`.
        **kwargs: as for :class:`~ebmcmc.train.Trainer` (pass
            ``grad_hook=context.grad_hook``).

    Example:
        >>> import tempfile, torch
        >>> from ebmcmc.estimators import ContrastiveDivergence
        >>> from ebmcmc.kernels import Langevin
        >>> from ebmcmc.nn import TimeMLP
        >>> from ebmcmc.train import TrainConfig
        >>> ctx = DistributedContext("cpu")
        >>> tr = DistributedTrainer(TimeMLP(2, hidden=8), ContrastiveDivergence(Langevin(0.01), 2),
        ...                         torch.randn(64, 2), TrainConfig(batch_size=16),
        ...                         run_dir=tempfile.mkdtemp(), context=ctx)
        >>> tr.save().name
        'checkpoint.pt'
    """

    def __init__(self, *args, context: DistributedContext, **kwargs):
        super().__init__(*args, **kwargs)
        self.context = context

    def _stop_requested(self, flag) -> bool:
        """Stop when any rank saw Ctrl-C, all ranks after the same step."""
        if not self.context.enabled:
            return flag.requested
        t = torch.tensor([float(flag.requested)], device=self.context.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def save(self, path=None):
        """Write the checkpoint (rank 0) after gathering every rank's generator state."""
        state = self.state_dict()
        gen = self.generator.get_state().cpu()
        ctx = self.context
        if ctx.enabled:
            gens: list = [None] * ctx.world
            dist.all_gather_object(gens, gen)
        else:
            gens = [gen]
        state["rank_generators"] = gens
        state["world_size"] = ctx.world
        out = None
        if ctx.is_main:
            path = self.run_dir / "checkpoint.pt" if path is None else path
            out = save_atomic(state, path)
        ctx.barrier()
        return out

    def load(self, path) -> None:
        """Restore the checkpoint and this rank's generator state."""
        super().load(path)
        ckpt = load_checkpoint(path, map_location="cpu")
        gens = ckpt.get("rank_generators")
        if gens is not None:
            if len(gens) != self.context.world:
                raise ValueError(
                    f"{path} was written by {len(gens)} process(es) and this run has "
                    f"{self.context.world}; an exact resume needs the same number"
                )
            g = gens[self.context.rank]
            self.generator.set_state(g if self.device.type == "cpu" else g.to(self.device))
