"""Streaming a run to a trace directory (``sample(..., out=, checkpoint_every=)``): the same
draws as in memory, a valid resumable trace after every chunk, nothing lost to an exception,
an interrupt or a killed write, lazy loading, and memory bounded by a chunk."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import ebmcmc.stream
from ebmcmc import SamplingError, Trace, sample
from ebmcmc.kernels import MALA
from ebmcmc.stream import INDEX, StreamWriter, chunk_name, load_stream
from ebmcmc.targets import Banana
from ebmcmc.trace import LazyColumns

ROOT = Path(__file__).resolve().parents[1]
TARGET = Banana()
X0 = TARGET.sample(6, generator=torch.Generator().manual_seed(2)).reshape(2, 3, 2)
WARM, DRAWS, EVERY = 60, 50, 7


def assert_same(a: Trace, b: Trace) -> None:
    assert set(a.variables) == set(b.variables) and set(a.stats) == set(b.stats)
    for k in a.variables:
        assert torch.equal(a.variables[k], b.variables[k]), k
    for k in a.stats:
        assert a.stats[k].dtype == b.stats[k].dtype and torch.equal(a.stats[k], b.stats[k]), k
    assert a.batch_shape == b.batch_shape
    assert torch.equal(a.final_state.position, b.final_state.position)
    assert torch.equal(a.generator_state, b.generator_state)


@pytest.fixture(scope="module")
def full() -> Trace:
    return sample(TARGET, MALA(0.1), X0, DRAWS, num_warmup=WARM, thin=2, generator=5,
                  progress=False)  # fmt: skip


def stream(out, energy=TARGET, **kw) -> Trace:
    args = dict(num_warmup=WARM, thin=2, generator=5, progress=False, out=out,
                checkpoint_every=EVERY) | kw  # fmt: skip
    return sample(energy, MALA(0.1), X0, DRAWS, **args)


def finish(out) -> Trace:
    """Resume the directory the documented way and return it as a whole."""
    tr = Trace.load(out)
    if tr.warmup is not None:
        sample(TARGET, tr.kernel, out, DRAWS, num_warmup=WARM, thin=2, progress=False, out=out)
    elif tr.num_draws < DRAWS:
        sample(TARGET, tr.kernel, out, DRAWS - tr.num_draws, thin=2, progress=False, out=out)
    return Trace.load(out)


def test_streamed_run_is_the_in_memory_run_and_loads_lazily(tmp_path, full):
    out = tmp_path / "run"
    tr = stream(out)
    files = sorted(os.listdir(out))
    assert files == [chunk_name(k) for k in range(-(-DRAWS // EVERY))] + [INDEX]
    assert isinstance(tr.variables, LazyColumns) and tr.source == out
    assert (
        not tr.variables.loaded("x")
        and repr(tr) == "Trace(chains=6, draws=50, variables=[x(6, 50, 2)])"
    )
    assert_same(tr, full)
    assert tr.attrs["num_samples"] == DRAWS and tr.attrs["divergent"] == full.attrs["divergent"]
    assert tr.stats["step_size"].stride(1) == 0  # a constant step size is stored once
    assert type(tr.kernel) is MALA and tr.kernel.step_size == full.kernel.step_size
    back = Trace.load(out)
    assert not back.variables.loaded("x") and not back.stats.loaded("energy")
    assert torch.equal(back.stats["energy"], full.stats["energy"])
    assert back.stats.loaded("energy") and not back.variables.loaded("x")
    # the chunk files are NetCDF an xarray user can open one by one
    import xarray as xr

    with xr.open_dataset(out / chunk_name(0), engine="h5netcdf") as ds:
        assert dict(ds.sizes)["draw"] == EVERY and "var.x" in ds and "const.step_size" in ds


def _points(count: int, seed: int) -> list[int]:
    """Energy evaluations at which to stop, drawn over warm-up and recording."""
    return sorted(random.Random(seed).sample(range(4, 2 + WARM + 2 * DRAWS), count))


class DiesAt:
    """The energy, which ends the process's Python at evaluation ``at``: ``SystemExit`` is no
    ``Exception``, so ``sample`` keeps nothing and leaves the directory as a kill would."""

    def __init__(self, at: int, exc: BaseException):
        self.calls, self.at, self.exc = 0, at, exc

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise self.exc
        return TARGET(x)


def test_directory_is_a_resumable_trace_after_every_chunk(tmp_path, full):
    """Killed at random points (warm-up too: its progress is saved every checkpoint_every
    steps), the directory holds the last committed chunk and resumes bit for bit."""
    for i, at in enumerate(_points(6, seed=0)):
        out = tmp_path / f"run{i}"
        with pytest.raises(SystemExit):
            stream(out, DiesAt(at, SystemExit(1)))
        kept = Trace.load(out)
        step = at - 3  # complete steps before the fatal one
        if step < WARM:
            assert kept.warmup is not None and kept.warmup.done == step // EVERY * EVERY
        else:
            draws = (step - WARM) // 2
            assert kept.warmup is None and kept.num_draws == draws // EVERY * EVERY
        assert_same(finish(out), full)


@pytest.mark.parametrize("exc", [RuntimeError("the network broke"), KeyboardInterrupt()])
def test_exception_or_interrupt_leaves_every_completed_draw_on_disk(tmp_path, full, exc):
    for i, at in enumerate(_points(3, seed=1)):
        out = tmp_path / f"run{i}"
        if isinstance(exc, KeyboardInterrupt):
            with pytest.warns(UserWarning, match="all of it is in"):
                tr = stream(out, DiesAt(at, exc))
        else:
            with pytest.raises(SamplingError, match="the network broke") as info:
                stream(out, DiesAt(at, exc))
            tr = info.value.partial_trace
            assert info.value.__cause__ is exc
        assert tr.source == out
        step = at - 3
        kept = Trace.load(out)
        if step < WARM:
            assert kept.warmup.done == step and tr.warmup.done == step
        else:
            assert kept.num_draws == (step - WARM) // 2 == tr.num_draws
        assert_same(finish(out), full)


def test_a_write_killed_half_way_leaves_the_previous_trace(tmp_path, full, monkeypatch):
    """A process killed while writing the index leaves the previous index (the temporary
    file is cleaned up by the next writer); one killed between a chunk file and the index
    leaves that chunk unlisted (ignored, then overwritten)."""
    real = ebmcmc.stream.atomic_write
    writes = {"n": 0}

    def dies_in_the_4th_index_write(path, write):
        if Path(path).name == INDEX:
            writes["n"] += 1
            if writes["n"] == 4:
                write(str(path) + ".abc.tmp")  # half-written temporary, never renamed
                raise SystemExit(1)
        return real(path, write)

    monkeypatch.setattr(ebmcmc.stream, "atomic_write", dies_in_the_4th_index_write)
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        stream(out, num_warmup=0)
    monkeypatch.setattr(ebmcmc.stream, "atomic_write", real)
    assert (out / f"{INDEX}.abc.tmp").exists() and (out / chunk_name(2)).exists()
    kept = Trace.load(out)
    assert kept.num_draws == 2 * EVERY  # chunk 2 was written, its commit was not
    rest = sample(TARGET, kept.kernel, out, DRAWS - kept.num_draws, thin=2, progress=False,
                  out=out)  # fmt: skip
    assert not list(out.glob("*.tmp"))
    whole = sample(TARGET, MALA(0.1), X0, DRAWS, thin=2, generator=5, progress=False)
    assert_same(rest, whole)


def test_streaming_arguments_and_continuation_errors(tmp_path, full):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="checkpoint_every needs out="):
        sample(TARGET, MALA(0.1), X0, 5, checkpoint_every=3, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1"):
        sample(TARGET, MALA(0.1), X0, 5, out=out, checkpoint_every=0, progress=False)
    with pytest.warns(UserWarning, match="interrupted"):
        first = stream(out, DiesAt(2 + WARM + 2 * 20, KeyboardInterrupt()))
    with pytest.raises(FileExistsError, match="already exists; continue it with init="):
        stream(out)
    with pytest.raises(ValueError, match="records .* but the trace being continued"):
        sample(TARGET, first.kernel, out, 5, thin=2, progress=False, out=out,
               trace_fn=lambda s, i: s.energy)  # fmt: skip
    # a trace read before the directory grew cannot continue it (its state is older)
    sample(TARGET, first.kernel, first, 3, thin=2, progress=False, out=out)
    with pytest.raises(ValueError, match="load it again"):
        sample(TARGET, first.kernel, first, 3, thin=2, progress=False, out=out)
    # init=the directory without out=: the new draws in memory, the directory untouched
    before = Trace.load(out).num_draws
    more = sample(TARGET, first.kernel, out, 4, thin=2, progress=False)
    assert more.num_draws == 4 and Trace.load(out).num_draws == before
    with pytest.raises(FileNotFoundError, match="without a trace index"):
        Trace.load(tmp_path)
    (out / chunk_name(0)).unlink()
    with pytest.raises(ValueError, match="lists draws-000000.nc, which is missing"):
        load_stream(out)


def test_writer_refuses_a_missing_parent(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StreamWriter(tmp_path / "no" / "run")


@pytest.mark.slow
def test_memory_is_bounded_by_a_chunk_and_not_doubled_at_the_end():
    """Peak RSS in a fresh process (ru_maxrss). Streamed, the peak does not grow with the
    number of draws; in memory, it is the stored trace plus about a chunk (before: the
    per-draw lists, their stack and its transposed copy, 2 to 2.5 times the trace). The
    end-of-run R-hat is left out (check=False): its temporaries are those of the ranks of
    the draws it checks (at most 1,000 a chain when streamed)."""
    code = r"""
