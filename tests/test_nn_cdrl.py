"""The CDRL networks: shapes, level and label handling, initialisation, spectral norm, and the
parameter counts of the paper's CIFAR-10 configuration (built on the meta device)."""

from __future__ import annotations

import math

import pytest
import torch

from ebmcmc.diffusion import CDRLSchedule
from ebmcmc.nn import (
    CDRLEnergyMLP,
    CDRLInitializerMLP,
    CDRLResNet,
    CDRLUNet,
    CooperativeModel,
    LogSNRLevels,
    TimeMLP,
    logsnr_to_unit,
)

torch.set_num_threads(1)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_parameter_counts_on_meta_device():
    """The paper's CIFAR-10 networks (main_uncond.py: EBM width 128, 8 blocks per resolution;
    Unet(dim=64)); the counts equal those of the official modules built with the same
    settings (checked once against the released code, which is not part of this repository)."""
    with torch.device("meta"):
        ebm = CDRLResNet(spectral_norm=False)  # spectral norm adds buffers, not parameters
        init = CDRLUNet()
        ebm_c = CDRLResNet(spectral_norm=False, num_classes=10)
        init_c = CDRLUNet(num_classes=10)
    counts = {
        "energy": _count(ebm),
        "initializer": _count(init),
        "energy (10 classes)": _count(ebm_c),
        "initializer (10 classes)": _count(init_c),
    }
    print("CDRL parameter counts:", counts)
    assert counts == {
        "energy": 34_833_152,
        "initializer": 3_769_795,
        "energy (10 classes)": 34_833_152 + 11 * 512 + 512,  # one-hot (11) -> 512
        "initializer (10 classes)": 3_769_795 + 11 * 256 + 256,  # one-hot -> 256
    }


def test_spectral_norm_does_not_change_the_count_and_covers_the_right_layers():
    kw = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_classes=3)
    with_sn, without = CDRLResNet(**kw), CDRLResNet(spectral_norm=False, **kw)
    assert _count(with_sn) == _count(without)
    sn = {n.split(".parametrizations")[0] for n, _ in with_sn.named_parameters() if "original" in n}
    assert "head" not in sn  # the head's linear map is not normalised
    assert {"temb_map1", "temb_map2", "label_map", "conv_in", "stages.0.0.conv1",
            "stages.0.0.conv2", "stages.0.0.temb_map", "stages.1.0.shortcut"} <= sn  # fmt: skip


