"""Tests for ebmcmc.nn: level embedding, the toy MLP energy and the DRL ResNet energy."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from ebmcmc.nn import DRLResNet, TimeMLP, sinusoidal_embedding


def _drl_param_count(in_ch: int, ch: int, mult: tuple[int, ...], blocks: int) -> int:
    """Parameters of the DRL ResNet, counted from the architecture in docs/methods/drl.md."""
    temb = 4 * ch
    n = (ch * temb + temb) + (temb * temb + temb)  # level embedding: two Dense layers
    n += in_ch * ch * 9 + ch  # first 3x3 conv
    c_prev = ch
    for m in mult:
        for _ in range(blocks):
            c = ch * m
            n += c_prev * c * 9 + c  # conv 1
            n += temb * c + c  # Dense(act(temb))
            n += c * c * 9 + c + c  # conv 2 and its per-channel gain
            if c_prev != c:
                n += c_prev * c * 9 + c  # 3x3 conv shortcut
            c_prev = c
    n += temb * c_prev + c_prev  # head Dense(act(temb))
    return n


def _small(**kw) -> DRLResNet:
    torch.manual_seed(0)
    return DRLResNet(**{"base_channels": 16, "num_res_blocks": 1, **kw})


# ----------------------------------------------------------------------------- embedding


def test_sinusoidal_embedding_values():
    t = torch.tensor([0, 1, 7])
    emb = sinusoidal_embedding(t, 6)
    assert emb.shape == (3, 6) and emb.dtype == torch.get_default_dtype()
    assert emb[0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    freqs = [10000.0 ** (-i / 2) for i in range(3)]
    expected = [math.sin(7 * f) for f in freqs] + [math.cos(7 * f) for f in freqs]
    torch.testing.assert_close(emb[2], torch.tensor(expected))


def test_sinusoidal_embedding_odd_dim_float_t_and_batch_shape():
    emb = sinusoidal_embedding(torch.tensor([[0.5, 1.5]], dtype=torch.float64), 7)
    assert emb.shape == (1, 2, 7) and emb.dtype == torch.float64
    assert bool((emb[..., -1] == 0).all())
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(torch.tensor([0]), 1)


# ----------------------------------------------------------------------------- TimeMLP


def test_time_mlp_shapes_levels_and_none():
    torch.manual_seed(0)
    model = TimeMLP(2, hidden=32, num_levels=6)
    x = torch.randn(5, 2)
    e = model(x, torch.tensor([0, 1, 2, 3, 5]))
    assert e.shape == (5,) and bool(torch.isfinite(e).all())
    zero = torch.zeros(5, dtype=torch.long)
    torch.testing.assert_close(model(x), model(x, zero))
    torch.testing.assert_close(model(x, 3), model(x, torch.full((5,), 3)))
    # the level matters
    assert not torch.allclose(model(x, zero), model(x, torch.full((5,), 4)))
    # several batch dimensions
    xb = torch.randn(4, 3, 2)
    tb = torch.randint(0, 6, (4, 3))
    eb = model(xb, tb)
    assert eb.shape == (4, 3)
    torch.testing.assert_close(eb.reshape(-1), model(xb.reshape(-1, 2), tb.reshape(-1)))


@pytest.mark.parametrize("activation", ["silu", "leaky_relu"])
def test_time_mlp_input_gradient(activation):
    torch.manual_seed(0)
    model = TimeMLP(3, hidden=16, num_layers=2, activation=activation)
    x = torch.randn(8, 3, requires_grad=True)
    (g,) = torch.autograd.grad(model(x, torch.arange(8) % 6).sum(), x)
    assert g.shape == x.shape and bool(torch.isfinite(g).all())
    assert g.abs().sum() > 0


def test_time_mlp_validation():
    model = TimeMLP(2, hidden=8, num_levels=6)
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        model(torch.zeros(4, 2), torch.tensor([0, 1, 2, 6]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="broadcast"):
        model(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="activation"):
        TimeMLP(2, activation="tanh")
    with pytest.raises(ValueError, match="num_layers"):
        TimeMLP(2, num_layers=0)


# ----------------------------------------------------------------------------- DRLResNet


def test_drl_resnet_parameter_count_on_meta_device():
    # Defaults except spectral norm, whose vectors are buffers and leave the count unchanged
    # (see test_spectral_norm_does_not_change_parameter_count): registering PyTorch's spectral
    # norm runs 15 power iterations per layer, which costs seconds on meta tensors.
    with torch.device("meta"):
        net = DRLResNet(spectral_norm=False)
    params = list(net.parameters())
    assert all(p.is_meta for p in params)  # nothing was allocated
    n = sum(p.numel() for p in params)
    assert abs(n - 34.8e6) / 34.8e6 < 0.01, n
    assert n == _drl_param_count(3, 128, (1, 2, 2, 2), 8) == 34_833_408


@pytest.mark.slow
def test_drl_resnet_default_parameter_count_on_meta_device():
    # exactly the defaults, spectral norm included (a few seconds: see the test above)
    with torch.device("meta"):
        net = DRLResNet()
    params = list(net.parameters())
    assert all(p.is_meta for p in params)
    n = sum(p.numel() for p in params)
    assert abs(n - 34.8e6) / 34.8e6 < 0.01, n
    assert n == 34_833_408


def test_drl_resnet_64px_parameter_count_on_meta_device():
    # spectral norm does not change the count (its vectors are buffers); skip it to stay fast
    with torch.device("meta"):
        net = DRLResNet(image_size=64, spectral_norm=False)
    assert net.channel_mult == (1, 2, 2, 2, 4)
    n = sum(p.numel() for p in net.parameters())
    assert n == _drl_param_count(3, 128, (1, 2, 2, 2, 4), 8)


def test_spectral_norm_does_not_change_parameter_count():
    n_sn = sum(p.numel() for p in _small(spectral_norm=True).parameters())
    n_plain = sum(p.numel() for p in _small(spectral_norm=False).parameters())
    assert n_sn == n_plain == _drl_param_count(3, 16, (1, 2, 2, 2), 1)


def test_drl_resnet_small_forward_backward():
    net = _small()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    e = net(x, torch.tensor([0, 5]))
    assert e.shape == (2,) and bool(torch.isfinite(e).all())
    e.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert bool(torch.isfinite(x.grad).all())
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name


@pytest.mark.parametrize("training", [True, False])
def test_drl_resnet_input_gradient(training):
    net = _small().train(training)
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    (g,) = torch.autograd.grad(net(x, torch.tensor([1, 2, 3])).sum(), x)
    assert g.shape == x.shape and bool(torch.isfinite(g).all()) and g.abs().sum() > 0


def test_drl_resnet_64px():
    net = _small(image_size=64)
    assert net.channel_mult == (1, 2, 2, 2, 4)
    e = net(torch.randn(1, 3, 64, 64), torch.tensor([2]))
    assert e.shape == (1,) and bool(torch.isfinite(e).all())


def test_drl_resnet_returns_negated_output():
    # With the head's Dense fixed to weight 0, bias 1, the network output f is the sum of
    # ReLU features (> 0), so the energy -f must be negative.
    net = _small()
    with torch.no_grad():
        net.head_dense.weight.zero_()
        net.head_dense.bias.fill_(1.0)
    e = net(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert bool((e < 0).all())


def test_drl_resnet_levels_and_batch_dims():
    net = _small(image_size=16, channel_mult=(1, 2)).eval()
    x = torch.randn(2, 2, 3, 16, 16)
    t = torch.tensor([[0, 1], [2, 3]])
    e = net(x, t)
    assert e.shape == (2, 2)
    torch.testing.assert_close(e.reshape(-1), net(x.reshape(4, 3, 16, 16), t.reshape(-1)))
    x1 = x[0]
    torch.testing.assert_close(net(x1), net(x1, torch.zeros(2, dtype=torch.long)))
    torch.testing.assert_close(net(x1, 4), net(x1, torch.tensor([4, 4])))


def test_drl_resnet_validation():
    net = _small()
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        net(torch.zeros(2, 3, 32, 32), torch.tensor([0, 6]))
    with pytest.raises(TypeError, match="integer"):
        net(torch.zeros(2, 3, 32, 32), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="channel_mult"):
        DRLResNet(image_size=48)
    with pytest.raises(ValueError, match="channel_mult"):
        DRLResNet(base_channels=8, num_res_blocks=1, channel_mult=(1, 0))
    with pytest.raises(ValueError, match="dropout"):
        DRLResNet(base_channels=8, num_res_blocks=1, dropout=1.0)


def test_drl_resnet_other_image_size_with_explicit_multipliers():
    net = _small(image_size=28, channel_mult=(1, 2, 2))
    e = net(torch.randn(2, 3, 28, 28), torch.tensor([0, 1]))
    assert e.shape == (2,) and bool(torch.isfinite(e).all())


def _spectral(w: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(w.detach().flatten(1), ord=2).item()


def test_drl_resnet_spectral_norm():
    net = _small(base_channels=8, image_size=8, channel_mult=(1, 2, 2)).train()
    block = net.levels[0][0]
    for module in (net.conv_in, net.temb_dense0, net.temb_dense1, block.conv1, block.temb_proj):
        assert parametrize.is_parametrized(module, "weight")
    assert parametrize.is_parametrized(block.conv2, "weight")
    assert not parametrize.is_parametrized(net.head_dense)  # the head Dense is plain in DRL
    assert isinstance(net.levels[1][0].shortcut, torch.nn.Conv2d)
    assert isinstance(net.levels[2][0].shortcut, torch.nn.Identity)

    x = torch.randn(2, 3, 8, 8)
    u_before = net.conv_in.parametrizations.weight[0]._u.clone()
    for _ in range(10):  # power iterations converge over forwards
        net(x, torch.tensor([0, 1]))
    assert not torch.equal(u_before, net.conv_in.parametrizations.weight[0]._u)
    for module in (net.conv_in, net.temb_dense1, block.conv1, block.temb_proj):
        assert abs(_spectral(module.weight) - 1.0) < 1e-2
    # the near-zero-initialized conv keeps its tiny norm (bounded by 1, not rescaled to 1)
    assert _spectral(block.conv2.weight) < 1e-4
    with torch.no_grad():
        block.conv2.parametrizations.weight.original.mul_(1e7)
    for _ in range(10):
        net(x, torch.tensor([0, 1]))
    assert _spectral(block.conv2.weight) <= 1.0 + 1e-3

    # no power iteration in eval mode
    net.eval()
    u = net.conv_in.parametrizations.weight[0]._u.clone()
    net(x, torch.tensor([0, 1]))
    assert torch.equal(u, net.conv_in.parametrizations.weight[0]._u)


def test_drl_resnet_without_spectral_norm():
    net = _small(spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    e = net(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert e.shape == (2,)


def test_drl_resnet_dropout_only_in_training():
    net = _small(dropout=0.5)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([0, 1])
    net.eval()
    torch.testing.assert_close(net(x, t), net(x, t))


def test_drl_resnet_deepcopy_and_state_dict_roundtrip(tmp_path):
    # EMA copies and checkpoints must carry the spectral-norm parametrizations and buffers
    import copy

    net = _small(image_size=8, channel_mult=(1, 2)).eval()
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0, 3])
    twin = copy.deepcopy(net)
    torch.testing.assert_close(twin(x, t), net(x, t))
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    torch.manual_seed(1)
    fresh = DRLResNet(base_channels=16, num_res_blocks=1, image_size=8, channel_mult=(1, 2))
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    torch.testing.assert_close(fresh(x, t), net(x, t))


# ----------------------------------------------------------------------------- Fourier / scaled


def test_time_mlp_fourier_features():
    from ebmcmc.nn import LevelScaled  # noqa: F401

    m = TimeMLP(2, hidden=16, num_levels=3, fourier_features=8, fourier_scale=0.5,
                fourier_seed=3)  # fmt: skip
    assert m.fourier_b.shape == (8, 2)
    assert m.layers[0].in_features == 2 + 16
    same = TimeMLP(2, hidden=16, num_levels=3, fourier_features=8, fourier_scale=0.5,
                   fourier_seed=3)  # fmt: skip
    torch.testing.assert_close(m.fourier_b, same.fourier_b)
    # the features are sin/cos of 2 pi B x
    x = torch.randn(4, 2)
    proj = 2 * math.pi * x @ m.fourier_b.T
    h = torch.cat([x, torch.sin(proj), torch.cos(proj)], -1)
    t = torch.zeros(4, dtype=torch.long)
    temb = m.act(m.time_mlp(sinusoidal_embedding(t, m.time_dim)))
    shift = m.time_shift(temb).chunk(m.num_layers, -1)[0]
    h1 = m.act(m.layers[0](h) + shift)
    for layer, sh in zip(m.layers[1:], m.time_shift(temb).chunk(m.num_layers, -1)[1:], strict=True):
        h1 = m.act(layer(h1) + sh)
    torch.testing.assert_close(m(x, t), m.out(h1).squeeze(-1))
    assert "fourier_b" in m.state_dict()
    # without features the state dict is what it always was (old checkpoints load)
    plain = TimeMLP(2, hidden=16, num_levels=3)
    assert "fourier_b" not in plain.state_dict()
    with pytest.raises(ValueError, match="fourier_scale"):
        TimeMLP(2, fourier_features=4, fourier_scale=0.0)
    with pytest.raises(ValueError, match="fourier_features"):
        TimeMLP(2, fourier_features=-1)


def test_level_scaled():
    from ebmcmc.nn import LevelScaled

    net = TimeMLP(2, hidden=16, num_levels=3)
    scale = torch.tensor([1e-3, 1e-2, 1e-1])
    model = LevelScaled(net, scale)
    x = torch.randn(6, 2)
    t = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(model(x, t), net(x, t) * scale[t])
    torch.testing.assert_close(model(x, 2), net(x, 2) * 0.1)
    torch.testing.assert_close(model(x), net(x) * 1e-3)
    assert "scale" in model.state_dict()
    for bad in (torch.tensor([1.0, 0.0]), torch.ones(2, 2), torch.tensor([float("inf")])):
        with pytest.raises(ValueError, match="scale"):
            LevelScaled(net, bad)
    with pytest.raises(ValueError, match="t must lie"):
        model(x, torch.full((6,), 3))


def test_networks_trace_without_graph_breaks():
    """Level validation does not synchronise with the host under torch.compile: dynamo
    traces TimeMLP and DRLResNet (spectral norm included) as one graph each. (The eager
    CPU check still raises ValueError for a level out of range: see the tests above.)"""
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    cases = [
        (TimeMLP(8, hidden=16, num_levels=3), torch.randn(4, 8), torch.tensor([0, 1, 2, 1])),
        (
            DRLResNet(base_channels=8, num_res_blocks=1, image_size=32),
            torch.randn(2, 3, 32, 32),
            torch.tensor([0, 5]),
        ),
    ]
    for net, x, t in cases:
        dynamo.reset()
        ex = dynamo.explain(net)(x, t)
        assert ex.graph_break_count == 0, ex.break_reasons
        assert ex.graph_count == 1
