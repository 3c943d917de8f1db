"""The trainer: exact resume from a checkpoint, atomic files, clear errors."""

import pytest
import torch

from ebmcmc.diffusion import DRLSchedule
from ebmcmc.estimators import DiffusionRecoveryLikelihood, PersistentContrastiveDivergence
from ebmcmc.kernels import Langevin
from ebmcmc.nn import TimeMLP
from ebmcmc.train import TrainConfig, Trainer, load_checkpoint

DATA = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
CONFIG = dict(lr=1e-3, warmup_steps=5, batch_size=16, grad_clip=1.0, ema_decay=0.9)


def _trainer(run_dir, estimator, seed=1):
    torch.manual_seed(0)  # the model's initial weights
    model = TimeMLP(2, hidden=16, num_levels=6)
    return Trainer(
        model, estimator, DATA, TrainConfig(**CONFIG), run_dir=run_dir, seed=seed, progress=False
    )


@pytest.mark.parametrize(
    "make_estimator",
    [
        lambda: PersistentContrastiveDivergence(Langevin(0.01), 3, buffer_size=64),
        lambda: DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=3),
    ],
    ids=["pcd", "drl"],
)
def test_resume_gives_the_same_weights(tmp_path, make_estimator):
    straight = _trainer(tmp_path / "a", make_estimator())
    straight.fit(20)
    first = _trainer(tmp_path / "b", make_estimator())
    first.fit(9)  # stops (as if killed) after a checkpoint at step 9
    # a fresh process: different seed argument, fresh estimator; everything comes from the file
    second = _trainer(tmp_path / "b", make_estimator(), seed=99)
    assert second.resume() and second.step == 9
    second.fit(20)
    for name, sd in (("model", "model"), ("ema", "ema_model")):
        a = getattr(straight, sd).state_dict()
        b = getattr(second, sd).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in second.history]


def test_checkpoint_is_atomic_and_validated(tmp_path):
    tr = _trainer(tmp_path, PersistentContrastiveDivergence(Langevin(0.01), 2, buffer_size=32))
    tr.fit(3)
    path = tmp_path / "checkpoint.pt"
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    assert load_checkpoint(path)["step"] == 3
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        tr.load(bad)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    class Exploding(PersistentContrastiveDivergence):
        def loss(self, model, batch, generator=None):
            out = super().loss(model, batch, generator)
            out.loss = out.loss * float("nan")
            return out

    tr = _trainer(tmp_path, Exploding(Langevin(0.01), 1, buffer_size=32))
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        tr.fit(2)
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())


def test_trainer_validation():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match="non-finite"):
        Trainer(
            TimeMLP(2, hidden=8),
            None or PersistentContrastiveDivergence(Langevin(0.1), 1),
            torch.tensor([[float("nan"), 0.0]]),
            progress=False,
        )


def test_resuming_with_another_model_is_a_clear_error(tmp_path):
    from ebmcmc.estimators import ContrastiveDivergence
    from ebmcmc.kernels import Langevin
    from ebmcmc.nn import TimeMLP

    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(lr=1e-3, warmup_steps=0, batch_size=16)
    est = ContrastiveDivergence(Langevin(0.01), 2)
    tr = Trainer(TimeMLP(2, hidden=8, num_levels=1), est, data, cfg, run_dir=tmp_path,
                 progress=False)  # fmt: skip
    tr.fit(2)
    other = Trainer(TimeMLP(2, hidden=16, num_levels=1), est, data, cfg, run_dir=tmp_path,
                    progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="different model"):
        other.resume()


def test_learning_rate_decay_follows_the_step():
    from ebmcmc.estimators import ContrastiveDivergence
    from ebmcmc.kernels import Langevin
    from ebmcmc.nn import TimeMLP

    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(lr=1e-2, warmup_steps=2, batch_size=16, decay_at=4, decay_factor=0.5)
    tr = Trainer(TimeMLP(2, hidden=8, num_levels=1), ContrastiveDivergence(Langevin(0.01), 1),
                 data, cfg, progress=False)  # fmt: skip
    tr.fit(6)
    assert [round(h["lr"], 6) for h in tr.history] == [0.005, 0.01, 0.01, 0.01, 0.005, 0.005]
    for bad in ({"decay_at": -1}, {"decay_factor": 0.0}, {"decay_at": 1.5}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_time_budget_stops_after_the_step_that_crosses_it_and_checkpoints(tmp_path):
    from ebmcmc.estimators import ContrastiveDivergence
    from ebmcmc.kernels import Langevin

    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(lr=1e-3, warmup_steps=0, batch_size=16)
    est = ContrastiveDivergence(Langevin(0.01), 1)
    tr = Trainer(TimeMLP(2, hidden=8, num_levels=1), est, data, cfg, run_dir=tmp_path,
                 progress=False)  # fmt: skip
    tr.fit(100, max_seconds=0.0)
    assert tr.step == 1
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    again = Trainer(TimeMLP(2, hidden=8, num_levels=1), est, data, cfg, run_dir=tmp_path,
                    progress=False)  # fmt: skip
    assert again.resume() and again.step == 1
    again.fit(3, max_seconds=60.0)
    assert again.step == 3
