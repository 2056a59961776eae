"""Training-memory estimate used by the planner to choose a batch size."""

import pytest

from suprem_nn.networks import BACKBONES, build_network, estimate_memory_bytes, measure_saved_activation_bytes


@pytest.mark.parametrize("name", ["unet", "segresnet", "mednext"])
def test_estimate_matches_measured_activations_at_another_size(name):
    """Factors were calibrated at 96^3; conv-net activations scale linearly, so 32^3 must agree."""
    model = build_network(name, 1, 32)
    measured = measure_saved_activation_bytes(model, (2, 1, 32, 32, 32))
    params_state = 16 * BACKBONES[name].parameter_count
    estimated_activations = estimate_memory_bytes(name, (32, 32, 32), 2) - params_state
    assert abs(estimated_activations - measured) / measured < 0.05


def test_estimate_scales_with_batch_patch_and_dtype():
    one = estimate_memory_bytes("swinunetr", (96, 96, 96), 1)
    two = estimate_memory_bytes("swinunetr", (96, 96, 96), 2)
    half = estimate_memory_bytes("swinunetr", (96, 96, 96), 2, dtype_bytes=2)
    params_state = 16 * BACKBONES["swinunetr"].parameter_count
    assert two - params_state == 2 * (one - params_state)
    assert half - params_state == (one - params_state)
    assert one - params_state == int(96 ** 3 * BACKBONES["swinunetr"].activation_values_per_voxel * 4)
    assert estimate_memory_bytes("unet", (128, 128, 128), 1) > estimate_memory_bytes("unet", (96, 96, 96), 1)
    with pytest.raises(ValueError, match="unknown network 'vnet'"):
        estimate_memory_bytes("vnet", (96, 96, 96), 1)
    with pytest.raises(ValueError):
        estimate_memory_bytes("unet", (96, 96), 1)
