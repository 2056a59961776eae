"""The Swin UNETR must reproduce the MONAI <= 1.4 (v0.9) patch-merging slice order of the SuPreM release."""

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from packaging.version import Version
import monai
from torch import nn

from suprem_nn.networks import PatchMergingV09, build_network


def merge_v09_reference(x: torch.Tensor) -> torch.Tensor:
    """MONAI 0.9 PatchMerging gather, written out slice by slice (channels-last (B, X, Y, Z, C))."""
    _, d, h, w, _ = x.shape
    x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
    x0 = x[:, 0::2, 0::2, 0::2, :]
    x1 = x[:, 1::2, 0::2, 0::2, :]
    x2 = x[:, 0::2, 1::2, 0::2, :]
    x3 = x[:, 0::2, 0::2, 1::2, :]
    x4 = x[:, 1::2, 0::2, 1::2, :]
    x5 = x[:, 0::2, 1::2, 0::2, :]
    x6 = x[:, 0::2, 0::2, 1::2, :]
    x7 = x[:, 1::2, 1::2, 1::2, :]
    return torch.cat([x0, x1, x2, x3, x4, x5, x6, x7], -1)


class ReferenceMergingV09(nn.Module):
    """Test-side merging module: same parameters as MONAI's, gather from merge_v09_reference."""

    def __init__(self, dim, norm_layer=nn.LayerNorm, spatial_dims=3):
        super().__init__()
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(8 * dim)

    def forward(self, x):
        return self.reduction(self.norm(merge_v09_reference(x)))


@pytest.mark.parametrize("shape", [(2, 4, 6, 8, 5), (1, 3, 5, 7, 4)])
def test_patch_merging_module_matches_reference_gather(shape):
    torch.manual_seed(0)
    ours = PatchMergingV09(dim=shape[-1])
    ref = ReferenceMergingV09(dim=shape[-1])
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(*shape)
    assert torch.equal(ours(x), ref(x))


def _copy_weights(src: nn.Module, dst: nn.Module) -> None:
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=True)
    assert not missing and not unexpected


@pytest.fixture(scope="module")
def swin_pair():
    torch.manual_seed(1)
    ours = build_network("swinunetr", 1, 3).eval()
    x = torch.randn(1, 1, 32, 32, 64)
    with torch.no_grad():
        y = ours(x)
    return ours, x, y


def test_full_network_equals_v09_slice_order(swin_pair):
    ours, x, y = swin_pair
    ref = SwinUNETR(in_channels=1, out_channels=3, feature_size=48, downsample=ReferenceMergingV09).eval()
    _copy_weights(ours, ref)
    with torch.no_grad():
        assert torch.equal(ref(x), y)


def test_monai_default_merging_gives_different_output(swin_pair):
    """MONAI >= 1.5 (setup.py's floor) changed the slice order; our class keeps the one SuPreM was trained with."""
    assert Version(monai.__version__) >= Version("1.5"), "setup.py requires monai>=1.5"
    ours, x, y = swin_pair
    default = SwinUNETR(in_channels=1, out_channels=3, feature_size=48).eval()
    _copy_weights(ours, default)  # same keys and shapes: the change is silent
    with torch.no_grad():
        diff = (default(x) - y).abs().max().item()
    assert diff > 1e-3
