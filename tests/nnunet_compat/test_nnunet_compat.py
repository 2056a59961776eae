"""suprem_predict --nnunet-model against nnUNetv2_predict on the same trained nnU-Net model and real CT.

A tiny nnU-Net v2 model is planned, preprocessed and trained for one epoch of two iterations on CPU inside
the test, with the peer venv's own console scripts (see tests/nnunet_compat/peer.py). The plan is edited
before preprocessing so that the comparison covers nnU-Net's harder geometry paths: a non-identity
transpose_forward and an anisotropic target spacing (separate-z resampling with order 0 on the way in and
out). Skipped with the reason when no nnU-Net peer venv or no dynamic-network-architectures is installed
(failed instead under SUPREM_REQUIRE_OPTIONAL=1, as in CI).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import optional_part_missing, require_optional

from .peer import NnunetRoots, peer_available

REPO = Path(__file__).resolve().parents[2]
PREDICT_CASE = "ts_abdomen_pelvis_3mm"  # unseen in training; 112 slices -> 34 at 10 mm
TRAIN_CASES = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]


def _tiny_plan(plans: dict) -> None:
    """Tiny 3-stage U-Net, transpose (y, z, x), 3 x 10 x 3 mm target (anisotropic: separate z)."""
    plans["transpose_forward"] = [1, 0, 2]
    plans["transpose_backward"] = [1, 0, 2]
    c = plans["configurations"]["3d_fullres"]
    c["spacing"] = [3.0, 10.0, 3.0]
    c["patch_size"] = [32, 8, 32]
    c["batch_size"] = 2
    a = c["architecture"]["arch_kwargs"]
    a.update(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 1, 3], [3, 3, 3], [3, 3, 3]],
             strides=[[1, 1, 1], [2, 1, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, real_ct):
    require_optional("dynamic_network_architectures", "suprem_predict --nnunet-model")
    reason = peer_available()
    if reason:
        optional_part_missing(reason)
    real = real_ct
    roots = NnunetRoots(tmp_path_factory.mktemp("nnunet"))
    roots.make_dataset(951, "TinyRealCT", {c: (real / c / "ct.nii.gz", real / c / "seg_btcv13.nii.gz")
                                           for c in TRAIN_CASES})
    folder = roots.plan_and_train(951, epochs=1, iters=2, val_iters=1, edit_plans=_tiny_plan)
    inp = roots.root / "input"
    inp.mkdir()
    (inp / f"{PREDICT_CASE}_0000.nii.gz").write_bytes((real / PREDICT_CASE / "ct.nii.gz").read_bytes())
    return roots, folder, inp


def _predict_both(roots, folder, inp, out_root: Path, tta: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    import SimpleITK as sitk

    ref_out, our_out = out_root / "nnunet", out_root / "ours"
    r = subprocess.run(roots.predict_cmd(folder, inp, ref_out, disable_tta=not tta,
                                         extra=["-npp", "1", "-nps", "1", "--disable_progress_bar"]),
                       env=roots.env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    cmd = [sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o", str(our_out), "--nnunet-model",
           str(folder), "-f", "all", "--quiet"] + ([] if tta else ["--disable-tta"])
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO),
                                                                            "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    ref = sitk.ReadImage(str(ref_out / f"{PREDICT_CASE}.nii.gz"))
    ours = sitk.ReadImage(str(our_out / f"{PREDICT_CASE}.nii.gz"))
    # Same grid as the input, voxel for voxel.
    assert ours.GetSize() == ref.GetSize()
    np.testing.assert_allclose(ours.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(ours.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), ref.GetDirection(), atol=1e-6)
    report = json.loads((our_out / "run_report.json").read_text())
    return sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(ours), report


@pytest.mark.parametrize("tta", [True], ids=["mirroring"])  # no-mirroring: benchmarks (time budget)
def test_labels_match_nnunet_predict(tiny_model, tmp_path, tta):
    roots, folder, inp = tiny_model
    ref, ours, report = _predict_both(roots, folder, inp, tmp_path, tta)
    agreement = float((ref == ours).mean())
    present = np.unique(ref)
    assert len(present) > 1, "the reference predicts only background; the comparison would be vacuous"
    # nnU-Net's window placement and float16 sums are reproduced: the labels are identical in practice (the
    # issue asks 99.9 %); a handful of voxels may still round differently in the float16 resampling.
    assert agreement >= 0.9999, f"label agreement {agreement:.6f} < 0.9999 (labels {present})"
    assert report["settings"]["mirror_axes"] == ([0, 1, 2] if tta else [])
    assert report["settings"]["patch_size"] == [32, 8, 32]


def test_checkpoint_loads_weights_only(tiny_model):
    """nnU-Net's checkpoint loads with weights_only=True and only the numpy globals we allow."""
    import torch

    from suprem_nn.inference.nnunet_model import NUMPY_SAFE_GLOBALS, load_nnunet_model

    _roots, folder, _inp = tiny_model
    path = folder / "fold_all" / "checkpoint_final.pth"
    with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert "network_weights" in ckpt
    model = load_nnunet_model(folder, ["all"])
    assert model.mirror_axes == (0, 1, 2)
    assert model.labels.num_heads == 14 and model.labels.values == list(range(1, 14))