def test_resnet_shapes_levels_labels_and_sign():
    torch.manual_seed(0)
    net = CDRLResNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_classes=4)
    net.eval()  # no power iterations: repeated calls give the same output
    x = torch.randn(3, 3, 32, 32)
    t = torch.tensor([0, 3, 6])
    e = net(x, t, torch.tensor([0, 1, 4]))
    assert e.shape == (3,)
    assert torch.equal(net(x, t), net(x, t, torch.full((3,), 4)))  # None is the null class
    assert not torch.equal(net(x, t, torch.zeros(3, dtype=torch.long)), net(x, t))
    # extra batch dimensions
    assert net(x.reshape(1, 3, 3, 32, 32), t.reshape(1, 3)).shape == (1, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 6\]"):
        net(x, torch.tensor([0, 1, 7]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        net(x, t, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(2, 3, 16, 16), t[:2])
    with pytest.raises(ValueError, match="unconditional"):
        CDRLResNet(base_channels=8, channel_mult=(1,), num_res_blocks=1)(x, t, t)
    with pytest.raises(ValueError, match="channel_mult"):
        CDRLResNet(channel_mult=())
    # the output is -f: the head sums relu(h) against a linear map of the level embedding
    net.eval()
    with torch.no_grad():
        net.head.weight.zero_()
    assert torch.equal(net(x, t), torch.zeros(3))


def test_resnet_levels_come_from_the_log_snr_table():
    sched = CDRLSchedule(4)
    net = CDRLResNet(base_channels=8, channel_mult=(1,), num_res_blocks=1, logsnr=sched.logsnr)
    assert net.num_levels == 5
    lv = net.levels(torch.tensor([0, 4]))
    torch.testing.assert_close(lv, 1000 * logsnr_to_unit(sched.logsnr[[0, 4]].float()))
    # for the CDRL schedule nu is linear in time: (a u + b) / (pi / 2)
    b = math.atan(math.exp(-9.8 / 2))
    a = math.atan(math.exp(5.1 / 2)) - b
    want = torch.tensor([(a * k / 4 + b) / (math.pi / 2) for k in range(5)])
    torch.testing.assert_close(logsnr_to_unit(sched.logsnr.float()), want)
    with pytest.raises(ValueError):
        LogSNRLevels(torch.tensor([[0.0]]))
    with pytest.raises(ValueError):
        LogSNRLevels(torch.tensor([float("nan")]))


def test_unet_starts_as_the_identity_plus_bias_and_learns_a_residual():
    torch.manual_seed(0)
    net = CDRLUNet(base_channels=16, num_res_blocks=1, image_size=16, attention_resolutions=(8,),
                   num_groups=8)  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([1, 6])
    out = net(x, t)
    torch.testing.assert_close(out, x + net.conv_out.bias[:, None, None].expand_as(x))
    # the residual path is live: perturb the zero-initialised layers and the output moves
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv2.weight" in name or "out.weight" in name or "conv_out.weight" in name:
                p.normal_(0, 0.05)
    net.eval()
    out2 = net(x, t)
    assert (out2 - x).abs().max() > 1e-2
    assert not torch.equal(out2, net(x, torch.tensor([2, 6])))  # depends on the level
    net.train()  # dropout is active in training mode only
    assert not torch.equal(net(x, t), net(x, t))
    no_res = CDRLUNet(base_channels=16, num_res_blocks=1, image_size=16, num_groups=8,
                      attention_resolutions=(), residual=False, dropout=0.0)  # fmt: skip
    assert no_res(x, t).abs().max() < 1  # only the bias of the last layer


def test_unet_attention_blocks_and_shapes():
    net = CDRLUNet(base_channels=32, image_size=32)  # the paper's layout at width 32
    kinds = [type(m[1]).__name__ for m in net.down] + [type(m[1]).__name__ for m in net.up]
    # down: 3 blocks per resolution (+ a down block); attention only at 16 and 8 px
    assert kinds[:4] == ["Identity"] * 4 and kinds[4:7] == ["_Attention"] * 3
    assert sum(k == "_Attention" for k in kinds) == 3 + 3 + 4 + 4
    assert len(net.up) == 3 * 4 + 2
    with pytest.raises(ValueError, match="halve"):
        CDRLUNet(image_size=30)
    with pytest.raises(ValueError, match="heads"):
        CDRLUNet(base_channels=8, num_heads=3, num_groups=8)
    net1 = CDRLUNet(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                    image_size=28, attention_resolutions=(14,), num_groups=4, num_heads=2,
                    num_classes=10)  # fmt: skip
    x = torch.randn(2, 1, 28, 28)
    assert net1(x, torch.tensor([1, 2]), torch.tensor([3, 10])).shape == x.shape


def test_mlp_variants_and_the_cooperative_model():
    torch.manual_seed(0)
    e = CDRLEnergyMLP(4, hidden=16, num_blocks=2, num_classes=3)
    g = CDRLInitializerMLP(4, hidden=16, num_blocks=2, num_classes=3, dropout=0.1)
    e.eval()
    x = torch.randn(5, 4)
    t = torch.tensor([0, 1, 2, 5, 6])
    lab = torch.tensor([0, 1, 2, 3, 0])
    assert e(x, t, lab).shape == (5,)
    assert torch.equal(g(x, t, lab), x)  # zero output layer: the identity until trained
    m = CooperativeModel(e, g)
    assert torch.equal(m(x, t, lab), e(x, t, lab))
    assert torch.equal(m.propose(x, t, lab), x)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(e(xg, t).sum(), xg)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # any energy works, e.g. TimeMLP (called without labels when none are given)
    m2 = CooperativeModel(TimeMLP(4, hidden=8, num_levels=6), g)
    assert m2(x, t.clamp(max=5)).shape == (5,)
    with pytest.raises(TypeError):
        CooperativeModel(lambda x, t: x, g)
    with pytest.raises(ValueError, match="shape"):
        e(torch.randn(5, 3), t)
    with pytest.raises(ValueError, match="dropout"):
        CDRLInitializerMLP(4, dropout=1.0)


def test_state_dict_roundtrip_and_deepcopy():
    import copy

    torch.manual_seed(0)
    m = CooperativeModel(CDRLResNet(base_channels=8, channel_mult=(1,), num_res_blocks=1),
                         CDRLUNet(base_channels=8, num_res_blocks=1, image_size=8,
                                  attention_resolutions=(4,), num_groups=4))  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    m2 = copy.deepcopy(m).eval()
    m.eval()
    t = torch.tensor([0, 3])
    assert torch.equal(m(x, t), m2(x, t))
    sd = m.state_dict()
    assert "energy.levels.logsnr" in sd and "initializer.levels.logsnr" in sd
    fresh = CooperativeModel(CDRLResNet(base_channels=8, channel_mult=(1,), num_res_blocks=1),
                             CDRLUNet(base_channels=8, num_res_blocks=1, image_size=8,
                                      attention_resolutions=(4,), num_groups=4))  # fmt: skip
    fresh.load_state_dict(sd)
    fresh.eval()
    assert torch.equal(fresh(x, t), m(x, t))
