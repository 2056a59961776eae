"""Equivalence tests of the sliding window: exact identity, exact TTA average, exact constant-window skipping."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from suprem_nn.inference.sliding_window import compute_steps, gaussian_importance_map, sliding_window_predict


def identity_net(channels: int = 1) -> nn.Module:
    conv = nn.Conv3d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(channels):
            conv.weight[c, c] = 1.0
    return conv


class SmallConvNet(nn.Module):
    """A position-dependent (3x3x3, padded) network whose output is NOT mirror-symmetric."""

    def __init__(self, cin=1, cout=3, batch_norm_in_eval=False):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv3d(cin, 4, 3, padding=1)
        self.b = nn.Conv3d(4, cout, 3, padding=1)
        self.bn = nn.BatchNorm3d(4, track_running_stats=not batch_norm_in_eval)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.b(torch.relu(self.bn(self.a(x))))


def test_steps_cover_volume_and_are_symmetric():
    for size, patch, step in [(100, 32, 0.5), (33, 32, 0.5), (77, 16, 0.25), (32, 32, 0.5), (130, 96, 0.25)]:
        s = compute_steps(size, patch, step)
        assert s[0] == 0 and s[-1] == size - patch
        assert all(b - a <= int(np.ceil(step * patch)) for a, b in zip(s, s[1:]))
        assert s == [size - patch - v for v in reversed(s)]
    # nnU-Net's count: ceil((size - patch) / (step * patch)) + 1
    assert len(compute_steps(100, 32, 0.5)) == int(np.ceil(68 / 16)) + 1


def test_gaussian_sigma_is_one_eighth_of_patch():
    g = gaussian_importance_map((32, 16, 24))
    assert g.max() == 1 and g.min() > 0
    line = g[:, 7, 11] / g[:, 7, 11].max()
    # value one sigma (4 voxels) away from the centre 15.5 is exp(-1/2)
    assert float(line[15] / line[11]) == pytest.approx(np.exp(-(0.5 ** 2) / 32) / np.exp(-(4.5 ** 2) / 32), rel=1e-5)
    assert torch.equal(g, torch.flip(g, (0, 1, 2)))


@pytest.mark.parametrize("shape", [(1, 40, 35, 29), (1, 11, 7, 5), (2, 31, 17, 16)])
def test_identity_network_reproduces_the_input(shape):
    torch.manual_seed(1)
    data = torch.randn(shape)
    out = sliding_window_predict(identity_net(shape[0]), data, (16, 16, 16), step_size=0.5, mirror_axes=(0, 2))
    assert out.shape == data.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, data, rtol=1e-6, atol=1e-6)


def test_tta_is_the_exact_average_of_all_flips():
    torch.manual_seed(2)
    net = SmallConvNet().eval()
    data = torch.randn(1, 16, 16, 16)  # one window: the sliding window reduces to the network itself
    got = sliding_window_predict(net, data, (16, 16, 16), mirror_axes=(0, 2))
    with torch.no_grad():
        manual = []
        for dims in [(), (2,), (4,), (2, 4)]:
            x = torch.flip(data[None], dims) if dims else data[None]
            y = net(x)
            manual.append(torch.flip(y, dims) if dims else y)
        expected = torch.stack(manual).mean(0)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    plain = sliding_window_predict(net, data, (16, 16, 16))
    assert not torch.allclose(plain, got, atol=1e-3), "the network must not be mirror-symmetric for this test"


def test_activation_is_applied_to_the_averaged_logits():
    torch.manual_seed(3)
    net = SmallConvNet(cout=3).eval()
    data = torch.randn(1, 20, 18, 16)
    logits = sliding_window_predict(net, data, (16, 16, 16), mirror_axes=(1,))
    torch.testing.assert_close(sliding_window_predict(net, data, (16, 16, 16), mirror_axes=(1,), activation="softmax"),
                               torch.softmax(logits, 0))
    torch.testing.assert_close(sliding_window_predict(net, data, (16, 16, 16), mirror_axes=(1,), activation="sigmoid"),
                               torch.sigmoid(logits))
    kept = sliding_window_predict(net, data, (16, 16, 16), mirror_axes=(1,), keep_channels=[2, 0])
    torch.testing.assert_close(kept, logits[[2, 0]])


def test_skipping_constant_windows_changes_nothing():
    torch.manual_seed(4)
    net = SmallConvNet().eval()
    data = torch.zeros(1, 48, 40, 32)
    data[:, 5:20, 10:30, 3:15] = torch.rand(15, 20, 12)  # body in one corner, air (0) elsewhere
    full = sliding_window_predict(net, data, (16, 16, 16), mirror_axes=(0, 2))
    n_full = len(net.calls)
    net.calls.clear()
    skipped = sliding_window_predict(net, data, (16, 16, 16), mirror_axes=(0, 2), skip_constant_windows=True)
    assert torch.equal(full, skipped)
    assert len(net.calls) < n_full / 2, "constant windows must really be skipped"


def test_batched_windows_match_single_windows():
    torch.manual_seed(5)
    net = SmallConvNet().eval()
    data = torch.randn(1, 40, 30, 20)
    one = sliding_window_predict(net, data, (16, 16, 16), windows_per_batch=1)
    net.calls.clear()
    many = sliding_window_predict(net, data, (16, 16, 16), windows_per_batch=4)
    assert max(net.calls) == 4
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-5)


def test_batch_statistics_networks_run_one_window_at_a_time():
    net = SmallConvNet(batch_norm_in_eval=True)  # BatchNorm without running stats: batch statistics in eval
    data = torch.randn(1, 40, 30, 20)
    sliding_window_predict(net, data, (16, 16, 16), windows_per_batch=8, mirror_axes=(0,))
    assert set(net.calls) == {1}
    assert net.training, "the network's train/eval mode is restored"


def test_flipped_input_gives_flipped_output_for_an_equivariant_network():
    torch.manual_seed(6)
    conv = nn.Conv3d(1, 2, 1)  # pointwise: exactly flip-equivariant
    data = torch.randn(1, 37, 23, 19)
    out = sliding_window_predict(conv, data, (16, 16, 16), step_size=0.5)
    out_f = sliding_window_predict(conv, torch.flip(data, (1, 3)), (16, 16, 16), step_size=0.5)
    torch.testing.assert_close(torch.flip(out_f, (1, 3)), out, rtol=1e-6, atol=1e-6)


def test_rejects_bad_arguments():
    net = identity_net()
    with pytest.raises(ValueError, match="activation"):
        sliding_window_predict(net, torch.zeros(1, 8, 8, 8), (8, 8, 8), activation="relu")
    with pytest.raises(ValueError, match="softmax"):
        sliding_window_predict(net, torch.zeros(1, 8, 8, 8), (8, 8, 8), activation="softmax", keep_channels=[0])
    with pytest.raises(ValueError, match="mirror"):
        sliding_window_predict(net, torch.zeros(1, 8, 8, 8), (8, 8, 8), mirror_axes=(3,))
