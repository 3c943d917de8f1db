"""End-to-end checks of ``examples/cifar_cdrl.py`` (CPU, smoke config, subprocesses)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from cifar_helpers import ROOT, load_script, run_script, run_torchrun
from cifar_helpers import read_ckpt as _ckpt

from ebmcmc.nn import CooperativeModel
from ebmcmc.train import autocast_wrapper

SCRIPT = ROOT / "examples" / "cifar_cdrl.py"
FAST = ["--smoke", "--no-progress", "--sample-every", "0"]


def _load_script():
    return load_script(SCRIPT, "cifar_cdrl_example")


def _run(args, timeout=180, **kw):
    return run_script(SCRIPT, args, timeout, **kw)


def test_smoke_cli_finishes(tmp_path):
    out = tmp_path / "run"
    r = _run(["--smoke", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SYNTHETIC DATA" in r.stdout
    for name in ("config.json", "checkpoint.pt", "loss.png", "history.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("samples_step*.png"))
    ck = _ckpt(out)
    assert ck["step"] == 20
    assert {k.split(".")[0] for k in ck["model"]} == {"energy", "initializer"}
    assert len(ck["optimizer"]["param_groups"]) == 2
    hist = ck["history"][-1]
    assert {"loss_ebm", "loss_init", "lr:initializer", "grad_norm:initializer"} <= set(hist)


@pytest.mark.slow  # four subprocesses: ~30-60 s on a busy 2-core machine
def test_resume_matches_uninterrupted_run(tmp_path):
    steps = ["--checkpoint-every", "2"]
    ref, out = tmp_path / "ref", tmp_path / "split"
    r = _run([*FAST, *steps, "--steps", "6", "--out", str(ref)])
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run([*FAST, *steps, "--steps", "3", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run([*FAST, *steps, "--steps", "6", "--out", str(out)])  # refuses without --resume
    assert r.returncode != 0 and "--resume" in r.stderr
    r = _run([*FAST, *steps, "--steps", "6", "--out", str(out), "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "at step 3" in r.stdout
    a, b = _ckpt(ref), _ckpt(out)
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_conditional_smoke_with_guided_eval(tmp_path):
    out = tmp_path / "cond"
    r = _run([*FAST, "--conditional", "--steps", "3", "--eval", "12", "--guidance", "0.7",
              "--out", str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "class-conditional" in r.stdout
    samples = np.load(out / "samples_12.npz")["samples"]
    assert samples.shape == (12, 32, 32, 3) and samples.dtype == np.uint8
    assert "FID/IS not computed" in r.stdout and "examples/cifar_cdrl.py" in r.stdout
    ck = _ckpt(out)
    assert "energy.label_map.parametrizations.weight.original" in ck["model"]
    assert "initializer.label_map.weight" in ck["model"]


def test_paper_config_instantiates_on_cpu_with_the_paper_sizes():
    mod = _load_script()
    cfg = mod.resolve_config(mod.build_parser().parse_args([]))
    assert cfg["num_levels"] == 6 and cfg["langevin_steps"] == 15 and cfg["b2"] == 4e-4
    assert cfg["denoise_b2"] == 2e-4 and cfg["variance_reduction"] and cfg["denoise"]
    assert cfg["lr"] == 1e-4 and cfg["init_lr"] == 1e-5 and cfg["warmup_steps"] == 10_000
    assert cfg["init_warmup_offset"] == 500 and cfg["grad_clip"] == 1.0
    assert cfg["ema_decay"] == 0.9999 and cfg["batch_size"] == 256 and cfg["hflip"]
    torch.manual_seed(0)
    model = mod.build_model(cfg)  # on the CPU, spectral norm included
    n_e = sum(p.numel() for p in model.energy.parameters())
    n_i = sum(p.numel() for p in model.initializer.parameters())
    print(f"CDRL CIFAR-10: energy {n_e:,} + initializer {n_i:,} parameters")
    assert (n_e, n_i) == (34_833_152, 3_769_795)
    tc = mod.train_config(cfg)
    (group,) = tc.param_groups
    assert group.prefix == "initializer." and group.lr == 1e-5 and group.decoupled_weight_decay
    est = mod.build_estimator(cfg)
    assert est.num_langevin_steps == 15 and est.num_classes is None
    cond = mod.resolve_config(mod.build_parser().parse_args(["--conditional"]))
    assert mod.build_estimator(cond).num_classes == 10 and cond["label_dropout"] == 0.1


def test_bf16_wrapper_wraps_both_networks_and_keeps_sampler_gradients_in_float32():
    mod = _load_script()
    cfg = mod.resolve_config(mod.build_parser().parse_args(["--smoke", "--bf16"]))
    torch.manual_seed(0)
    net = mod.build_model(cfg).eval()
    fast = autocast_wrapper(cfg["bf16"], cfg["compile"], not cfg["bf16_sampler"])(net)
    assert isinstance(fast, CooperativeModel) and fast is not net
    assert fast.energy.net is net.energy and fast.initializer.net is net.initializer
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    t = torch.tensor([0, 1, 2, 5])
    (g_ref,) = torch.autograd.grad(net.energy(x, t).sum(), x)
    (g_fast,) = torch.autograd.grad(fast.energy(x, t).sum(), x)
    assert torch.equal(g_ref, g_fast)
    y = fast.initializer(x.detach(), t + 1)
    assert y.dtype == torch.float32 and y.shape == x.shape


def test_cifar_is_read_through_the_restricted_loader(tmp_path):
    class _Touch:
        def __init__(self, marker):
            self.marker = marker

        def __reduce__(self):
            return (os.system, (f"touch {self.marker}",))

    marker = tmp_path / "PWNED"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(good, protocol=2))
    (d / "test_batch").write_bytes(pickle.dumps(good, protocol=2))
    # a good set trains, labels included
    r = _run([*FAST, "--conditional", "--steps", "2", "--data", str(d), "--out",
              str(tmp_path / "ok")])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CIFAR-10 train: (10, 3, 32, 32)" in r.stdout
    # a tampered one is refused and nothing in it runs
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": _Touch(marker), b"labels": [0]}))
    r = _run([*FAST, "--data", str(d), "--out", str(tmp_path / "run")])
    assert r.returncode != 0
    assert "refusing to load" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()
    r = _run(["--no-progress", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert r.returncode != 0 and "CIFAR-10 not found" in r.stderr


@pytest.mark.slow  # torchrun + two ranks: ~20-40 s
def test_torchrun_two_ranks_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    args = [*FAST, "--steps", "4", "--checkpoint-every", "2", "--out", str(out),
            "--write-param-hash"]  # fmt: skip
    r = run_torchrun(SCRIPT, args, out, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2" in r.stdout
    h0 = (out / "param_hash_rank0.txt").read_text()
    assert h0 == (out / "param_hash_rank1.txt").read_text()
    ck = _ckpt(out)
    assert ck["step"] == 4 and ck["world_size"] == 2
