"""End-to-end checks of ``examples/cifar_drl.py`` (CPU, smoke config, subprocesses)."""

from __future__ import annotations

import importlib.util
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

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "cifar_drl.py"
FAST = ["--smoke", "--no-progress", "--sample-every", "0"]


def _load_script():
    spec = importlib.util.spec_from_file_location("cifar_drl_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args, timeout=120, **kw):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **kw,
    )


def _ckpt(path: Path) -> dict:
    return torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)


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
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",  # a free port, so parallel test workers never collide
        str(SCRIPT),
        *FAST,
        "--steps",
        "6",
        "--checkpoint-every",
        "3",
        "--out",
        str(out),
        "--write-param-hash",
    ]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180, cwd=ROOT)
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
    fast = mod.make_wrapper(cfg)(net)
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


@pytest.mark.slow  # three torchrun launches: ~30-60 s
def test_torchrun_resume_matches_uninterrupted_run(tmp_path):
    def launch(steps, out, *extra):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            str(SCRIPT),
            *FAST,
            "--steps",
            str(steps),
            "--checkpoint-every",
            "2",
            "--out",
            str(out),
            *extra,
        ]
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180, cwd=ROOT)
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
