"""The OpenVINO engine behind the other model sources (``--suprem`` direct inference, ``--nnunet-model``) and the
command line: labels equal the torch engine's; an explicit ``--engine openvino`` that cannot run is one error line.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from suprem_nn.inference import predict  # noqa: E402
from suprem_nn.io.image_io import read_image  # noqa: E402

from .helpers import make_model_folder, make_nnunet_model_folder, tiny_plan  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CASE = "ts_abdomen_sm_3mm"


def _both_engines(tmp_path, inp, **source) -> tuple[dict, dict]:
    """Predict ``inp`` with each engine in float32; label maps by file name, and the run reports."""
    labels, reports = {}, {}
    for engine in ("torch", "openvino"):
        out = tmp_path / engine
        summary = predict(inp, out, engine=engine, fp32=True, progress=False, **source)
        assert summary.ok, summary.failures
        reports[engine] = json.loads((out / "run_report.json").read_text())
        labels[engine] = {p.name: read_image(p)[0] for p in sorted(out.rglob("*.nii.gz"))}
    return labels, reports


def test_suprem_direct_inference(real_ct, tmp_path, monkeypatch):
    """A released-layout Universal Model (U-Net backbone, batch-statistics BN) through --suprem's recipe."""
    from suprem_nn.inference import models
    from tests.fabricated_weights import make_fake_released_checkpoint

    ckpt = make_fake_released_checkpoint("unet", tmp_path / "supervised_suprem_unet_2100.pth")
    original = models.suprem_direct_plan

    def small(backbone):  # the recipe at 12 mm / 32^3 windows, so each engine runs a few windows
        plan = original(backbone)
        plan.target_spacing, plan.patch_size = [12.0] * 3, [32] * 3
        return plan

    monkeypatch.setattr(models, "suprem_direct_plan", small)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / f"{CASE}.nii.gz").write_bytes((real_ct / CASE / "ct.nii.gz").read_bytes())
    labels, reports = _both_engines(tmp_path, inp, checkpoint=ckpt, suprem="unet")
    assert reports["openvino"]["engine"]["name"] == "openvino"
    assert reports["openvino"]["source"].startswith("suprem unet")
    # the recipe keeps the 9 AbdomenAtlas-1.0 organs of the 32 outputs: only those are converted and computed
    plan = models.suprem_direct_plan("unet")
    organs = models.suprem_direct_defaults(plan.pretrained)["classes"]
    assert reports["openvino"]["engine"]["output_channels"] == sorted(plan.class_names.index(c) for c in organs)
    assert len(organs) == 9
    # the Universal Model on SuPreM's U-Net is exported, not traced (no float32 torch pass over a window)
    assert reports["openvino"]["engine"]["cache"][0]["conversion"] == "exported at the window"
    torch_maps, ov_maps = labels["torch"], labels["openvino"]
    assert torch_maps.keys() == ov_maps.keys() and torch_maps
    for name, ref in torch_maps.items():
        assert float((ref == ov_maps[name]).mean()) >= 0.9999, name


def test_nnunet_model(real_ct, tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    folder = make_nnunet_model_folder(tmp_path / "nnunet_results")
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / f"{CASE}_0000.nii.gz").write_bytes((real_ct / CASE / "ct.nii.gz").read_bytes())
    labels, reports = _both_engines(tmp_path, inp, nnunet_model=folder, folds=[0], disable_tta=True)
    assert reports["openvino"]["engine"]["name"] == "openvino"
    # nnU-Net's networks are traced at the window (networks.registry.openvino_conversion)
    assert reports["openvino"]["engine"]["cache"][0]["conversion"] == "traced at the window"
    ref, ours = labels["torch"][f"{CASE}.nii.gz"], labels["openvino"][f"{CASE}.nii.gz"]
    assert len(np.unique(ref)) > 1
    # nnU-Net sums windows in float16 (reproduced), so a last-bit logit difference could flip a near-tie voxel;
    # measured: none do.
    assert float((ref == ours).mean()) >= 0.9999
    # Without --engine an nnU-Net model runs on torch in float32: labels identical to nnUNetv2_predict's.
    summary = predict(inp, tmp_path / "default", nnunet_model=folder, folds=[0], disable_tta=True, progress=False)
    assert summary.ok, summary.failures
    assert json.loads((tmp_path / "default" / "run_report.json").read_text())["engine"] == {"name": "torch"}
    assert np.array_equal(read_image(tmp_path / "default" / f"{CASE}.nii.gz")[0], ref)


def _cli(*args, block_openvino=False, timeout=600):
    code = ("import sys\n"
            + ("sys.modules['openvino'] = None\n" if block_openvino else "")
            + "from suprem_nn.cli.predict import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_cli_engine_missing(real_ct, tmp_path):
    """OpenVINO not installed (its import blocked in a fresh process): explicit --engine openvino is one error
    line and exit 1; the default says so in one line and predicts with torch."""
    folder = make_model_folder(tmp_path / "results", tiny_plan(spacing=(12.0,) * 3, mirror_axes=()))
    ct = real_ct / CASE / "ct.nii.gz"
    r = _cli("-i", ct, "-o", tmp_path / "explicit.nii.gz", "-m", folder, "--engine", "openvino", "--quiet",
             block_openvino=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("suprem_predict: error: --engine openvino: OpenVINO is not "
                                                   "installed"), r.stderr
    assert not (tmp_path / "explicit.nii.gz").exists()
    r = _cli("-i", ct, "-o", tmp_path / "default.nii.gz", "-m", folder, "--quiet", block_openvino=True)
    assert r.returncode == 0, r.stderr
    warned = [l for l in r.stderr.splitlines() if "OpenVINO" in l]
    assert len(warned) == 1 and "not installed" in warned[0] and "using the torch engine instead" in warned[0]
    report = json.loads((tmp_path / "run_report.json").read_text())
    assert report["engine"]["name"] == "torch" and report["engine"]["fallback_from"] == "openvino"
    assert (tmp_path / "default.nii.gz").is_file()


def test_cli_says_when_it_converts(real_ct, tmp_path, monkeypatch):
    """A first run says, before its pause, that it converts the network and where it stores it, then how long
    it took, how (in a helper process) and how close to torch it came; a later run loads the stored model and
    says nothing of it."""
    cache = tmp_path / "engine cache"
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(cache))
    folder = make_model_folder(tmp_path / "results", tiny_plan(spacing=(12.0,) * 3, mirror_axes=()))
    ct = real_ct / CASE / "ct.nii.gz"
    first = _cli("-i", ct, "-o", tmp_path / "first.nii.gz", "-m", folder, "--engine", "openvino")
    assert first.returncode == 0, first.stderr
    said = [l for l in first.stderr.splitlines() if "OpenVINO: convert" in l]
    assert len(said) == 2, first.stderr
    precision = json.loads((tmp_path / "run_report.json").read_text())["engine"]["precision"]  # f32 or bf16
    assert f"converting the network for 32x32x32 windows in {precision}" in said[0] and str(cache) in said[0]
    assert "converted in" in said[1] and "exported at the window, in a separate process;" in said[1]
    assert "of torch's" in said[1]
    second = _cli("-i", ct, "-o", tmp_path / "second.nii.gz", "-m", folder, "--engine", "openvino")
    assert second.returncode == 0, second.stderr
    assert "OpenVINO: convert" not in second.stderr
    assert json.loads((tmp_path / "run_report.json").read_text())["engine"]["cache"][0]["status"] == "hit"
