"""U-Net BatchNorm semantics: batch statistics in eval by default (as the SuPreM weights were run)."""

import copy

import pytest
import torch
from torch import nn

from suprem_nn.networks import BatchStatsBatchNorm3d, build_network


@pytest.fixture(scope="module")
def unet_and_inputs():
    torch.manual_seed(0)
    model = build_network("unet", 1, 2)
    # Non-trivial running statistics, so "running stats" and "batch stats" differ visibly.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BatchStatsBatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    a, b, c = (torch.randn(1, 1, 16, 16, 16) * s for s in (1.0, 3.0, 0.2))
    return model, a, b, c


def test_eval_output_depends_on_batch_composition(unet_and_inputs):
    model, a, b, c = unet_and_inputs
    model.eval()
    with torch.no_grad():
        alone = model(a)[0]
        with_b = model(torch.cat([a, b]))[0]
        with_c = model(torch.cat([a, c]))[0]
    assert (alone - with_b).abs().max() > 1e-3
    assert (with_b - with_c).abs().max() > 1e-3


def test_eval_equals_train_mode_normalisation_and_keeps_buffers(unet_and_inputs):
    model, a, b, _ = unet_and_inputs
    x = torch.cat([a, b])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y_eval = model.eval()(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"eval forward changed {k}"
    train_copy = copy.deepcopy(model).train()
    with torch.no_grad():
        y_train = train_copy(x)
    assert torch.allclose(y_eval, y_train, atol=1e-5)
    # Train mode updates the running statistics, as a normal BatchNorm does.
    assert not torch.equal(train_copy.down_tr64.ops[0].bn1.running_mean, before["down_tr64.ops.0.bn1.running_mean"])


def test_flag_off_uses_running_statistics(unet_and_inputs):
    model, a, b, _ = unet_and_inputs
    off = copy.deepcopy(model)
    off.set_batch_stats_in_eval(False)
    assert not off.batch_stats_in_eval
    # Reference: the same network with stock nn.BatchNorm3d layers carrying the same buffers.
    ref = copy.deepcopy(off)
    for parent in ref.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, BatchStatsBatchNorm3d):
                bn = nn.BatchNorm3d(child.num_features)
                bn.load_state_dict(child.state_dict())
                setattr(parent, name, bn)
    off.eval()
    ref.eval()
    with torch.no_grad():
        alone = off(a)[0]
        with_b = off(torch.cat([a, b]))[0]
        assert torch.allclose(alone, with_b, atol=1e-5)
        assert torch.allclose(alone, ref(a)[0], atol=1e-5)
        assert (alone - model.eval()(a)[0]).abs().max() > 1e-3


def test_constructor_flag():
    off = build_network("unet", 1, 2, batch_stats_in_eval=False)
    assert all(not m.batch_stats_in_eval for m in off.modules() if isinstance(m, BatchStatsBatchNorm3d))
    on = build_network("unet", 1, 2)
    assert on.batch_stats_in_eval
    assert sum(isinstance(m, BatchStatsBatchNorm3d) for m in on.modules()) == 14
