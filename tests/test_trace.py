"""Tests for ebmcmc.Trace: construction, concatenation, NetCDF round trips and ArviZ export."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from ebmcmc import Trace, sample
from ebmcmc.diagnostics import summary
from ebmcmc.kernels import HMC, MALA, Langevin, RandomWalk, State


def std_normal(x):
    return 0.5 * (x**2).sum(-1)


def make_trace(kernel=None, batch=(4,), n=12, dtype=torch.float64, seed=0, **kw):
    kernel = kernel or MALA(0.4)
    x0 = torch.randn(*batch, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return sample(std_normal, kernel, x0, n, generator=seed, progress=False, **kw)


def assert_round_trip(tr: Trace, back: Trace):
    assert set(back.variables) == set(tr.variables) and set(back.stats) == set(tr.stats)
    for k, v in tr.variables.items():
        assert back.variables[k].dtype == v.dtype, k
        assert torch.equal(back.variables[k], v), k
    for k, v in tr.stats.items():
        assert back.stats[k].dtype == v.dtype, k
        assert torch.equal(back.stats[k], v), k
    for f in ("position", "energy", "grad"):
        a, b = getattr(tr.final_state, f), getattr(back.final_state, f)
        assert (a is None and b is None) or torch.equal(a, b), f
    assert torch.equal(back.generator_state, tr.generator_state)
    assert back.batch_shape == tr.batch_shape
    assert back.attrs == tr.attrs
    assert type(back.kernel) is type(tr.kernel)


# ----------------------------------------------------------------------------- construction


def test_constructor_validation_and_repr():
    with pytest.raises(ValueError, match="at least one recorded variable"):
        Trace({}, {})
    with pytest.raises(ValueError, match=r"disagree on \(chain, draw\)"):
        Trace({"x": torch.zeros(2, 5, 1)}, {"energy": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=r"disagree on \(chain, draw\)"):
        Trace({"x": torch.zeros(2, 5, 1), "y": torch.zeros(3, 5)}, {})
    tr = Trace({"x": torch.zeros(2, 5, 3)}, {"energy": torch.zeros(2, 5)})
    assert tr.num_chains == 2 and tr.num_draws == 5 and tr.batch_shape == (2,)
    assert tr.final_state is None and tr.kernel is None and tr.attrs == {}
    assert repr(tr) == "Trace(chains=2, draws=5, variables=[x(2, 5, 3)])"


# ----------------------------------------------------------------------------- concatenate


def test_concatenate_joins_draws_and_keeps_last_state():
    a = make_trace(n=5)
    b = sample(std_normal, a.kernel, a, 7, progress=False)
    j = Trace.concatenate([a, b])
    assert j.num_draws == 12 and j.attrs["num_samples"] == 12
    assert torch.equal(j.draws, torch.cat([a.draws, b.draws], 1))
    assert set(j.stats) == set(a.stats)
    assert j.final_state is b.final_state and j.kernel is b.kernel
    assert torch.equal(j.generator_state, b.generator_state)
    # only the statistics both traces have survive
    c = Trace(dict(b.variables), {"energy": b.stats["energy"]})
    assert set(Trace.concatenate([a, c]).stats) == {"energy"}
    assert Trace.concatenate([a]).num_draws == 5


def test_concatenate_errors():
    a = make_trace(n=5)
    with pytest.raises(ValueError, match="at least one trace"):
        Trace.concatenate([])
    other_chains = make_trace(batch=(3,), n=5)
    with pytest.raises(ValueError, match="same variables and chains"):
        Trace.concatenate([a, other_chains])
    other_vars = Trace({"y": a.draws}, {})
    with pytest.raises(ValueError, match="same variables and chains"):
        Trace.concatenate([a, other_vars])


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize(
    "kernel, kw",
    [
        (MALA(0.4), {}),
        (MALA(0.1), {"num_warmup": 50}),  # adapted: a 0-dim tensor step size
        (HMC(0.2, 3), {"num_warmup": 200}),  # adapted inverse mass matrix tensor
        (HMC(torch.linspace(0.1, 0.3, 6).reshape(2, 3), torch.tensor([[1, 2, 3], [3, 2, 1]])), {}),
        (Langevin(0.05, noise_scale=0.9), {}),
        (RandomWalk(0.5), {"thin": 2}),
    ],
    ids=["mala", "mala-adapted", "hmc-adapted", "hmc-per-chain", "langevin", "rw-thin"],
)
def test_save_load_round_trip(tmp_path, kernel, kw):
    batch = (2, 3)
    tr = make_trace(kernel, batch=batch, **kw)
    path = tr.save(tmp_path / "trace.nc")
    assert path == tmp_path / "trace.nc" and path.is_file()
    back = Trace.load(str(path))
    assert_round_trip(tr, back)
    for name in ("step_size", "num_steps", "inverse_mass_matrix", "noise_scale"):
        if hasattr(tr.kernel, name):
            a, b = getattr(tr.kernel, name), getattr(back.kernel, name)
            if a is None:
                assert b is None
            else:
                assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), name
    # the loaded kernel is usable and continues the run
    more = sample(std_normal, back.kernel, back, 3, progress=False)
    assert more.draws.shape == (6, 3, 3)


def test_round_trip_float32_custom_variables_and_summary(tmp_path):
    def record(state, info):
        return {"x": state.position, "accepted": info.accepted, "r": state.position.norm(dim=-1)}

    tr = make_trace(MALA(0.4), batch=(4,), n=40, dtype=torch.float32, trace_fn=record)
    back = Trace.load(tr.save(tmp_path / "t.nc"))
    assert_round_trip(tr, back)
    assert back.draws.dtype == torch.float32
    # the NetCDF round trip preserves the diagnostics summary exactly
    pd.testing.assert_frame_equal(
        summary(back, var_names=["x", "r"]), summary(tr, var_names=["x", "r"])
    )


def test_save_overwrites_atomically_and_cleans_up(tmp_path, monkeypatch):
    tr = make_trace(n=5)
    path = tr.save(tmp_path / "t.nc")
    before = path.read_bytes()
    tr2 = make_trace(n=6, seed=1)

    def boom(self, *args, **kwargs):
        with open(args[0], "wb") as f:  # a partial temp file exists when the write fails
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(OSError, match="disk full"):
        tr2.save(path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["t.nc"]  # no temp file left behind
    monkeypatch.undo()
    tr2.save(path)
    assert Trace.load(path).num_draws == 6


def test_save_errors(tmp_path):
    tr = make_trace(n=5)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        tr.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tr.save(tmp_path / "missing" / "t.nc")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trace file"):
        Trace.load(tmp_path / "nope.nc")
    text = tmp_path / "text.nc"
    text.write_text("this is not NetCDF")
    with pytest.raises(ValueError, match="is not a readable NetCDF trace"):
        Trace.load(text)
    other = tmp_path / "other.nc"
    xr.Dataset({"a": ("d", np.arange(3))}).to_netcdf(other, engine="h5netcdf")
    with pytest.raises(ValueError, match="is not an ebmcmc trace"):
        Trace.load(other)


@pytest.mark.parametrize("cls", ["builtins.dict", "os.system", "mypackage.MyKernel"])
def test_load_never_imports_foreign_kernel_classes(tmp_path, cls):
    """A class from outside ebmcmc is never imported from a file: the trace loads without
    its kernel (with a warning) and stays resumable with a kernel passed to sample()."""
    tr = make_trace(n=5)
    path = tr.save(tmp_path / "t.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    ds.attrs["kernel.class"] = cls
    bad = tmp_path / "bad.nc"
    ds.to_netcdf(bad, engine="h5netcdf")
    with pytest.warns(UserWarning, match="from outside ebmcmc"):
        back = Trace.load(bad)
    assert back.kernel is None
    assert torch.equal(back.draws, tr.draws)
    assert torch.equal(back.final_state.position, tr.final_state.position)


def test_load_refuses_non_kernel_classes_inside_ebmcmc(tmp_path):
    path = make_trace(n=5).save(tmp_path / "t.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    ds.attrs["kernel.class"] = "ebmcmc.trace.Trace"
    bad = tmp_path / "bad.nc"
    ds.to_netcdf(bad, engine="h5netcdf")
    with pytest.raises(ValueError, match="is not an ebmcmc kernel"):
        Trace.load(bad)


def test_trace_without_state_or_kernel_round_trips(tmp_path):
    tr = Trace({"x": torch.randn(3, 4, 2)}, {"energy": torch.zeros(3, 4)}, attrs={"note": "hi"})
    back = Trace.load(tr.save(tmp_path / "bare.nc"))
    assert back.final_state is None and back.kernel is None and back.generator_state is None
    assert torch.equal(back.draws, tr.draws) and back.attrs == {"note": "hi"}


# ----------------------------------------------------------------------------- ArviZ


def test_to_arviz_groups():
    tr = make_trace(n=10, batch=(2, 3))
    idata = tr.to_arviz()
    post = idata.posterior
    assert dict(post.sizes) == {"chain": 6, "draw": 10, "x_dim_0": 3}
    np.testing.assert_array_equal(post["x"].values, tr.draws.numpy())
    stats = idata.sample_stats
    np.testing.assert_array_equal(stats["lp"].values, -tr.stats["energy"].numpy())
    assert stats["diverging"].dtype == bool
    assert post.attrs["kernel"] == "MALA"


def test_state_batch_shape_helpers():
    s = State(torch.zeros(2, 3, 4), torch.zeros(2, 3))
    assert s.batch_shape == (2, 3) and s.event_ndim == 1 and s.grad is None
