"""Architecture facts of the backbones (the three SuPreM ones and MedNeXt) and the Universal Model (reference §1)."""

import re

import pytest
import torch
from torch import nn

from suprem_nn.networks import (
    BACKBONES,
    NETWORK_DIVISIBILITY,
    build_network,
    build_universal_model,
    uses_batch_statistics,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_unet_backbone_parameter_and_key_counts():
    with_head = build_network("unet", 1, 18)
    sd = with_head.state_dict()
    assert len(sd) == 106
    backbone = {k: v for k, v in sd.items() if not k.startswith("out_tr.")}
    assert len(backbone) == 104
    assert sum(v.numel() for k, v in with_head.named_parameters() if not k.startswith("out_tr.")) == 19_073_600
    assert n_params(with_head) == 19_074_770
    assert sd["down_tr64.ops.0.conv1.weight"].shape == (32, 1, 3, 3, 3)
    assert sd["up_tr256.up_conv.weight"].shape == (512, 512, 2, 2, 2)
    assert sd["up_tr256.ops.0.conv1.weight"].shape == (256, 768, 3, 3, 3)
    assert sd["out_tr.final_conv.weight"].shape == (18, 64, 1, 1, 1)
    assert "down_tr64.ops.0.bn1.running_mean" in sd and "down_tr512.ops.1.bn1.num_batches_tracked" in sd


def test_segresnet_parameter_and_key_counts():
    model = build_network("segresnet", 1, 32)
    sd = model.state_dict()
    assert len(sd) == 83
    assert n_params(model) == 4_701_424
    assert n_params(build_network("segresnet", 1, 25)) == 4_701_305
    assert sd["convInit.conv.weight"].shape == (16, 1, 3, 3, 3)
    assert sd["conv_final.2.conv.weight"].shape == (32, 16, 1, 1, 1)
    assert sd["conv_final.0.weight"].shape == (16,)


def test_swinunetr_parameter_and_key_counts():
    model = build_network("swinunetr", 1, 32)
    sd = model.state_dict()
    assert len(sd) == 159
    backbone_params = sum(v.numel() for k, v in model.named_parameters() if not k.startswith("out."))
    assert backbone_params == 62_186_610
    assert sd["swinViT.layers1.0.blocks.0.attn.relative_position_index"].shape == (343, 343)
    assert sd["swinViT.layers4.0.blocks.1.attn.relative_position_bias_table"].shape == (2197, 24)
    assert sd["out.conv.conv.weight"].shape == (32, 48, 1, 1, 1)
    assert sd["swinViT.layers1.0.downsample.reduction.weight"].shape == (96, 384)


def test_mednext_is_mednext_b_with_3x3x3_kernels():
    model = build_network("mednext", 1, 32)
    sd = model.state_dict()
    assert len(sd) == 228
    assert n_params(model) == 10_511_840  # MONAI's create_mednext("B") with a 32-class head
    assert sd["stem.weight"].shape == (32, 1, 1, 1, 1)
    assert sd["enc_stages.0.0.conv1.weight"].shape == (32, 1, 3, 3, 3)  # depth-wise 3x3x3
    assert sd["enc_stages.3.0.conv2.weight"].shape == (4 * 256, 256, 1, 1, 1)  # expansion ratio 4 at stage 4
    assert sd["bottleneck.1.conv2.weight"].shape == (4 * 512, 512, 1, 1, 1)
    assert sd["out_0.conv_out.weight"].shape == (32, 32, 1, 1, 1)  # a transposed conv: (in, out, ...)
    assert "down_blocks.0.res_conv.weight" in sd  # residual connections on
    assert not any(k.startswith("out_blocks.") for k in sd)  # no deep-supervision heads
    model.train()
    y = model(torch.randn(1, 1, 16, 16, 32))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 32, 16, 16, 32)  # one output in training, too
    with pytest.raises(ValueError, match=r"cannot train on \(16, 16, 16\) patches: at least one axis must be 32"):
        model(torch.randn(1, 1, 16, 16, 16))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_entry_agrees_with_the_network_it_builds(name):
    """The facts of a backbone's entry that can be read off its network are checked against the network."""
    spec = BACKBONES[name]
    base = build_network(name, 1, 32).state_dict()
    assert sum(v.numel() for v in build_network(name, 1, 32).parameters()) == spec.parameter_count
    # input_conv_keys: exactly the tensors whose axis 1 follows the input channel count
    two_inputs = build_network(name, 2, 32).state_dict()
    assert sorted(k for k in base if two_inputs[k].shape != base[k].shape) == sorted(spec.input_conv_keys)
    assert all(two_inputs[k].shape[1] == 2 for k in spec.input_conv_keys)
    # head_prefixes: every tensor that follows the output channel count, and nothing of the encoder
    five_outputs = build_network(name, 1, 5).state_dict()
    head = [k for k in base if five_outputs[k].shape != base[k].shape]
    assert head and all(k.startswith(spec.head_prefixes) for k in head)
    assert all(any(k.startswith(p) for k in base) for p in spec.encoder_prefixes)
    assert not any(k.startswith(spec.head_prefixes) and k.startswith(spec.encoder_prefixes) for k in base)
    assert NETWORK_DIVISIBILITY[name] == spec.divisibility


