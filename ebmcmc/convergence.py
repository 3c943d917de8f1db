"""Quick convergence checks that every sampling run gets, without ArviZ.

:func:`ebmcmc.sample` ends with these: the rank-normalised split R-hat of the recorded
variables (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, the maximum of the bulk and the
folded-tail versions, as ArviZ and Stan compute it; a long run is thinned to at most
``MAX_CHECK_VALUES`` values per coordinate), the number of divergent draws and the chains that
never moved. They are written in torch so that sampling stays light; the full
diagnostics (ESS, MCSE, plots, reports) are in :mod:`ebmcmc.diagnostics`, through ArviZ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["rank_rhat", "RunCheck", "check_run", "RHAT_LIMIT", "MAX_CHECK_VALUES"]

#: R-hat at or above this is reported (Vehtari et al. 2021)
RHAT_LIMIT = 1.01
#: the most values per coordinate the end-of-run R-hat reads (longer runs are thinned)
MAX_CHECK_VALUES = 250_000


def _rhat(z: Tensor, chains: int) -> Tensor:
    """Classic R-hat per row of ``z`` ``(k, chains * n)``, each row chain after chain."""
    z = z.reshape(z.shape[0], chains, -1)
    n = z.shape[2]
    b = n * z.mean(2).var(1, unbiased=True)
    w = z.var(2, unbiased=True).mean(1)
    return torch.sqrt(((n - 1) / n * w + b / n) / w)


def _normal_scores(ranks: Tensor, s: int) -> Tensor:
    """``Φ⁻¹((rank − 3/8) / (s + 1/4))`` (Blom's normal scores)."""
    return math.sqrt(2.0) * torch.erfinv(2 * ((ranks - 0.375) / (s + 0.25)) - 1)


def _rank_normal(v: Tensor) -> tuple[Tensor, Tensor]:
    """Rank-normalise each row of ``v`` ``(k, s)``: ``Φ⁻¹((rank − 3/8) / (s + 1/4))`` with
    average ranks for ties (ArviZ uses scipy's ``rankdata(method="average")``).

    Returns the normal scores and the sorted rows. Average ranks are whole or half numbers, so
    the scores come from one table of ``2 s − 1`` values shared by every row.
    """
    k, s = v.shape
    sorted_vals, order = torch.sort(v, dim=1)  # ties are averaged below: stability not needed
    differs = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    # table[i] is the score of rank 1 + i / 2
    table = _normal_scores(torch.arange(2, 2 * s + 1, dtype=v.dtype, device=v.device) / 2, s)
    if bool(differs.all()):
        z_sorted = table[::2].expand(k, s)
    else:
        # (MALA's rejections repeat values, so ties are the rule there, not the exception):
        # each run of equal sorted values gets the mean of its first and last positions
        pos = torch.arange(1, s + 1, device=v.device).expand(k, s)
        edge = torch.ones(k, 1, dtype=torch.bool, device=v.device)
        first = torch.where(torch.cat([edge, differs], 1), pos, 0).cummax(1).values
        ends = torch.cat([differs, edge], 1)
        last = torch.where(ends, pos, s + 1).flip(1).cummin(1).values.flip(1)
        z_sorted = table[first + last - 2]
    z = torch.empty_like(v)
    z.scatter_(1, order, z_sorted)
    return z, sorted_vals


def rank_rhat(draws: Tensor) -> Tensor:
    """Rank-normalised split R-hat per coordinate: the larger of the bulk and the tail (folded)
    versions.

    Args:
        draws: ``(chain, draw, *shape)``, at least 2 chains... or 1 chain of 4+ draws (split).

    Returns:
        float64 tensor of ``shape`` (NaN for coordinates that are constant or non-finite).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4, 500, 2, generator=g, dtype=torch.float64)
        >>> bool((rank_rhat(x) < 1.01).all())
        True
        >>> x[0] += 3.0   # one chain elsewhere
        >>> bool((rank_rhat(x) > 1.1).all())
        True
    """
    if draws.ndim < 2:
        raise ValueError(f"draws must be (chain, draw, ...), got shape {tuple(draws.shape)}")
    shape = draws.shape[2:]
    x = draws.detach().to(torch.float64).reshape(draws.shape[0], draws.shape[1], -1)
    if x.shape[1] < 4:
        return torch.full(shape, math.nan, dtype=torch.float64)
    out = torch.full((x.shape[-1],), math.nan, dtype=torch.float64)
    ok = torch.isfinite(x).all(0).all(0) & (x.flatten(0, 1).std(0) > 0)
    if bool(ok.any()):
        # split each chain in halves (the odd middle draw dropped); one row per coordinate,
        # chain after chain, so that sorting runs along contiguous memory
        n = x.shape[1] // 2
        halves = torch.cat([x[:, :n, ok], x[:, x.shape[1] - n :, ok]], 0)
        rows = halves.permute(2, 0, 1).reshape(int(ok.sum()), -1).contiguous()
        z, sorted_rows = _rank_normal(rows)
        bulk = _rhat(z, halves.shape[0])
        s = rows.shape[1]  # the median as numpy's (the mean of the middle two when s is even)
        mid = sorted_rows[:, (s - 1) // 2] + sorted_rows[:, s // 2]
        z_tail, _ = _rank_normal((rows - (mid / 2).unsqueeze(1)).abs())
        out[ok] = torch.maximum(bulk, _rhat(z_tail, halves.shape[0]))
    return out.reshape(shape)


@dataclass
class RunCheck:
    """What :func:`check_run` found in a run.

    Attributes:
        max_rhat: the largest R-hat over the checked coordinates (NaN when undefined).
        rhat_over: how many coordinates have R-hat ``>= RHAT_LIMIT``.
        rhat_checked: how many coordinates were checked.
        divergent: divergent draws.
        stuck: indices (flat over the chains) of chains that accepted nothing.
        messages: one line per problem (empty when none).

    Example:
        >>> RunCheck(1.0, 0, 2, 0, []).messages
        []
    """

    max_rhat: float
    rhat_over: int
    rhat_checked: int
    divergent: int
    stuck: list[int]
    messages: list[str] = field(default_factory=list)


def check_run(
    variables: dict[str, Tensor],
    diverging: Tensor | None,
    accepted_any: Tensor | None,
    max_coordinates: int = 1000,
    divergent: tuple[int, int] | None = None,
    max_values: int = MAX_CHECK_VALUES,
) -> RunCheck:
    """R-hat of the recorded variables, divergences and stuck chains, with a message for each
    problem.

    Args:
        variables: ``name -> (chain, draw, *shape)``.
        diverging: ``(chain, draw)`` flags, or ``None``.
        accepted_any: ``(chain,)``: whether each chain accepted anything, or ``None``.
        max_coordinates: variables with more coordinates (images) are not R-hat checked.
        divergent: ``(divergent draws, draws)`` counted elsewhere, used when ``diverging`` is
            ``None`` (a run streamed to disk counts them chunk by chunk).
        max_values: R-hat reads at most this many values per coordinate: a longer run is
            thinned to every ``k``-th draw of every chain (R-hat sorts every value it reads
            twice, which for 1,024 chains × 1,000 draws of a cheap target costs more than the
            sampling). The full diagnostics are :func:`ebmcmc.diagnostics.summary`'s.

    Example:
        >>> import torch
        >>> x = torch.randn(4, 100, 2, generator=torch.Generator().manual_seed(0))
        >>> check_run({"x": x}, torch.zeros(4, 100, dtype=torch.bool),
        ...           torch.tensor([True, True, True, False])).stuck
        [3]
    """
    worst, over, checked = math.nan, 0, 0
    name_worst = ""
    if next(iter(variables.values())).shape[0] * next(iter(variables.values())).shape[1] >= 8:
        for name, v in variables.items():
            if not v.is_floating_point() or v[0, 0].numel() > max_coordinates:
                continue
            every = max(1, math.ceil(v.shape[0] * v.shape[1] / max_values))
            every = min(every, max(1, v.shape[1] // 4))  # keep four draws a chain at least
            r = rank_rhat(v[:, ::every]).reshape(-1)
            finite = r[torch.isfinite(r)]
            checked += int(r.numel())
            over += int((finite >= RHAT_LIMIT).sum())
            if finite.numel() and not (float(finite.max()) <= worst):
                worst, name_worst = float(finite.max()), name
    msgs = []
    if over:
        msgs.append(
            f"R-hat >= {RHAT_LIMIT} for {over} of {checked} coordinates (max {worst:.3f}, in "
            f"{name_worst!r}): the chains disagree; run longer or check "
            "ebmcmc.diagnostics.summary(trace)"
        )
    if diverging is not None:
        num_divergent, total = int(diverging.sum()), diverging.numel()
    else:
        num_divergent, total = divergent if divergent is not None else (0, 0)
    if num_divergent:
        msgs.append(
            f"{num_divergent} of {total} draws diverged: the trajectories left the region where "
            "the step size is stable; the draws may be biased (try a smaller step or a higher "
            "target_accept)"
        )
    stuck: list[int] = []
    if accepted_any is not None:
        stuck = (~accepted_any).nonzero().reshape(-1).tolist()
        if stuck:
            shown = ", ".join(str(i) for i in stuck[:10]) + (" …" if len(stuck) > 10 else "")
            msgs.append(
                f"{len(stuck)} of {accepted_any.numel()} chains never moved (chains {shown}): "
                "they are stuck where they started"
            )
    return RunCheck(worst, over, checked, num_divergent, stuck, msgs)
