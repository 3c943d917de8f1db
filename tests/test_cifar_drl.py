"""End-to-end checks of ``examples/cifar_drl.py`` (CPU, smoke config, subprocesses)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_helpers import ROOT, load_script, run_script, run_torchrun
from cifar_helpers import read_ckpt as _ckpt
from cifar_helpers import script_env as _env

from ebmcmc.train import autocast_wrapper

SCRIPT = ROOT / "examples" / "cifar_drl.py"
FAST = ["--smoke", "--no-progress", "--sample-every", "0"]


def _load_script():
    return load_script(SCRIPT, "cifar_drl_example")


def _run(args, timeout=120, **kw):
    return run_script(SCRIPT, args, timeout, **kw)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name]))
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_smoke_cli_finishes(tmp_path):
    out = tmp_path / "run"
    r = _run(["--smoke", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SYNTHETIC DATA" in r.stdout
    for name in ("config.json", "checkpoint.pt", "loss.png", "history.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("samples_step*.png"))
    assert _ckpt(out)["step"] == 20


@pytest.mark.slow  # four subprocesses: ~20-45 s on a busy 2-core machine
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    steps = ["--steps", "12", "--checkpoint-every", "2"]
    ref = tmp_path / "ref"
    r = _run([*FAST, *steps, "--out", str(ref)])
    assert r.returncode == 0, r.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *FAST, *steps, "--out", str(out), "--throttle", "0.5"],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.time() < deadline, "no checkpoint within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _ckpt(out)["step"]
    assert 0 < killed_at < 12

    # without --resume the script refuses to overwrite the run
    r = _run([*FAST, *steps, "--out", str(out)])
    assert r.returncode != 0 and "--resume" in r.stderr
    r = _run([*FAST, *steps, "--out", str(out), "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {out / 'checkpoint.pt'} at step {killed_at}" in r.stdout
    _assert_same_state(_ckpt(ref), _ckpt(out))


@pytest.mark.slow  # torchrun + two ranks + a single-process run: ~15-35 s
def test_torchrun_two_ranks_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    args = [*FAST, "--steps", "6", "--checkpoint-every", "3", "--out", str(out),
            "--write-param-hash"]  # fmt: skip
    r = run_torchrun(SCRIPT, args, out, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2" in r.stdout
    h0 = (out / "param_hash_rank0.txt").read_text()
    h1 = (out / "param_hash_rank1.txt").read_text()
    assert h0 == h1
    ck = _ckpt(out)
    assert ck["step"] == 6 and ck["world_size"] == 2
    # each rank drew its own batches: the two generators differ
    g0, g1 = ck["rank_generators"]
    assert not torch.equal(g0, g1)
    # the weights moved from their initialisation
    single = tmp_path / "single"
    r = _run([*FAST, "--steps", "6", "--out", str(single), "--write-param-hash"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (single / "param_hash_rank0.txt").read_text() != h0


class _Touch:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_cifar_batch_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "PWNED"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(good, protocol=2))
    evil = {b"data": _Touch(marker), b"labels": [0]}
    (d / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    (d / "test_batch").write_bytes(pickle.dumps(good, protocol=2))
    r = _run([*FAST, "--data", str(d), "--out", str(tmp_path / "run")])
    assert r.returncode != 0
    assert "refusing to load" in r.stderr and "not allowed" in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_missing_data_is_a_clear_error(tmp_path):
    r = _run(["--no-progress", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert r.returncode != 0
    assert "CIFAR-10 not found" in r.stderr and "never downloads" in r.stderr


def test_default_config_is_the_paper_and_has_34_8m_parameters():
    mod = _load_script()
    cfg = mod.resolve_config(mod.build_parser().parse_args([]))
    assert cfg["num_levels"] == 6 and cfg["langevin_steps"] == 30 and cfg["b2"] == 2e-4
    assert cfg["batch_size"] == 256 and cfg["lr"] == 1e-4 and cfg["warmup_steps"] == 1000
    assert cfg["ema_decay"] == 0.999 and cfg["eval_noise_scale"] == 0.99 and cfg["hflip"]
    assert cfg["spectral_norm"] and cfg["channel_mult"] == [1, 2, 2, 2]
    over = mod.resolve_config(mod.build_parser().parse_args(["--langevin-steps", "7"]))
    assert over["langevin_steps"] == 7
    # spectral norm off for the count: its u/v vectors are buffers, so the parameter count
    # is the same, and registering it on meta tensors is slow (see tests/test_nn.py)
    cfg["spectral_norm"] = False
    with torch.device("meta"):
        net = mod.build_model(cfg)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 34.8e6) / 34.8e6 < 0.01, n


def test_bf16_wrapper_keeps_sampler_gradient_in_float32():
    mod = _load_script()
    cfg = mod.resolve_config(mod.build_parser().parse_args(["--smoke", "--bf16"]))
    torch.manual_seed(0)
    net = mod.build_model(cfg).eval()
    fast = autocast_wrapper(cfg["bf16"], cfg["compile"], not cfg["bf16_sampler"])(net)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    t = torch.tensor([0, 1, 2, 5])
    (g_ref,) = torch.autograd.grad(net(x, t).sum(), x)
    (g_fast,) = torch.autograd.grad(fast(x, t).sum(), x)
    assert torch.equal(g_ref, g_fast)  # sampler path: exact float32
    e = fast(x.detach(), t)  # loss path: bf16 autocast, float32 output
    assert e.dtype == torch.float32
    torch.testing.assert_close(e, net(x.detach(), t), rtol=0.05, atol=0.05)


def test_eval_writes_npz_and_explains_fid(tmp_path):
    out = tmp_path / "run"
    r = _run([*FAST, "--steps", "2", "--eval", "8", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    samples = np.load(out / "samples_8.npz")["samples"]
    assert samples.shape == (8, 32, 32, 3) and samples.dtype == np.uint8
    assert "FID/IS not computed" in r.stdout and "never downloaded" in r.stdout


def _eval_args(tmp_path, **kw):
    import argparse

    base = dict(out=str(tmp_path), inception_weights=None, fid_ref=None)
    base.update(kw)
    return argparse.Namespace(**base)


def _samples_npz(tmp_path, n=6, seed=0):
    imgs = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / f"samples_{n}.npz"
    np.savez_compressed(path, samples=imgs)
    return path, imgs


def test_fid_uses_torch_fidelity_with_local_weights(tmp_path, monkeypatch):
    """With torch-fidelity importable and a local weights file, IS and FID come from
    torch_fidelity.calculate_metrics, fed uint8 (3, 32, 32) images of the samples and of the
    reference, with the user's weights path (the package itself cannot be imported beside
    torch 2.13.0 here: this fake stands in for it and records the call)."""
    import types

    mod = _load_script()
    calls = []

    def calculate_metrics(**kw):
        calls.append(kw)
        return {
            "inception_score_mean": 7.5,
            "inception_score_std": 0.25,
            "frechet_inception_distance": 12.0,
        }

    monkeypatch.setitem(sys.modules, "torch_fidelity", types.SimpleNamespace(
        calculate_metrics=calculate_metrics))  # fmt: skip
    npz, imgs = _samples_npz(tmp_path)
    ref = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", images=ref)
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"stand-in")
    logged = []
    args = _eval_args(tmp_path, inception_weights=str(weights), fid_ref=str(tmp_path / "ref.npz"))
    m = mod.fid_if_possible(npz, {"data": None}, args, logged.append)
    assert m == {"is_mean": 7.5, "is_std": 0.25, "fid": 12.0}
    (kw,) = calls
    assert kw["isc"] and kw["fid"] and kw["feature_extractor_weights_path"] == str(weights)
    for key, want in (("input1", imgs), ("input2", ref)):
        ds = kw[key]
        assert len(ds) == len(want)
        x = ds[2]
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
        assert torch.equal(x, torch.from_numpy(want[2]).permute(2, 0, 1))
    assert "IS = 7.500 ± 0.250, FID = 12.000" in logged[-1]

    # no reference images: IS alone, and the message says what FID needs
    calls.clear()
    m = mod.fid_if_possible(npz, {"data": None}, _eval_args(tmp_path,
                            inception_weights=str(weights)), logged.append)  # fmt: skip
    assert m == {"is_mean": 7.5, "is_std": 0.25}
    assert calls[0]["input2"] is None and not calls[0]["fid"]
    assert "FID needs --data or --fid-ref" in logged[-1]


def test_fid_reference_defaults_to_the_cifar_training_images(tmp_path):
    """Without --fid-ref, the FID reference is the training set at --data, back in uint8
    (N, 32, 32, 3) exactly as stored (the [-1, 1] scaling round-trips)."""
    mod = _load_script()
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        rows.append(data)
        blob = {b"data": data, b"labels": [0, 1]}
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(blob, protocol=2))
    (d / "test_batch").write_bytes(pickle.dumps(blob, protocol=2))
    ref = mod.fid_reference(_eval_args(tmp_path), {"data": str(d)})["images"]
    want = np.concatenate(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert ref.dtype == np.uint8 and np.array_equal(ref, want)
    assert mod.fid_reference(_eval_args(tmp_path), {"data": None}) == {}


def test_fid_explains_missing_weights_and_packages(tmp_path, monkeypatch):
    import types

    mod = _load_script()
    npz, _ = _samples_npz(tmp_path)
    logged = []
    # a package present but no weights file: nothing is called, the message says what to pass
    fake = types.SimpleNamespace(calculate_metrics=lambda **kw: pytest.fail("called"))
    monkeypatch.setitem(sys.modules, "torch_fidelity", fake)
    args = _eval_args(tmp_path, inception_weights=str(tmp_path / "missing.pth"))
    assert mod.fid_if_possible(npz, {"data": None}, args, logged.append) == {}
    assert "--inception-weights must name an existing local file" in logged[-1]
    assert "never downloaded" in logged[-1] and str(npz) in logged[-1]
    # neither package importable (None in sys.modules makes the import fail)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)
    assert mod.fid_if_possible(npz, {"data": None}, args, logged.append) == {}
    assert "neither torch-fidelity nor pytorch-fid imports here" in logged[-1]


@pytest.mark.slow  # three torchrun launches: ~30-60 s
def test_torchrun_resume_matches_uninterrupted_run(tmp_path):
    def launch(steps, out, *extra):
        args = [*FAST, "--steps", str(steps), "--checkpoint-every", "2", "--out", str(out), *extra]
        r = run_torchrun(SCRIPT, args, out, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    launch(6, tmp_path / "a")
    launch(3, tmp_path / "b")
    r = launch(6, tmp_path / "b", "--resume")
    assert "at step 3" in r.stdout
    a, b = _ckpt(tmp_path / "a"), _ckpt(tmp_path / "b")
    _assert_same_state(a, b)
    for ga, gb in zip(a["rank_generators"], b["rank_generators"], strict=True):
        assert torch.equal(ga, gb)
