"""Quick convergence checks that every sampling run gets, without ArviZ.

:func:`ebmcmc.sample` ends with these: the rank-normalised split R-hat of the recorded
variables (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, the maximum of the bulk and the
folded-tail versions, as ArviZ and Stan compute it), the number of divergent draws and the
chains that never moved. They are written in torch so that sampling stays light; the full
diagnostics (ESS, MCSE, plots, reports) are in :mod:`ebmcmc.diagnostics`, through ArviZ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["rank_rhat", "RunCheck", "check_run", "RHAT_LIMIT"]

#: R-hat at or above this is reported (Vehtari et al. 2021)
RHAT_LIMIT = 1.01


def _split(x: Tensor) -> Tensor:
    """``(chain, draw, k)`` -> ``(2 chain, draw // 2, k)`` (the odd middle draw dropped)."""
    n = x.shape[1] // 2
    return torch.cat([x[:, :n], x[:, x.shape[1] - n :]], 0)


def _rhat(z: Tensor) -> Tensor:
    """Classic R-hat of ``(chain, draw, k)`` per column ``k`` (float64)."""
    n = z.shape[1]
    means = z.mean(1)
    b = n * means.var(0, unbiased=True)
    w = z.var(1, unbiased=True).mean(0)
    var = (n - 1) / n * w + b / n
    return torch.sqrt(var / w)


def _rank_normal(x: Tensor) -> Tensor:
    """Rank-normalise over all chains and draws, per column: ``Φ⁻¹((rank - 3/8) / (S + 1/4))``
    with average ranks for ties."""
    c, d, k = x.shape
    flat = x.reshape(c * d, k)
    s = flat.shape[0]
    sorted_vals, order = torch.sort(flat, dim=0, stable=True)
    pos = torch.arange(1, s + 1, dtype=flat.dtype, device=flat.device).unsqueeze(1).expand(s, k)
    # average ranks over ties (ArviZ uses scipy.stats.rankdata's "average"): each run of equal
    # sorted values gets the mean of its first and last positions (MALA's rejections repeat
    # values, so ties are the rule, not the exception)
    differs = sorted_vals[1:] != sorted_vals[:-1]
    edge = torch.ones(1, k, dtype=torch.bool, device=flat.device)
    starts = torch.cat([edge, differs])
    ends = torch.cat([differs, edge])
    first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(0).values
    last = torch.where(ends, pos, torch.full_like(pos, s + 1)).flip(0).cummin(0).values.flip(0)
    ranks = torch.empty_like(flat)
    ranks.scatter_(0, order, (first + last) / 2)
    p = (ranks - 0.375) / (s + 0.25)
    z = math.sqrt(2.0) * torch.erfinv(2 * p - 1)
    return z.reshape(c, d, k)


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
        xs = _split(x[..., ok])
        bulk = _rhat(_rank_normal(xs))
        med = xs.flatten(0, 1).median(0).values
        tail = _rhat(_rank_normal((xs - med).abs()))
        out[ok] = torch.maximum(bulk, tail)
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
            r = rank_rhat(v).reshape(-1)
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
