"""Predictor on real CT: outputs on the input's exact grid, orientation/flip/dtype invariance, averaging rules.

A pointwise ThresholdNet makes the prediction a deterministic function of voxel intensity, so the
geometric expectations (flip equivariance, LPS == RAS) must hold exactly.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from suprem_nn.inference import Predictor, keep_largest_component, run_prediction, sliding_window_predict
from suprem_nn.io.geometry import Geometry
from suprem_nn.io.image_io import read_image, write_image

from .helpers import ThresholdNet, tiny_plan

CASES = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom", "ts_abdomen_pelvis_3mm"]


def _predictor(**kw):
    plan = kw.pop("plan", None) or tiny_plan(mirror_axes=(0, 1, 2))
    nets = kw.pop("nets", None) or [ThresholdNet()]
    return Predictor(plan, nets, **kw)


def _header(path):
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    return r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection()


@pytest.mark.parametrize("case", CASES)
def test_written_label_map_has_the_input_header_exactly(real_ct, tmp_path, case):
    src = real_ct / case / "ct.nii.gz"
    plan = tiny_plan(spacing=(3.0, 3.0, 3.0))
    summary = run_prediction(_predictor(plan=plan, use_mirroring=False), src, tmp_path / "out", progress=False)
    out = tmp_path / "out" / "ct_seg.nii.gz"  # inputs without _0000 get _seg (cases.py)
    assert summary.ok and summary.cases == ["ct"]
    assert _header(out) == _header(src)
    lab, geo = read_image(out)
    assert lab.dtype == np.uint8
    # the threshold network marks voxels above 37.5 HU as class 1: the prediction must sit where the CT says.
    # On the 3 mm cases the plan's 3 mm grid is the file's grid, so the round trip is exact.
    img, _ = read_image(src)
    expected = (img.astype(np.float32) + 175) / 425 > 0.5
    agree = ((lab > 0) == expected).mean()
    assert agree == 1.0 if geo.spacing == (3.0, 3.0, 3.0) else agree > 0.9, agree


def test_lps_and_ras_files_of_the_same_scan_give_the_same_world_prediction(real_ct, tmp_path):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    # Same scan stored LPS: reverse axes 0 and 1 and move the origin to the other corner.
    d = geo.direction_matrix.copy()
    origin = np.asarray(geo.origin) + d[:, 0] * geo.spacing[0] * (geo.shape[0] - 1) \
        + d[:, 1] * geo.spacing[1] * (geo.shape[1] - 1)
    d[:, 0] *= -1
    d[:, 1] *= -1
    lps_geo = Geometry(geo.shape, geo.spacing, tuple(origin), tuple(d.reshape(-1)))
    assert lps_geo.orientation_code() == "LPS" and geo.orientation_code() == "RAS"
    p = _predictor(use_mirroring=False)
    ras = p.predict_case([img], geo).label_map
    lps = p.predict_case([img[::-1, ::-1].copy()], lps_geo).label_map
    assert ras.any()
    np.testing.assert_array_equal(lps[::-1, ::-1], ras)


def test_flipped_input_gives_flipped_prediction(real_ct):
    img, geo = read_image(real_ct / "ts_upper_abdomen_ce_dicom" / "ct.nii.gz")  # LAS, 0.98 x 0.98 x 2 mm
    p = _predictor(use_mirroring=False)
    a = p.predict_case([img], geo).label_map
    b = p.predict_case([img[:, ::-1, ::-1].copy()], geo).label_map
    assert a.any()
    # Resampling 0.98 mm -> 6 mm -> 0.98 mm sums floats in mirrored order; a voxel whose probability
    # lands within rounding of 0.5 may flip. Allow a handful of the 2.9 million voxels, nothing more.
    assert (b[:, ::-1, ::-1] != a).sum() <= 10
    plan3 = tiny_plan(spacing=(3.0, 3.0, 3.0))
    img3, geo3 = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    p3 = _predictor(plan=plan3, use_mirroring=False)
    np.testing.assert_array_equal(p3.predict_case([img3[::-1, :, ::-1].copy()], geo3).label_map[::-1, :, ::-1],
                                  p3.predict_case([img3], geo3).label_map)


def test_integer_and_float_inputs_give_the_same_prediction(real_ct):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    assert img.dtype == np.int16
    p = _predictor(use_mirroring=False)
    ref = p.predict_case([img], geo).label_map
    for dtype in (np.int32, np.float32, np.float64):
        np.testing.assert_array_equal(p.predict_case([img.astype(dtype)], geo).label_map, ref)


@pytest.mark.parametrize("shape", [(13, 9, 5), (7, 31, 3)])
def test_odd_volumes_smaller_than_the_patch(real_ct, tmp_path, shape):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    sub = img[50:50 + shape[0], 40:40 + shape[1], 10:10 + shape[2]]
    sub_geo = Geometry(shape, (0.7, 1.3, 5.0), geo.origin, geo.direction)  # anisotropic too
    write_image(sub, sub_geo, tmp_path / "small.nii.gz")
    plan = tiny_plan(spacing=(1.5, 1.5, 1.5), patch=(32, 32, 32))
    summary = run_prediction(_predictor(plan=plan), tmp_path / "small.nii.gz", tmp_path / "o.nii.gz", progress=False)
    assert summary.ok
    assert _header(tmp_path / "o.nii.gz") == _header(tmp_path / "small.nii.gz")


def test_fold_average_is_the_mean_of_fold_probabilities(real_ct):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    nets = [ThresholdNet((0.5, 0.8)), ThresholdNet((0.45, 0.9))]
    p = _predictor(nets=nets)
    case = p.prepare([img], geo)
    both = p.network_pass(case)
    data = torch.from_numpy(case.data)
    singles = [sliding_window_predict(n, data, p.plan.patch_size, p.step_size, p.mirror_axes, activation="sigmoid")
               for n in nets]
    torch.testing.assert_close(both, (singles[0] + singles[1]) / 2, rtol=1e-6, atol=1e-7)


def test_multilabel_masks_overlap_and_the_higher_class_wins_in_the_combined_map(real_ct):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    # class 0 (liver): x > 0.5; class 1 (spleen): x > 0.8, a subset of class 0
    res = _predictor(use_mirroring=False).predict_case([img], geo)
    liver, spleen = res.masks[0].astype(bool), res.masks[1].astype(bool)
    assert spleen.any() and (liver & spleen).sum() == spleen.sum()
    assert (res.label_map[spleen] == 2).all()
    assert (res.label_map[liver & ~spleen] == 1).all()
    assert (res.label_map[~liver & ~spleen] == 0).all()


def test_exclusive_plan_gives_argmax_labels(real_ct):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    plan = tiny_plan(multilabel=False, spacing=(3.0, 3.0, 3.0))  # the file's grid: no resampling blur
    # logits: background 0, class 1 40 (x - 0.5), class 2 200 (x - 0.8): class 2 wins above x = 0.875
    net = ThresholdNet((0.5, 0.8), background=True, scales=[40.0, 200.0])
    res = Predictor(plan, [net], use_mirroring=False).predict_case([img], geo)
    assert res.masks is None and res.label_map.dtype == np.uint8
    assert set(np.unique(res.label_map)) == {0, 1, 2}
    x = np.clip((img.astype(np.float32) + 175) / 425, 0, 1)
    expected = np.where(x > 0.875, 2, np.where(x > 0.5, 1, 0))
    assert (res.label_map != expected).sum() <= 10  # only voxels within rounding of a decision boundary


def test_classes_restricts_outputs_and_keeps_label_values(real_ct):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    res = _predictor(use_mirroring=False, classes=["spleen"]).predict_case([img], geo)
    assert res.class_names == ["spleen"] and res.class_values == [2] and res.masks.shape[0] == 1
    assert set(np.unique(res.label_map)) <= {0, 2}
    with pytest.raises(Exception, match="unknown classes"):
        _predictor(classes=["brain"])


def test_largest_component_keeps_one_26_connected_blob():
    m = np.zeros((20, 20, 20), bool)
    m[2:8, 2:8, 2:8] = True
    m[8, 8, 8] = True  # touches the big blob only diagonally: same 26-component
    m[15:17, 15:17, 15:17] = True
    out = keep_largest_component(m)
    assert out.dtype == np.uint8 and out.sum() == 6 ** 3 + 1 and out[15, 15, 15] == 0


def test_models_trained_without_mirroring_predict_without_it(tmp_path):
    """Averaging mirrored passes of a network never trained on mirrored input lowers its Dice (measured on the
    demo model: 0.919 -> 0.837), so a fold's inference_allowed_mirroring_axes limits test-time mirroring."""
    import torch as _torch

    from suprem_nn.model_folder import load_trained_model

    from .helpers import make_model_folder

    plan = tiny_plan(mirror_axes=(0, 1, 2))
    folder = make_model_folder(tmp_path, plan, folds=(0, 1))
    assert load_trained_model(folder, (0, 1)).mirror_axes == [0, 1, 2]  # older checkpoints: the plan's axes
    for fold, axes in (("0", [1, 2]), ("1", [])):
        path = folder / f"fold_{fold}" / "checkpoint_final.pth"
        ck = _torch.load(path, weights_only=True)
        ck["inference_allowed_mirroring_axes"] = axes
        _torch.save(ck, path)
    assert load_trained_model(folder, (0,)).mirror_axes == [1, 2]
    model = load_trained_model(folder, (0, 1))
    assert model.mirror_axes == [] and model.plan.mirror_axes == [0, 1, 2]  # the plan itself is never changed
    assert Predictor.from_model_folder(folder, (0, 1), engine="torch").mirror_axes == ()
    assert Predictor.from_model_folder(folder, (0,), engine="torch").mirror_axes == (1, 2)


def test_abdomenatlas_per_class_files_keep_overlapping_masks(real_ct, tmp_path):
    """AbdomenAtlas inputs always get segmentations/<class>.nii.gz: each must be the class's own mask (overlaps
    included), not its share of the combined map, even without --per-class."""
    import shutil

    atlas = tmp_path / "atlas" / "BDMAP_0001"
    atlas.mkdir(parents=True)
    shutil.copyfile(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz", atlas / "ct.nii.gz")
    # class 0 (liver): x > 0.5; class 1 (spleen): x > 0.8, a subset of liver
    summary = run_prediction(_predictor(use_mirroring=False), tmp_path / "atlas", tmp_path / "out", progress=False)
    assert summary.ok
    seg = tmp_path / "out" / "BDMAP_0001" / "segmentations"
    liver, _ = read_image(seg / "liver.nii.gz")
    spleen, _ = read_image(seg / "spleen.nii.gz")
    combined, _ = read_image(tmp_path / "out" / "BDMAP_0001" / "combined_labels.nii.gz")
    assert spleen.sum() > 0 and (liver.astype(bool) & spleen.astype(bool)).sum() == spleen.sum()
    assert (combined[spleen > 0] == 2).all() and (combined == 1).sum() == liver.sum() - spleen.sum()