import json, resource, sys, tempfile, os, warnings, torch
warnings.simplefilter("ignore"); torch.set_num_threads(1)
import ebmcmc
from ebmcmc.kernels import MALA
e = lambda x: 0.5 * (x**2).sum(-1)
x0 = torch.zeros(2048, 2, dtype=torch.float64)
def rss():  # current resident set, bytes
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
d = tempfile.mkdtemp()
ebmcmc.sample(e, MALA(0.5), x0, 50, generator=0, progress=False, out=d + "/w")
base = peak()
out = {}
for n in (500, 2000):
    tr = ebmcmc.sample(e, MALA(0.5), x0, n, generator=0, progress=False, out=f"{d}/s{n}",
                       checkpoint_every=100, check=False)
    out[f"stream{n}"] = peak() - base
del tr
now = rss()
tr = ebmcmc.sample(e, MALA(0.5), x0, 2000, generator=0, progress=False, check=False)
stored = sum(v.numel() * v.element_size() for v in tr.variables.values())
stored += sum(v.numel() * v.element_size() for k, v in tr.stats.items() if k != "step_size")
out["memory"] = peak() - max(now, base)
out["stored"] = stored
print(json.dumps(out))
"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    mb = 2**20
    # 4x the draws: the streamed peak grows by less than the 100 extra MiB of data, by far
    assert got["stream2000"] - got["stream500"] < 20 * mb, got
    assert got["memory"] < 1.5 * got["stored"], got


