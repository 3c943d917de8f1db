"""Make the crafted trace files of this directory: each is a small valid trace changed by h5py
in one way an attacker or a broken writer could, and ``cases.json`` records what each one does
and the words the refusal must contain. ``tests/test_hardening.py`` loads every file (and runs
``ebmcmc diagnose`` on it): only ``valid.nc`` may load.

Run from the repository root to regenerate (the files are kept, so the tests never need it):

    PYTHONPATH=$PWD python tests/data/crafted_traces/make_crafted.py
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

import ebmcmc
from ebmcmc import Trace
from ebmcmc.kernels import MALA

HERE = Path(__file__).resolve().parent
NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."
CASES: dict[str, dict[str, str]] = {}


def base() -> Path:
    """A valid trace: 2 chains x 6 draws of a 2-D Gaussian, MALA, final state, no generator."""
    torch.set_num_threads(1)
    tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), MALA(0.5), torch.zeros(2, 2), 6,
                       generator=0, progress=False, check=False)  # fmt: skip
    bare = Trace(tr.variables, tr.stats, tr.final_state, tr.kernel, None, tr.batch_shape, tr.attrs)
    return bare.save(HERE / "valid.nc")


def case(name: str, attack: str, match: str):
    """Register ``name.nc``: a copy of the valid trace that ``fn(h5py.File)`` changes."""

    def wrap(fn):
        path = HERE / f"{name}.nc"
        shutil.copy(HERE / "valid.nc", path)
        with h5py.File(path, "r+") as f:
            fn(f)
        CASES[f"{name}.nc"] = {"attack": attack, "match": match}
        return fn

    return wrap


def scale(f, name: str, length: int):
    """A NetCDF dimension (a dimension scale that is not a variable) of ``length``."""
    if name in f:
        del f[name]
    d = f.create_dataset(name, shape=(length,), dtype="f4")
    d.make_scale(NOT_A_VARIABLE)
    return d


def drop(f, name: str) -> None:
    """Delete dataset ``name``, detached from its dimensions first (no dangling references)."""
    if name not in f:
        return
    d = f[name]
    for i in range(d.ndim):
        for s in list(d.dims[i].values()):
            d.dims[i].detach_scale(s)
    del f[name]


def replace(f, name: str, dims: list[str], **kw):
    """Replace (or add) dataset ``name`` made by ``create_dataset(**kw)``, attached to ``dims``."""
    drop(f, name)
    d = f.create_dataset(name, **kw)
    for i, dim in enumerate(dims):
        d.dims[i].attach_scale(f[dim])
    return d


def write_all() -> None:
    base()
    x_dims = ["chain", "draw", "var.x_dim_0"]

    @case("external_storage", "var.x reads its bytes from ../../etc/passwd", "external file")
    def _(f):
        replace(f, "var.x", x_dims, shape=(2, 6, 2), dtype="u1",
                external=[("../../etc/passwd", 0, h5py.h5f.UNLIMITED)])  # fmt: skip

    @case("virtual_dataset", "var.x is a virtual dataset mapping another file", "virtual")
    def _(f):
        layout = h5py.VirtualLayout(shape=(2, 6, 2), dtype="f4")
        layout[...] = h5py.VirtualSource("../../secret.h5", "data", shape=(2, 6, 2))
        drop(f, "var.x")
        d = f.create_virtual_dataset("var.x", layout, fillvalue=0)
        for i, dim in enumerate(x_dims):
            d.dims[i].attach_scale(f[dim])

    @case("soft_link", "var.y is a soft link to var.x", "soft link")
    def _(f):
        f["var.y"] = h5py.SoftLink("/var.x")

    @case("external_link", "var.y is a link into another HDF5 file", "external link")
    def _(f):
        f["var.y"] = h5py.ExternalLink("../../secret.h5", "/data")

    @case("group", "an HDF5 group", "group")
    def _(f):
        f.create_group("extra")

    @case("named_type", "a committed datatype", "datatype")
    def _(f):
        f["mytype"] = np.dtype("f8")

    @case("unexpected_dataset", "a dataset outside the format", "unexpected dataset 'evil'")
    def _(f):
        f.create_dataset("evil", data=np.arange(3))

    @case("cf_time_units", "var.x asks xarray to decode times", "unexpected attribute 'units'")
    def _(f):
        f["var.x"].attrs["units"] = "days since 2000-01-01"

    @case("scale_factor", "var.x asks xarray to rescale it", "unexpected attribute 'scale_factor'")
    def _(f):
        f["var.x"].attrs["scale_factor"] = 1e300

    @case("dtype_attr", "var.x claims another dtype", "must be 'bool'")
    def _(f):
        f["var.x"].attrs["dtype"] = "datetime64[ns]"

    @case("string_variable", "a variable of strings", "plain numbers")
    def _(f):
        replace(f, "var.s", ["chain", "draw"], data=np.full((2, 6), "a", dtype=object),
                dtype=h5py.string_dtype())  # fmt: skip

    @case("compound_variable", "a variable of a compound dtype", "plain numbers")
    def _(f):
        dt = np.dtype([("a", "f4"), ("b", "i4")])
        replace(f, "var.x", x_dims, data=np.zeros((2, 6, 2), dtype=dt))

    @case("big_endian", "var.x in big-endian byte order", "byte order")
    def _(f):
        replace(f, "var.x", x_dims, data=np.zeros((2, 6, 2), dtype=">f8"))

    @case("unwritten_huge", "var.x declares 96 GB that the file does not store", "declares")
    def _(f):
        drop(f, "var.x")
        scale(f, "var.x_dim_0", 10**9)
        replace(f, "var.x", x_dims, shape=(2, 6, 10**9), dtype="f8")

    @case("unknown_filter", "var.x needs an HDF5 filter plugin", "filter")
    def _(f):
        replace(f, "var.x", x_dims, shape=(2, 6, 2), dtype="f4", chunks=(2, 6, 2),
                compression=32001, allow_unknown_filter=True)  # fmt: skip

    @case("coordinate_dimension", "the chain dimension holds data (a coordinate)", "plain NetCDF")
    def _(f):
        f["chain"].attrs["NAME"] = np.bytes_(b"chain")

    @case("dims_swapped", "var.x has dimensions (draw, chain, ...)", "has dimensions")
    def _(f):
        replace(f, "var.x", ["draw", "chain", "var.x_dim_0"], data=np.zeros((6, 2, 2), "f4"))

    @case("stat_one_dim", "stat.energy has one dimension", "(chain, draw, ...)")
    def _(f):
        replace(f, "stat.energy", ["chain"], data=np.zeros(2, "f4"))

    @case("generator_float", "generator_state of floats", "generator_state")
    def _(f):
        scale(f, "generator_state_dim", 4)
        replace(f, "generator_state", ["generator_state_dim"], data=np.zeros(4, "f4"))

    @case("format_v2", "an unknown format version", "is not an ebmcmc trace")
    def _(f):
        f.attrs["format"] = "ebmcmc-trace/2"

    @case("root_attribute", "a root attribute outside the format", "unexpected attribute")
    def _(f):
        f.attrs["history"] = "made by hand"

    @case("batch_shape_mismatch", "batch_shape (3,) for 2 chains", "does not match")
    def _(f):
        f.attrs["batch_shape"] = np.array([3])

    @case("batch_shape_text", "batch_shape is text", "batch_shape")
    def _(f):
        f.attrs["batch_shape"] = "two"

    @case("batch_shape_missing", "no batch_shape", "batch_shape")
    def _(f):
        del f.attrs["batch_shape"]

    @case("run_attrs_syntax", "run_attrs is not a literal", "run_attrs")
    def _(f):
        f.attrs["run_attrs"] = "{'kernel': 'MALA'"

    @case("run_attrs_code", "run_attrs is a call", "run_attrs")
    def _(f):
        f.attrs["run_attrs"] = "__import__('os').system('echo pwned')"

    @case("run_attrs_nested", "run_attrs nests 1,000 lists", "run_attrs")
    def _(f):
        f.attrs["run_attrs"] = "[" * 1_000

    @case("kernel_module_missing", "kernel.class names a module that does not exist",
          "does not exist")  # fmt: skip
    def _(f):
        f.attrs["kernel.class"] = "ebmcmc.kernels.nonexistent.MALA"

    @case("kernel_outside_kernels", "kernel.class imports an application module",
          "is not an ebmcmc kernel")  # fmt: skip
    def _(f):
        f.attrs["kernel.class"] = "ebmcmc.app.demo.run_demo"

    @case("kernel_swapped", "MALA's fields under Langevin's class", "lacks field 'noise_scale'")
    def _(f):
        f.attrs["kernel.class"] = "ebmcmc.kernels.langevin.Langevin"

    @case("kernel_swapped_same_fields", "RandomWalk's class with exactly its fields, in a MALA "
          "run", "is not the MALA the run used")  # fmt: skip
    def _(f):
        f.attrs["kernel.class"] = "ebmcmc.kernels.random_walk.RandomWalk"
        del f.attrs["kernel.inverse_mass_matrix.none"]

    @case("kernel_extra_field", "an attribute the kernel class does not define",
          "does not define")  # fmt: skip
    def _(f):
        f.attrs["kernel.evil"] = 1

    @case("kernel_step_text", "step_size is text", "must be one number")
    def _(f):
        f.attrs["kernel.step_size"] = "0.1"

    @case("kernel_step_nan", "step_size is NaN", "not finite")
    def _(f):
        f.attrs["kernel.step_size"] = np.array([np.nan])

    @case("kernel_class_bytes", "kernel.class is not UTF-8", "must name a class")
    def _(f):
        f.attrs["kernel.class"] = np.bytes_(b"\xff\xfe")

    @case("kernel_items_huge", "a Cycle of 10^9 kernels", "must be a count")
    def _(f):
        f.attrs["kernel.class"] = "ebmcmc.kernels.composite.Cycle"
        f.attrs["kernel.kernels.items"] = 10**9
        f.attrs["kernel.every"] = 1

    @case("kernel_items_missing", "a Cycle of 3 kernels that stores none", "lacks item 0")
    def _(f):
        for k in ("kernel.step_size", "kernel.inverse_mass_matrix.none"):
            del f.attrs[k]
        f.attrs["kernel.class"] = "ebmcmc.kernels.composite.Cycle"
        f.attrs["kernel.kernels.items"] = 3
        f.attrs["kernel.every"] = 1

    @case("kernel_nested_deep", "ChainMask in ChainMask, 40 deep", "nests too deeply")
    def _(f):
        key = "kernel"
        for _ in range(40):
            f.attrs[f"{key}.class"] = "ebmcmc.kernels.composite.ChainMask"
            key += ".kernel"

    @case("state_outside", "state.class is os.system", "outside ebmcmc")
    def _(f):
        f.attrs["state.class"] = "os.system"

    @case("state_nan", "the final position is NaN", "not finite")
    def _(f):
        f["state.position"][0, 0] = np.nan

    @case("state_batch_mismatch", "a final state of 3 chains in a 2-chain trace",
          "batch shape")  # fmt: skip
    def _(f):
        for name in ("state.position", "state.grad", "state.energy"):
            drop(f, name)
            scale(f, f"{name}_dim_0", 3)
        for name in ("state.position", "state.grad"):
            replace(f, name, [f"{name}_dim_0", f"{name}_dim_1"], data=np.zeros((3, 2), "f4"))
        replace(f, "state.energy", ["state.energy_dim_0"], data=np.zeros(3, "f4"))

    # files that are not (whole) HDF5
    data = (HERE / "valid.nc").read_bytes()
    (HERE / "truncated.nc").write_bytes(data[: len(data) // 2])
    CASES["truncated.nc"] = {"attack": "the first half of a trace", "match": "not a readable"}
    (HERE / "not_hdf5.nc").write_text("this is not NetCDF\n")
    CASES["not_hdf5.nc"] = {"attack": "a text file", "match": "not a readable"}
    zero = Trace({"x": torch.zeros(0, 5, 2)}, {"energy": torch.zeros(0, 5)}, batch_shape=(0,))
    zero.save(HERE / "zero_chains.nc")
    CASES["zero_chains.nc"] = {"attack": "a trace of no chains", "match": "batch_shape"}

    CASES["valid.nc"] = {"attack": "", "match": ""}
    (HERE / "cases.json").write_text(json.dumps(dict(sorted(CASES.items())), indent=1) + "\n")


if __name__ == "__main__":
    for old in HERE.glob("*.nc"):
        old.unlink()
    write_all()
    print(f"wrote {len(CASES)} files to {HERE}", file=sys.stderr)
