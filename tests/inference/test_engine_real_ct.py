"""suprem_predict with ``engine="openvino"`` against ``engine="torch"`` on a real CT, for each backbone: labels
at least 99.99 % identical in float32, and the run report says which engine ran and what its conversion cost.

The networks are random except their last 1x1x1 convolution, which is fitted (ridge least squares, one window
of the real CT, well under a second) to say "intensity above t" with a margin: a stand-in for a trained model.
A wholly random network puts a large share of voxels on near-ties (logits near 0 everywhere), where any
last-bit difference flips a label; measured, 99.98-99.99 % agreement then, against 99.998 % and more with the
fitted head, which is the situation of a trained model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("openvino")

from suprem_nn.inference import predict  # noqa: E402
from suprem_nn.inference.predictor import Predictor  # noqa: E402
from suprem_nn.io.image_io import read_image  # noqa: E402
from suprem_nn.networks import build_network  # noqa: E402

from .helpers import tiny_plan  # noqa: E402

CASE = "ts_abdomen_sm_3mm"
# (patch, spacing mm, network options): a few windows per engine on the 366 x 303 x 90 mm case. SegResNet
# with 16 filters (SuPreM's width): 8 give its head too few features to fit.
SETUP = {"unet": (32, 6.0, {}), "segresnet": (32, 6.0, {"init_filters": 16}),
         "swinunetr": (64, 5.0, {"feature_size": 12}),
         "mednext": (32, 6.0, {"init_filters": 16, "blocks_down": (1, 1, 1, 1), "blocks_bottleneck": 1,
                               "blocks_up": (1, 1, 1, 1)})}
DIVISIBILITY = {"swinunetr": 32, "mednext": 16}  # the others: 8
THRESHOLDS = (0.5, 0.8)  # normalised intensity (HU window [-175, 250] -> [0, 1]) each class learns to exceed


def _fit_head(net: nn.Module, plan, ct: Path) -> None:
    """Fit the last 1x1x1 convolution to logits of +-4 for "intensity above THRESHOLDS[c]" on the CT's middle
    window (ridge regression on the features entering it)."""
    image, geometry = read_image(ct)
    data = torch.from_numpy(Predictor(plan, [net]).prepare([image], geometry).data)
    patch = plan.patch_size
    pad = [max(p - s, 0) for p, s in zip(patch, data.shape[1:])]
    data = nn.functional.pad(data, [v for a in (2, 1, 0) for v in (pad[a] // 2, pad[a] - pad[a] // 2)])
    window = data[(slice(None),) + tuple(slice((s - p) // 2, (s - p) // 2 + p)
                                         for s, p in zip(data.shape[1:], patch))][None]
    head = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))
            and m.out_channels == plan.num_outputs][-1]  # MedNeXt's head is a 1x1x1 transposed convolution
    assert head.kernel_size == (1, 1, 1)
    seen = []
    hook = head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.inference_mode():
        net.eval()(window)
    hook.remove()
    feats = seen[0][0].reshape(seen[0].shape[1], -1).T.double()
    a = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], 1)
    y = torch.stack([(window[0, 0] > t).reshape(-1).double() * 8 - 4 for t in THRESHOLDS], 1)
    ridge = 1e-3 * float((a * a).sum()) / len(a)
    sol = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=torch.float64), a.T @ y)
    with torch.no_grad():
        weight = sol[:-1] if isinstance(head, nn.ConvTranspose3d) else sol[:-1].T  # (in, out) vs (out, in)
        head.weight.copy_(weight.reshape(head.weight.shape).float())
        head.bias.copy_(sol[-1].float())


def _model_folder(root: Path, name: str, ct: Path) -> Path:
    patch, spacing, kwargs = SETUP[name]
    plan = tiny_plan(network=name, patch=(patch,) * 3, spacing=(spacing,) * 3,
                     mirror_axes=(0,) if name == "segresnet" else ())  # mirroring once; it is engine-independent
    plan.network_kwargs, plan.divisibility = kwargs, DIVISIBILITY.get(name, 8)
    torch.manual_seed(0)
    net = build_network(name, plan.num_inputs, plan.num_outputs, **kwargs)
    _fit_head(net, plan, ct)
    folder = root / plan.plan_name
    (folder / "fold_0").mkdir(parents=True)
    plan.save(folder / "plans.json")
    torch.save({"network_weights": net.state_dict(), "network": name, "num_inputs": plan.num_inputs,
                "num_outputs": plan.num_outputs, "epoch": 1}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


@pytest.mark.parametrize("name", ["unet", "segresnet", "swinunetr", "mednext"])
def test_real_ct_labels_agree_between_engines(name, real_ct, tmp_path):
    ct = real_ct / CASE / "ct.nii.gz"
    folder = _model_folder(tmp_path / "results", name, ct)
    labels, reports = {}, {}
    for engine in ("torch", "openvino"):
        out = tmp_path / engine / f"{CASE}.nii.gz"
        summary = predict(ct, out, folder, engine=engine, fp32=True, progress=False)
        assert summary.ok, summary.failures
        labels[engine] = read_image(out)[0]
        reports[engine] = json.loads((tmp_path / engine / "run_report.json").read_text())
    foreground = float((labels["torch"] > 0).mean())
    assert 0.02 < foreground < 0.98, f"foreground {foreground:.3f}: the comparison would be nearly vacuous"
    agreement = float((labels["torch"] == labels["openvino"]).mean())
    assert agreement >= 0.9999, f"{name}: {agreement:.6f} of the voxels agree"
    assert reports["torch"]["engine"] == {"name": "torch"}
    ov = reports["openvino"]["engine"]
    assert ov["name"] == "openvino" and ov["precision"] == "f32" and ov["cache"][0]["status"] == "converted"
    assert ov["convert_seconds"] > 0 and ov["cache"][0]["check_max_abs_diff"] <= 1e-3
    assert reports["openvino"]["settings"]["channels_last"] is False
