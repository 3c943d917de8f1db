"""Tests for ebmcmc.studies (long-run studies), sample_stats_summary and nested
R-hat (the bridge's NumPy formula against an independent computation)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import ebmcmc
from ebmcmc import arviz_bridge
from ebmcmc.diagnostics import nested_rhat, sample_stats_summary
from ebmcmc.evaluation import mmd
from ebmcmc.kernels import MALA, Langevin
from ebmcmc.kernels.base import Info, Kernel, State
from ebmcmc.studies import CURVE_COLUMNS, StabilityCriteria, report_stability, stability
from ebmcmc.targets import Gaussian

# ------------------------------------------------------------------ nested R-hat


def _nested_by_hand(x: np.ndarray, k: int) -> float:
    """Margossian et al. (2024) eqs. 4-8 written out with loops (no splitting/ranking)."""
    c, n = x.shape
    m = c // k
    groups = [x[j * m : (j + 1) * m] for j in range(k)]
    sup_means = [g.mean() for g in groups]
    overall = sum(sup_means) / k
    b_nu = sum((s - overall) ** 2 for s in sup_means) / (k - 1)
    w = 0.0
    for g, s in zip(groups, sup_means, strict=True):
        chain_means = [row.mean() for row in g]
        b_k = sum((cm - s) ** 2 for cm in chain_means) / (m - 1) if m > 1 else 0.0
        w_k = (
            sum(
                sum((v - cm) ** 2 for v in row) / (n - 1)
                for row, cm in zip(g, chain_means, strict=True)
            )
            / m
        )
        w += (b_k + w_k) / k
    return float(np.sqrt(1 + b_nu / w))


@pytest.mark.parametrize("m", [1, 4])
def test_nested_rhat_numpy_matches_independent_formula(rng, m):
    x = rng.normal(size=(3 * m, 40)) + np.repeat(rng.normal(size=3), m)[:, None] * 0.3
    got = arviz_bridge.nested_rhat_numpy(x, 3, method="identity")
    assert got == pytest.approx(_nested_by_hand(x, 3), rel=1e-12)
    half = x.shape[1] // 2
    split = np.vstack((x[:, :half], x[:, -half:]))
    ids = np.hstack((np.repeat(np.arange(3), m),) * 2)
    order = np.argsort(ids, kind="stable")
    assert arviz_bridge.nested_rhat_numpy(x, 3, method="split") == pytest.approx(
        _nested_by_hand(split[order], 3), rel=1e-12
    )


def test_nested_rhat_near_one_on_iid_and_large_across_modes(rng):
    iid = rng.normal(size=(32, 30, 2))
    r = nested_rhat({"x": iid}, superchains=8)
    assert list(r.index) == ["x[0]", "x[1]"]
    assert (r < 1.02).all() and (r >= 1.0).all()
    modes = iid + np.repeat([-3.0, 3.0, -3.0, 3.0], 8)[:, None, None]
    assert (nested_rhat({"x": modes}, superchains=4) > 1.5).all()
    # the bridge agrees with itself through a per-chain id list, in any id order
    ids = np.repeat([2, 0, 3, 1], 8)
    np.testing.assert_allclose(
        arviz_bridge.rhat_nested({"x": modes}, ids)["x"].values,
        nested_rhat({"x": modes}, 4).to_numpy(),
        rtol=1e-12,
    )


def test_nested_rhat_rejects_bad_superchains(rng):
    x = rng.normal(size=(6, 20))
    with pytest.raises(ValueError, match="divide"):
        nested_rhat({"x": x}, superchains=4)
    with pytest.raises(ValueError, match="same number"):
        nested_rhat({"x": x}, superchains=[0, 0, 0, 0, 1, 1])


# ------------------------------------------------------------------ sample statistics


def test_sample_stats_summary_columns_and_values():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 200, generator=g, dtype=torch.float64)
    div = torch.zeros(3, 200, dtype=torch.bool)
    div[1, :10] = True
    acc = torch.rand(3, 200, generator=g, dtype=torch.float64)
    s = sample_stats_summary({"energy": e, "diverging": div, "accept_prob": acc})
    assert list(s.columns) == ["bfmi", "divergences", "divergence_rate", "accept_mean"]
    np.testing.assert_allclose(s["bfmi"], arviz_bridge.bfmi(e.numpy()))
    assert s["divergences"].tolist() == [0, 10, 0]
    assert s.loc[1, "divergence_rate"] == pytest.approx(0.05)
    np.testing.assert_allclose(s["accept_mean"], acc.mean(1).numpy())
    tr = ebmcmc.sample(
        lambda x: 0.5 * (x**2).sum(-1),
        MALA(0.8),
        torch.zeros(2, 2),
        50,
        generator=0,
        progress=False,
    )
    assert sample_stats_summary(tr).notna().all().all()
    assert sample_stats_summary({"diverging": div})["bfmi"].isna().all()


# ------------------------------------------------------------------ stability studies

TARGET = Gaussian(torch.zeros(2), torch.eye(2))


def _starts(n=128):
    g = torch.Generator().manual_seed(1)
    return {"data": TARGET.sample(n, generator=g), "noise": 8 * torch.rand(n, 2, generator=g) - 4}


def test_stable_mala_study_passes():
    ref = TARGET.sample(500, generator=torch.Generator().manual_seed(2))
    res = stability(
        TARGET,
        MALA(0.9),
        _starts(),
        1200,
        short_run=15,
        quality_fn=lambda x: mmd(ref, x),
        criteria=StabilityCriteria(window=1000),
    )
    assert res.passed, res.reasons
    assert res.reasons == []
    assert list(res.curves) == ["data", "noise"]
    for df in res.curves.values():
        assert list(df.columns) == CURVE_COLUMNS
        assert df["step"].iloc[0] == 0 and df["step"].iloc[-1] == 1200
        assert 15 in df["step"].tolist()
        assert (df["nonfinite"] == 0).all()
    assert max(res.rhat.values()) < 1.01
    # the noise start begins far from the target: its step-0 energy is high, then relaxes
    noise = res.curves["noise"]
    assert noise["energy_mean"].iloc[0] > 2 * noise["energy_mean"].iloc[-1]


def test_unstable_langevin_fails_for_the_energy():
    # ULA with eps * curvature = 2.5 > 2 is unstable: |x| grows by 1.5x per step
    res = stability(
        TARGET, Langevin(2.5), _starts(32), 200, short_run=4, criteria=StabilityCriteria(window=100)
    )
    assert not res.passed
    assert any("energy left its band" in r for r in res.reasons)
    assert any("disagree" in r or "undefined" in r for r in res.reasons)


def test_drifting_chains_saturate_at_the_bounds():
    drift = lambda x: -2.0 * x.sum(-1)  # noqa: E731 - pushes every coordinate up, forever
    starts = {"a": torch.zeros(16, 3), "b": 0.5 * torch.ones(16, 3)}
    res = stability(
        drift,
        MALA(0.05),
        starts,
        300,
        short_run=3,
        bounds=(-1.0, 1.0),
        criteria=StabilityCriteria(window=50),
    )
    assert not res.passed
    assert any("saturation" in r for r in res.reasons)
    assert res.curves["a"]["saturation"].iloc[-1] == 1.0


@dataclasses.dataclass(frozen=True)
class _Exploding(Kernel):
    """A broken kernel that accepts every proposal, finite or not (ebmcmc's kernels reject
    non-finite proposals, so only a user's own kernel can let them through)."""

    factor: float = 1e10

    def step(self, energy, state, generator=None):
        x = state.position * self.factor
        ones = torch.ones_like(state.energy)
        info = Info(ones, ones.bool(), torch.zeros_like(ones, dtype=torch.bool))
        return State(x, energy(x), None), info


def test_non_finite_values_are_reported():
    starts = {"a": torch.ones(8, 2), "b": torch.ones(8, 2)}
    res = stability(
        TARGET, _Exploding(), starts, 40, short_run=1, criteria=StabilityCriteria(window=20)
    )
    assert not res.passed
    assert any("non-finite" in r and r.startswith("a:") for r in res.reasons)
    assert res.curves["a"]["nonfinite"].iloc[-1] == 8 * 2 + 8  # every coordinate and energy


def _small(**kw):
    return stability(
        TARGET,
        MALA(0.9),
        _starts(16),
        120,
        short_run=5,
        criteria=StabilityCriteria(window=40),
        quality_fn=lambda x: float(x.double().pow(2).mean()),
        **kw,
    )


def test_chunked_equals_unchunked_bit_for_bit():
    a, b = _small(chunk_size=1000), _small(chunk_size=7)
    for n in a.curves:
        pd.testing.assert_frame_equal(a.curves[n], b.curves[n], check_exact=True)
        assert torch.equal(a.final[n], b.final[n])
    assert a.rhat == b.rhat
    # and equal to one plain ebmcmc.sample run with the documented per-start seed
    for i, (n, x0) in enumerate(_starts(16).items()):
        tr = ebmcmc.sample(TARGET, MALA(0.9), x0, 120, generator=i, adaptation=None, progress=False)
        assert torch.equal(tr.final_state.position, a.final[n])


def test_rerun_and_interrupted_resume_give_identical_figures(tmp_path):
    a, b = _small(), _small()
    for n in a.curves:
        pd.testing.assert_frame_equal(a.curves[n], b.curves[n], check_exact=True)
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return float(x.double().pow(2).mean())

    path = tmp_path / "study.pt"
    kw = dict(short_run=5, criteria=StabilityCriteria(window=40), state_path=path)
    with pytest.raises(KeyboardInterrupt):
        stability(TARGET, MALA(0.9), _starts(16), 120, quality_fn=flaky, **kw)
    assert path.is_file()
    c = stability(TARGET, MALA(0.9), _starts(16), 120, quality_fn=flaky, **kw)
    for n in a.curves:
        pd.testing.assert_frame_equal(a.curves[n], c.curves[n], check_exact=True)
        assert torch.equal(a.final[n], c.final[n])
    assert a.rhat == c.rhat


def test_stability_report_states_the_verdict(tmp_path):
    res = stability(
        TARGET, Langevin(2.5), _starts(16), 60, short_run=3, criteria=StabilityCriteria(window=30)
    )
    html = report_stability(res, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "NOT STABLE" in md and "energy left its band" in md
    assert (tmp_path / "stability_curves.png").stat().st_size > 1000
    assert 'id="summary"' in html.read_text()


def test_bad_arguments():
    with pytest.raises(ValueError, match="starts"):
        stability(TARGET, MALA(0.5), {}, 10)
    with pytest.raises(ValueError, match="short_run"):
        stability(TARGET, MALA(0.5), _starts(4), 10, short_run=20)
    with pytest.raises(TypeError, match="Kernel"):
        stability(TARGET, "mala", _starts(4), 10)


def test_nested_agreement_for_chains_that_stay_in_their_modes():
    """Two modes 12 sd apart; each start has half its chains in each mode, so every chain
    stays where it is. Ordinary R-hat fails by construction (the chains' means differ);
    nested R-hat with the starts as superchains sees that both starts give the same
    distribution. A start with all its chains in one mode fails either way."""
    from ebmcmc.targets import GaussianMixture

    t = GaussianMixture(torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), 0.0625 * torch.eye(2),
                        torch.tensor([0.5, 0.5]))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    signs = torch.tensor([-3.0, 3.0]).repeat(64)[:, None] * torch.tensor([[1.0, 0.0]])
    a = signs + 0.25 * torch.randn(128, 2, generator=g)
    b = signs + 0.25 * torch.randn(128, 2, generator=g)
    plain = stability(t, MALA(0.05), {"a": a, "b": b}, 800, short_run=10,
                      criteria=StabilityCriteria(window=400))  # fmt: skip
    nest = StabilityCriteria(agreement="nested", window=400)
    nested = stability(t, MALA(0.05), {"a": a, "b": b}, 800, short_run=10, criteria=nest)
    assert any("R-hat" in r for r in plain.reasons)
    assert nested.passed, nested.reasons
    one_mode = torch.tensor([3.0, 0.0]) + 0.25 * torch.randn(128, 2, generator=g)
    bad = stability(t, MALA(0.05), {"a": a, "b": one_mode}, 800, short_run=10, criteria=nest)
    assert any("nested R-hat" in r for r in bad.reasons)
    with pytest.raises(ValueError, match="agreement"):
        StabilityCriteria(agreement="bogus")
    with pytest.raises(ValueError, match="equal chain counts"):
        stability(t, MALA(0.05), {"a": a, "b": b[:64]}, 10, criteria=nest)


def test_deprecated_band_keywords_still_work():
    """0.1 spelled the bands as keywords of stability(); they keep working for one release."""
    with pytest.warns(DeprecationWarning, match="StabilityCriteria"):
        old = stability(TARGET, MALA(0.9), _starts(8), 40, short_run=2, window=20)
    new = stability(TARGET, MALA(0.9), _starts(8), 40, short_run=2,
                    criteria=StabilityCriteria(window=20))  # fmt: skip
    for n in old.curves:
        pd.testing.assert_frame_equal(old.curves[n], new.curves[n], check_exact=True)
    with pytest.raises(TypeError, match="not both"):
        stability(TARGET, MALA(0.9), _starts(8), 40, window=20, criteria=StabilityCriteria())
    with pytest.raises(TypeError, match="unexpected"):
        stability(TARGET, MALA(0.9), _starts(8), 40, windoww=20)