def test_missing_fold_is_one_clear_error(tiny_model, tmp_path):
    _roots, folder, inp = tiny_model
    r = subprocess.run([sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o", str(tmp_path / "o"),
                        "--nnunet-model", str(folder), "-f", "3"], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and "fold_3/checkpoint_final.pth" in lines[0] and "fold_all" in lines[0], r.stderr


# (file, entry path, value, words of the message): entries a hand-edited or damaged model folder got wrong
MALFORMED = [
    ("plans.json", (), [], "expected a JSON object, found list"),
    ("plans.json", ("configurations",), 3, "'configurations' must map each name to an object"),
    ("plans.json", ("configurations", "3d_fullres", "patch_size"), None, "is not 3D"),
    ("plans.json", ("configurations", "3d_fullres", "architecture", "arch_kwargs", "n_stages"), "x",
     "PlainConvUNet from the plan (AssertionError: n_conv_per_stage must have"),
    ("plans.json", ("configurations", "3d_fullres", "architecture", "arch_kwargs", "features_per_stage", 0), -1,
     "PlainConvUNet from the plan (RuntimeError: Trying to create tensor with negative"),
    ("plans.json", ("transpose_forward",), [0, 0, 1], "transpose_forward must be a permutation of [0, 1, 2]"),
    ("plans.json", ("configurations", "3d_fullres", "spacing", 1), 0, "'spacing' must be 3 positive numbers"),
    ("plans.json", ("configurations", "3d_fullres", "use_mask_for_norm"), [], "'use_mask_for_norm' must list"),
    ("plans.json", ("foreground_intensity_properties_per_channel", "0", "std"), "x",
     "CTNormalization of channel 0 needs foreground_intensity_properties_per_channel['0']"),
    ("plans.json", ("configurations", "3d_fullres", "resampling_fn_data_kwargs", "order"), None,
     "'resampling_fn_data_kwargs' must hold order and order_z 0..5"),
    ("dataset.json", ("labels", "spleen"), [], "'labels' values must be integers"),
    ("dataset.json", ("channel_names",), 5, "has no channel_names"),
]


def _edited(folder: Path, dst: Path, name: str, where: tuple, value) -> Path:
    import shutil

    copy = dst / folder.name
    shutil.copytree(folder, copy)
    content = json.loads((copy / name).read_text())
    if not where:
        content = value
    else:
        node = content
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
    (copy / name).write_text(json.dumps(content))
    return copy


@pytest.mark.parametrize("name, where, value, words", MALFORMED, ids=[f"{m[0]}:{'.'.join(map(str, m[1]))}"
                                                                      for m in MALFORMED])
def test_malformed_model_json_is_one_error_naming_the_file(tiny_model, tmp_path, real_ct, name, where, value, words):
    """Found by mutating each entry of a real model's JSON: each gave a TypeError, IndexError or assert from deep
    inside loading or preprocessing; now the loader refuses the folder up front, naming the file."""
    from suprem_nn.errors import SupremError
    from suprem_nn.inference.nnunet.predictor import NnunetPredictor
    from suprem_nn.io import read_image

    _roots, folder, _inp = tiny_model
    edited = _edited(folder, tmp_path, name, where, value)
    with pytest.raises(SupremError) as err:
        predictor = NnunetPredictor.from_folder(edited, folds=["all"])
        predictor.prepare([read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")[0]],
                          read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")[1])
    message = str(err.value)
    assert words in message and "\n" not in message, message
    assert message.startswith(str(edited)) and (name in message or "plans.json" in message), message


def test_malformed_plan_is_one_line_from_the_command(tiny_model, tmp_path):
    _roots, folder, inp = tiny_model
    edited = _edited(folder, tmp_path, "plans.json", ("configurations", "3d_fullres", "spacing"), "3 mm")
    r = subprocess.run([sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o", str(tmp_path / "o"),
                        "--nnunet-model", str(edited), "-f", "all"], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1
    assert r.stderr.strip() == (f"suprem_predict: error: {edited / 'plans.json'}: configuration 'spacing' must be 3 "
                                "positive numbers (mm), got '3 mm'"), r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
