"""The chains of a long-run stability study: run in chunks, checkpointed, resumable.

:func:`run_chains` runs every start's chains through :func:`ebmcmc.sample` (no adaptation) in
chunks, records at each checkpoint the figures of :data:`CURVE_COLUMNS`, keeps the last
``window`` draws of two per-chain summaries for R-hat, and, with a progress file, saves its
state atomically at every checkpoint so that an interrupted study resumes to the same figures.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._files import atomic_write
from ..kernels.base import ChainState, Kernel, flatten_state, unflatten_state
from ..sampling import sample

__all__ = ["CURVE_COLUMNS", "ChainRuns", "run_chains"]

#: the columns of each start's curve in :attr:`StabilityResult.curves`
CURVE_COLUMNS = [
    "step",
    "energy_mean",
    "energy_q05",
    "energy_q50",
    "energy_q95",
    "quality",
    "saturation",
    "nonfinite",
    "divergences",
]

_FORMAT = "ebmcmc-stability/1"


@dataclass
class ChainRuns:
    """What :func:`run_chains` returns.

    Attributes:
        rows: ``start -> list of {column: value}``, one per checkpoint (step 0 first).
        window_energy: ``start -> (chains, <= window)`` energies of the last draws.
        window_mean: ``start -> (chains, <= window)`` per-chain mean coordinates.
        final: ``start -> final positions``.

    Example:
        >>> ChainRuns({}, {}, {}, {}).rows
        {}
    """

    rows: dict[str, list[dict[str, float]]]
    window_energy: dict[str, Tensor]
    window_mean: dict[str, Tensor]
    final: dict[str, Tensor]


def _figures(state: ChainState, nb: int, quality_fn, bounds) -> dict[str, float]:
    x, e = state.position.detach(), state.energy.detach()
    ef = e.reshape(-1).double()
    finite = ef[torch.isfinite(ef)]
    if finite.numel():
        q = torch.quantile(finite, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
        out = {
            "energy_mean": float(finite.mean()) if finite.numel() == ef.numel() else math.nan,
            "energy_q05": float(q[0]),
            "energy_q50": float(q[1]),
            "energy_q95": float(q[2]),
        }
    else:
        out = dict.fromkeys(["energy_mean", "energy_q05", "energy_q50", "energy_q95"], math.nan)
    flat = x.reshape((-1,) + tuple(x.shape[nb:]))
    out["nonfinite"] = float((~torch.isfinite(x)).sum() + (~torch.isfinite(e)).sum())
    if bounds is not None:
        lo, hi = bounds
        out["saturation"] = float(((x <= lo) | (x >= hi)).double().mean())
    else:
        out["saturation"] = math.nan
    out["quality"] = float(quality_fn(flat)) if quality_fn is not None else math.nan
    return out


def _mean_x(state: ChainState, info) -> dict[str, Tensor]:
    nb = state.energy.ndim
    return {"mean_x": state.position.flatten(start_dim=nb).mean(-1)}


def run_chains(
    energy: Callable[[Tensor], Tensor],
    kernel: Kernel,
    starts: Mapping[str, Tensor],
    steps: Sequence[int],
    *,
    window: int,
    quality_fn: Callable[[Tensor], float | Tensor] | None = None,
    bounds: tuple[float, float] | None = None,
    chunk_size: int = 1000,
    generator: int = 0,
    state_path: str | os.PathLike | None = None,
    key: str = "",
) -> ChainRuns:
    """Run each start's chains to every checkpoint in ``steps`` and record the figures.

    Args:
        energy: batched energy.
        kernel: any kernel, used as given.
        starts: ``name -> (chains, *event)`` initial positions.
        steps: increasing checkpoint steps.
        window: draws kept at the end for R-hat.
        quality_fn: ``positions -> float`` (lower is better), or ``None``.
        bounds: ``(low, high)`` for the saturation figure, or ``None``.
        chunk_size: the most steps per :func:`ebmcmc.sample` call (bounds memory).
        generator: int seed; start ``i`` uses ``generator + i``.
        state_path: progress file (resumed when its ``key`` matches).
        key: fingerprint of everything that changes the figures.

    Returns:
        A :class:`ChainRuns`. The chunking does not change the chains: the figures are
        bit-identical for any ``chunk_size`` and to one unchunked run.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA
        >>> runs = run_chains(lambda x: 0.5 * (x**2).sum(-1), MALA(0.5),
        ...                   {"a": torch.zeros(8, 2)}, [10, 100], window=50)
        >>> [r["step"] for r in runs.rows["a"]], tuple(runs.window_energy["a"].shape)
        ([0.0, 10.0, 100.0], (8, 50))
    """
    names = list(starts)
    states: dict[str, ChainState] = {}
    gens: dict[str, torch.Generator] = {}
    nbs: dict[str, int] = {}
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    win_e: dict[str, Tensor] = {}
    win_m: dict[str, Tensor] = {}
    divs: dict[str, float] = dict.fromkeys(names, 0.0)
    done = 0
    for i, n in enumerate(names):
        states[n] = kernel.init(energy, starts[n])
        nbs[n] = len(states[n].batch_shape)
        if nbs[n] == 0:
            raise ValueError(f"start {n!r}: the positions need a leading chain dimension")
        gens[n] = torch.Generator(device=starts[n].device).manual_seed(generator + i)
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.get("format") == _FORMAT and saved.get("key") == key:
            done = int(saved["done"])
            for n in names:
                s = saved["starts"][n]
                states[n] = unflatten_state(states[n], s["state"])
                gens[n].set_state(s["gen"])
                rows[n] = [dict(r) for r in s["rows"]]
                divs[n] = float(s["divs"])
                if s["win_e"] is not None:
                    win_e[n], win_m[n] = s["win_e"], s["win_m"]

    if done == 0:
        for n in names:
            rows[n] = [{"step": 0.0, **_figures(states[n], nbs[n], quality_fn, bounds)}]
            rows[n][0]["divergences"] = 0.0
    for target in [s for s in steps if s > done]:
        for n in names:
            at = done
            while at < target:
                k = min(chunk_size, target - at)
                tr = sample(
                    energy,
                    kernel,
                    states[n],
                    k,
                    generator=gens[n],
                    trace_fn=_mean_x,
                    progress=False,
                    adaptation=None,
                    check=False,  # the study judges the whole run, not each chunk
                )
                if tr.num_draws < k:  # interrupted inside sample(): keep the last checkpoint
                    raise KeyboardInterrupt
                if tr.final_state is None:  # sample() always records it
                    raise RuntimeError("sample() returned a trace without its final state")
                states[n] = tr.final_state
                divs[n] += float(tr.stats["diverging"].sum())
                e = tr.stats["energy"].detach()
                m = tr.variables["mean_x"].detach()
                if n in win_e:
                    e, m = torch.cat([win_e[n], e], 1), torch.cat([win_m[n], m], 1)
                win_e[n], win_m[n] = e[:, -window:].clone(), m[:, -window:].clone()
                at += k
            row = {"step": float(target), **_figures(states[n], nbs[n], quality_fn, bounds)}
            row["divergences"] = divs[n]
            rows[n].append(row)
        done = target
        if path is not None:
            payload = {
                "format": _FORMAT,
                "key": key,
                "done": done,
                "starts": {
                    n: {
                        "state": flatten_state(states[n]),
                        "gen": gens[n].get_state(),
                        "rows": rows[n],
                        "divs": divs[n],
                        "win_e": win_e.get(n),
                        "win_m": win_m.get(n),
                    }
                    for n in names
                },
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, functools.partial(torch.save, payload))
    final = {n: states[n].position.detach().clone() for n in names}
    return ChainRuns(rows, win_e, win_m, final)
