"""Universal-Model head: output shape, dynamic-head maths and per-class (sigmoid) independence."""

import pytest
import torch
import torch.nn.functional as F

from suprem_nn.networks import build_universal_model


@pytest.fixture(scope="module")
def unet_universal():
    torch.manual_seed(0)
    model = build_universal_model("unet", 5).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        y = model(x)
    return model, x, y


def reference_logits(model, x):
    """Per image and per class: three explicit matrix products with controller-generated parameters."""
    bottleneck, decoder = model.backbone.forward_features(x)
    g = model.GAP(bottleneck).flatten(1)  # (B, 256)
    h = model.precls_conv(decoder)  # (B, 8, X, Y, Z)
    task = F.relu(model.text_to_vision(model.organ_embedding))  # (C, 256)
    out = torch.empty(x.shape[0], model.num_classes, *x.shape[2:])
    for i in range(x.shape[0]):
        feats = h[i].flatten(1)  # (8, V)
        for c in range(model.num_classes):
            p = model.controller(torch.cat([g[i], task[c]])[None, :, None, None, None]).flatten()
            assert p.numel() == 153
            w1, w2, w3 = p[:64].view(8, 8), p[64:128].view(8, 8), p[128:136].view(1, 8)
            b1, b2, b3 = p[136:144], p[144:152], p[152:153]
            z = F.relu(w1 @ feats + b1[:, None])
            z = F.relu(w2 @ z + b2[:, None])
            out[i, c] = (w3 @ z + b3[:, None]).view(x.shape[2:])
    return out


def test_output_shape_and_dynamic_head_maths(unet_universal):
    model, x, y = unet_universal
    assert y.shape == (2, 5, 16, 16, 16)
    with torch.no_grad():
        ref = reference_logits(model, x)
    assert torch.allclose(y, ref, atol=1e-5)


def test_channels_are_independent_binary_logits(unet_universal):
    """Changing class 2's text embedding changes channel 2 only: sigmoid semantics, not softmax."""
    model, x, y = unet_universal
    saved = model.organ_embedding.clone()
    try:
        with torch.no_grad():
            model.organ_embedding[2] = torch.randn(512)
            y2 = model(x)
    finally:
        model.organ_embedding.copy_(saved)
    others = [0, 1, 3, 4]
    assert torch.equal(y2[:, others], y[:, others])
    assert (y2[:, 2] - y[:, 2]).abs().max() > 1e-4
    # Logits are unbounded and unnormalised across channels; probabilities come from a per-channel sigmoid.
    probs = torch.sigmoid(y)
    assert not torch.allclose(probs.sum(1), torch.ones_like(probs[:, 0]), atol=1e-2)


def test_each_image_conditions_its_own_heads(unet_universal):
    model, x, y = unet_universal
    with torch.no_grad():
        # Same image twice in a batch gives the same logits for both (BatchNorm sees the same batch stats).
        twice = model(torch.cat([x[:1], x[:1]]))
    assert torch.allclose(twice[0], twice[1], atol=1e-5)


def test_swin_universal_forward_shape():
    torch.manual_seed(0)
    model = build_universal_model("swinunetr", 3).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 1, 32, 32, 64))
    assert y.shape == (1, 3, 32, 32, 64)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("channels_last", [False, True])
def test_heads_in_voxel_blocks_equal_the_per_class_products(unet_universal, monkeypatch, channels_last):
    """The heads run on blocks of voxels; several blocks, a partial last one and a channels_last feature map
    give the same logits as the per-class matrix products on the whole map."""
    import suprem_nn.networks.universal as universal

    model = unet_universal[0]
    monkeypatch.setattr(universal, "HEAD_VOXEL_BLOCK", 4096)
    torch.manual_seed(1)
    feats = torch.randn(1, 8, 20, 20, 24)  # 9600 voxels: blocks of 4096, 4096 and 1408
    if channels_last:
        feats = feats.contiguous(memory_format=torch.channels_last_3d)
    params = torch.randn(model.num_classes, 153) * 0.3
    with torch.no_grad():
        ours = model._apply_heads(feats[0], params)
    flat = feats[0].reshape(8, -1)
    for c in range(model.num_classes):
        p = params[c]
        z = F.relu(p[:64].view(8, 8) @ flat + p[136:144, None])
        z = F.relu(p[64:128].view(8, 8) @ z + p[144:152, None])
        expected = (p[128:136].view(1, 8) @ z + p[152:153, None]).view(20, 20, 24)
        assert torch.allclose(ours[c], expected, atol=1e-5)


def test_traced_heads_use_the_larger_block(unet_universal, monkeypatch):
    """A trace (OpenVINO's conversion) unrolls every block: it uses HEAD_VOXEL_BLOCK_TRACED, fewer and larger
    blocks, and gives the same logits as the eager network."""
    import suprem_nn.networks.universal as universal

    model = unet_universal[0]
    monkeypatch.setattr(universal, "HEAD_VOXEL_BLOCK", 1024)
    monkeypatch.setattr(universal, "HEAD_VOXEL_BLOCK_TRACED", 2048)
    torch.manual_seed(2)
    feats, params = torch.randn(8, 16, 16, 16), torch.randn(model.num_classes, 153) * 0.3
    with torch.no_grad():
        eager = model._apply_heads(feats, params)
        traced = torch.jit.trace(lambda f, p: model._apply_heads(f, p), (feats, params), check_trace=False)
    addmm_calls = [n for n in traced.graph.nodes() if n.kind() == "aten::addmm"]
    assert len(addmm_calls) == 4096 // 2048
    with torch.no_grad():
        assert torch.allclose(traced(feats, params), eager, atol=1e-5)