@pytest.mark.parametrize("backbone, keys, params, bottleneck, decoder",
                         [("unet", 117, 19_416_417, 512, 64), ("swinunetr", 170, 62_595_315, 768, 48)])
def test_universal_model_counts_and_head_layout(backbone, keys, params, bottleneck, decoder):
    model = build_universal_model(backbone, 32)
    sd = model.state_dict()
    assert len(sd) == keys
    assert n_params(model) == params
    assert list(sd)[0] == "organ_embedding"
    assert sd["organ_embedding"].shape == (32, 512)
    assert sd["precls_conv.0.weight"].shape == (decoder,)
    assert sd["precls_conv.2.weight"].shape == (8, decoder, 1, 1, 1)
    assert sd["GAP.0.weight"].shape == (bottleneck,)
    assert sd["GAP.3.weight"].shape == (256, bottleneck, 1, 1, 1)
    assert sd["controller.weight"].shape == (153, 512, 1, 1, 1)
    assert sd["text_to_vision.weight"].shape == (256, 512)
    assert sum(k.startswith("backbone.") for k in sd) == keys - 13
    # The parameter count does not depend on C (organ_embedding is a buffer).
    assert n_params(build_universal_model(backbone, 9)) == params


@pytest.mark.parametrize("name, shape", [("unet", (16, 24, 40)), ("segresnet", (8, 24, 32)), ("mednext", (16, 32, 48))])
@pytest.mark.parametrize("in_ch, out_ch", [(1, 3), (2, 1)])
def test_conv_networks_accept_any_divisible_size_and_channel_counts(name, shape, in_ch, out_ch):
    model = build_network(name, in_ch, out_ch).eval()
    with torch.no_grad():
        y = model(torch.randn(2, in_ch, *shape))
    assert y.shape == (2, out_ch, *shape)
    assert torch.isfinite(y).all()


def test_swin_accepts_non_cubic_multichannel_input():
    model = build_network("swinunetr", 2, 4).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 2, 32, 64, 32))
    assert y.shape == (1, 4, 32, 64, 32)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_non_divisible_input_is_rejected_with_clear_error(name):
    d = NETWORK_DIVISIBILITY[name]
    model = build_network(name, 1, 2).eval()
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 2 * d, 2 * d, 2 * d + d // 2))


def test_divisibility_table_and_unknown_name():
    assert NETWORK_DIVISIBILITY == {"unet": 8, "segresnet": 8, "swinunetr": 32, "mednext": 16}
    with pytest.raises(ValueError, match="unknown network"):
        build_network("resnet", 1, 2)
    with pytest.raises(ValueError):
        build_universal_model("segresnet", 32)
    with pytest.raises(ValueError, match="Universal Model exists only for 'unet' and 'swinunetr'"):
        build_universal_model("mednext", 32)


def test_uses_batch_statistics_flags():
    assert uses_batch_statistics(build_network("unet", 1, 2))
    assert not uses_batch_statistics(build_network("unet", 1, 2, batch_stats_in_eval=False))
    assert uses_batch_statistics(build_universal_model("unet", 4))
    assert not uses_batch_statistics(build_network("segresnet", 1, 2))
    assert not uses_batch_statistics(build_network("mednext", 1, 2))  # GroupNorm
    assert not uses_batch_statistics(nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2)))
    assert uses_batch_statistics(nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2, track_running_stats=False)))


@pytest.mark.parametrize("kwargs, words", [
    ({"init_filters": 0}, "init_filters must be a positive multiple of 8"),
    ({"init_filters": 4}, "init_filters must be a positive multiple of 8"),
    ({"init_filters": 12.0}, "init_filters must be a positive multiple of 8"),
    ({"blocks_down": [1, -1, 2, 4]}, "blocks_down must be block counts >= 0"),
    ({"blocks_down": []}, "blocks_up must have len(blocks_down) - 1 entries"),
    ({"blocks_up": [1, 1]}, "blocks_up must have len(blocks_down) - 1 entries"),
])
def test_segresnet_sizes_it_cannot_run_are_refused_when_built(kwargs, words):
    """MONAI builds these and fails only in the first forward pass (a zero-channel convolution, a channel
    mismatch deep in the decoder); a hand-edited plan should fail when its network is built, saying why."""
    with pytest.raises(ValueError, match=re.escape(words)):
        build_network("segresnet", 1, 2, **kwargs)
    # the smallest sizes the checks allow still run
    net = build_network("segresnet", 1, 2, init_filters=8, blocks_down=[1], blocks_up=[])
    assert net(torch.zeros(1, 1, 8, 8, 8)).shape == (1, 2, 8, 8, 8)
