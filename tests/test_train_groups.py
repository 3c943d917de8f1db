"""The trainer's parameter groups (own learning rate, warm-up, decay and clipping per network)
and labelled data."""

from __future__ import annotations

import math

import pytest
import torch

from ebmcmc.estimators import Estimator, LossOutput
from ebmcmc.train import ParamGroup, TrainConfig, Trainer

torch.set_num_threads(1)


class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.energy = torch.nn.Linear(2, 1)
        self.initializer = torch.nn.Linear(2, 2)


class _Quad(Estimator):
    """loss = scale * (|energy(x)|^2 + |initializer(x)|^2): both networks get gradients."""

    def __init__(self, scale=1.0):
        self.scale = scale
        self.seen: list = []

    def loss(self, model, batch, generator=None, labels=None):
        self.seen.append((batch.clone(), None if labels is None else labels.clone()))
        e = model.energy(batch).pow(2).mean()
        i = model.initializer(batch).pow(2).mean()
        return LossOutput(self.scale * (e + i), {})


def _data(n=64):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0))


def test_default_config_has_one_group_and_the_old_warmup():
    torch.manual_seed(0)
    tr = Trainer(_Two(), _Quad(), _data(), TrainConfig(lr=1e-2, warmup_steps=4), progress=False)
    assert len(tr.optimizer.param_groups) == 1
    hist = tr.fit(6)
    assert [h["lr"] for h in hist] == pytest.approx([1e-2 * min(1, (s + 1) / 4) for s in range(6)])
    assert not any(k.startswith("lr:") or k.startswith("grad_norm:") for k in hist[0])


def test_groups_have_their_own_rates_warmups_and_decay():
    torch.manual_seed(0)
    cfg = TrainConfig(
        lr=1e-3, warmup_steps=10, decay_at=5, decay_factor=0.5,
        param_groups=(ParamGroup("initializer.", lr=1e-4, warmup_steps=20, warmup_offset=4),),
    )  # fmt: skip
    tr = Trainer(_Two(), _Quad(), _data(), cfg, progress=False)
    assert len(tr.optimizer.param_groups) == 2
    names = [{id(p) for p in g["params"]} for g in tr.optimizer.param_groups]
    assert names[0] == {id(p) for p in tr.model.energy.parameters()}
    assert names[1] == {id(p) for p in tr.model.initializer.parameters()}
    hist = tr.fit(8)
    for s, h in enumerate(hist):
        decay = 0.5 if s >= 5 else 1.0
        assert h["lr"] == pytest.approx(1e-3 * min(1, (s + 1) / 10) * decay)
        assert h["lr:initializer"] == pytest.approx(1e-4 * min(1, (s + 1 + 4) / 20) * decay)


def test_groups_are_clipped_separately():
    torch.manual_seed(0)
    cfg = TrainConfig(lr=1e-3, warmup_steps=0, grad_clip=0.5, ema_decay=None,
                      param_groups=[{"prefix": "initializer.", "lr": 1e-4}])  # fmt: skip
    tr = Trainer(_Two(), _Quad(scale=100.0), _data(), cfg, progress=False)
    rec = tr.train_step()
    n_e, n_i = rec["grad_norm:default"], rec["grad_norm:initializer"]
    assert n_e > 0.5 and n_i > 0.5  # both large before clipping
    assert rec["grad_norm"] == pytest.approx(math.hypot(n_e, n_i), rel=1e-5)
    for net in (tr.model.energy, tr.model.initializer):  # each clipped to 0.5 on its own
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
        assert float(norm) == pytest.approx(0.5, rel=1e-4)


def test_decoupled_weight_decay_per_group():
    torch.manual_seed(0)
    cfg = TrainConfig(lr=0.1, warmup_steps=0, ema_decay=None, param_groups=(
        ParamGroup("initializer.", weight_decay=0.5, decoupled_weight_decay=True),))  # fmt: skip

    class _Zero(Estimator):
        def loss(self, model, batch, generator=None):
            return LossOutput(sum(p.sum() for p in model.parameters()) * 0.0, {})

    tr = Trainer(_Two(), _Zero(), _data(), cfg, progress=False)
    before = [p.detach().clone() for p in tr.model.parameters()]
    tr.train_step()
    after = list(tr.model.parameters())
    n_e = len(list(tr.model.energy.parameters()))
    for b, a in zip(before[:n_e], after[:n_e], strict=True):  # no decay, zero gradient
        assert torch.equal(b, a)
    for b, a in zip(before[n_e:], after[n_e:], strict=True):  # AdamW: p <- p (1 - lr wd)
        torch.testing.assert_close(a.detach(), b * (1 - 0.1 * 0.5))


def test_group_validation():
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        Trainer(_Two(), _Quad(), _data(), TrainConfig(param_groups=(ParamGroup("nope."),)))
    with pytest.raises(ValueError, match="repeat a prefix"):
        TrainConfig(param_groups=(ParamGroup("a"), ParamGroup("a")))
    with pytest.raises(ValueError, match="prefix"):
        ParamGroup("")
    with pytest.raises(TypeError, match="ParamGroup or dict"):
        TrainConfig(param_groups=("initializer.",))


def test_resume_with_groups_gives_the_same_weights(tmp_path):
    cfg = TrainConfig(lr=1e-2, warmup_steps=3, param_groups=(
        ParamGroup("initializer.", lr=1e-3, warmup_offset=1),))  # fmt: skip

    def make(run_dir):
        torch.manual_seed(0)
        return Trainer(_Two(), _Quad(), _data(), cfg, run_dir=run_dir, progress=False)

    ref = make(tmp_path / "ref")
    ref.fit(6)
    a = make(tmp_path / "a")
    a.fit(3)
    b = make(tmp_path / "a")
    assert b.resume() and b.step == 3
    b.fit(6)
    for p, q in zip(ref.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [h["lr:initializer"] for h in ref.history] == [h["lr:initializer"] for h in b.history]


def test_labels_travel_with_their_examples():
    data = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    labels = torch.arange(20) * 3
    est = _Quad()
    tr = Trainer(_Two(), est, data, TrainConfig(batch_size=8), progress=False, labels=labels)
    tr.fit(3)
    for batch, lab in est.seen:
        assert torch.equal(lab, (batch[:, 0] / 2).long() * 3)
    with pytest.raises(ValueError, match="labels must be a tensor of shape"):
        Trainer(_Two(), est, data, labels=labels[:5])
    # without labels the estimator is called as before (no labels keyword)
    est2 = _Quad()
    Trainer(_Two(), est2, data, TrainConfig(batch_size=4), progress=False).fit(1)
    assert est2.seen[0][1] is None