def test_streamed_files_are_checked_before_they_are_read(tmp_path, full):
    """The index is inspected with h5py before it is read, each chunk file before its first
    column is read: a dataset outside the format, a link, or a chunk whose shapes are not
    what the index lists is refused with a ValueError naming the file."""
    import h5py
    import numpy as np

    out = tmp_path / "run"
    stream(out)
    assert_same(Trace.load(out), full)  # what sample writes passes the checks

    def crafted(name: str, edit) -> Path:
        bad = tmp_path / name
        bad.mkdir()
        for f in out.iterdir():
            (bad / f.name).write_bytes(f.read_bytes())
        edit(bad)
        return bad

    def extra_index_dataset(d):
        with h5py.File(d / INDEX, "a") as f:
            f["evil"] = np.zeros(3)

    def index_link(d):
        with h5py.File(d / INDEX, "a") as f:
            f["state.link"] = h5py.ExternalLink("/etc/passwd", "/")

    def chunk_extra(d):
        with h5py.File(d / chunk_name(1), "a") as f:
            f["var.evil"] = np.zeros(3)

    def chunk_short(d):  # the last chunk (one draw) in place of chunk 2 (seven)
        last = sorted(d.glob("draws-*.nc"))[-1]
        (d / chunk_name(2)).write_bytes(last.read_bytes())

    for name, edit, why in [
        ("extra_index_dataset", extra_index_dataset, r"index.nc.*unexpected dataset 'evil'"),
        ("index_link", index_link, r"index.nc.*'state.link' is an external link"),
        ("chunk_extra", chunk_extra, r"draws-000001.nc.*'var.evil'"),
        ("chunk_short", chunk_short, r"draws-000002.nc.*shape \(6, 1[,)].*index says \(6, 7[,)]"),
    ]:
        bad = crafted(name, edit)
        if not name.startswith("chunk"):
            with pytest.raises(ValueError, match=why):
                Trace.load(bad)
        else:
            tr = Trace.load(bad)  # only the index is read here
            with pytest.raises(ValueError, match=why):
                tr.stats["energy"]
