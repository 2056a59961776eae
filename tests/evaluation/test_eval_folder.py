"""evaluate_folder on real CT label maps: perturbed organs, layouts, summary files, errors."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import BTCV13, make_abdomenatlas_dataset
from suprem_nn.errors import SupremError
from suprem_nn.evaluation.api import evaluate
from suprem_nn.evaluation.evaluate import evaluate_folder, parse_label_spec
from suprem_nn.io.geometry import Geometry
from suprem_nn.io.image_io import read_image, write_image

LIVER, SPLEEN = BTCV13.index("liver") + 1, BTCV13.index("spleen") + 1
LABELS = {n: i + 1 for i, n in enumerate(BTCV13)}


def _folders(tmp_path: Path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    return ref, pred


def _shift(mask, axis):
    """Move a mask one voxel up ``axis`` without wrapping round (what leaves the array is lost)."""
    out = np.zeros_like(mask)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis], dst[axis] = slice(0, -1), slice(1, None)
    out[tuple(dst)] = mask[tuple(src)]
    return out


def _load(real_ct, case):
    return read_image(real_ct / case / "seg_btcv13.nii.gz")


def test_eroded_organ_scores_below_one_untouched_organs_exactly_one(real_ct, tmp_path):
    ref_dir, pred_dir = _folders(tmp_path)
    lab, geo = _load(real_ct, "ts_abdomen_sm_3mm")   # 3 mm isotropic
    write_image(lab, geo, ref_dir / "sm.nii.gz")
    pred = lab.copy()
    liver = lab == LIVER
    eroded = ndimage.binary_erosion(liver)
    pred[liver & ~eroded] = 0
    write_image(pred, geo, pred_dir / "sm.nii.gz")

    s = evaluate_folder(ref_dir, pred_dir, LABELS, nsd_tolerance_mm=1.0)
    res = s["cases"]["sm"]["classes"]
    n_liver, n_eroded = int(liver.sum()), int(eroded.sum())
    assert res["liver"]["dice"] == pytest.approx(2 * n_eroded / (n_liver + n_eroded))
    assert res["liver"]["iou"] == pytest.approx(n_eroded / n_liver)
    assert res["liver"]["dice"] < 0.95
    # the eroded surface is one 3 mm voxel inside: no surface voxel coincides, none is within 1 mm
    assert res["liver"]["nsd"] == 0.0
    for organ in ("spleen", "kidney_right", "kidney_left", "stomach", "aorta", "pancreas"):
        assert res[organ]["dice"] == 1.0 and res[organ]["iou"] == 1.0 and res[organ]["nsd"] == 1.0
    assert math.isnan(res["esophagus"]["dice"])          # absent from both: excluded, counted
    assert s["mean"]["esophagus"]["n_excluded_both_empty"] == 1 and s["mean"]["esophagus"]["n_cases"] == 0
    assert s["mean"]["esophagus"]["dice"] != s["mean"]["esophagus"]["dice"]  # NaN in memory
    # a wider tolerance forgives part of the 3 mm erosion
    wide = evaluate_folder(ref_dir, pred_dir, LABELS, nsd_tolerance_mm=3.0)["cases"]["sm"]["classes"]["liver"]
    assert 0.5 < wide["nsd"] <= 1.0


def test_shift_on_fine_axis_within_tolerance_on_coarse_axis_beyond(real_ct, tmp_path):
    lab, geo = _load(real_ct, "ts_upper_abdomen_ce_dicom")   # 0.977 x 0.977 x 2 mm
    assert geo.spacing[0] < 1.0 < geo.spacing[2]
    ref_dir, pred_dir = _folders(tmp_path)
    write_image(lab, geo, ref_dir / "ce.nii.gz")
    liver = lab == LIVER
    results = {}
    for axis in (0, 2):
        pred = lab.copy()
        pred[liver] = 0
        pred[_shift(liver, axis)] = LIVER
        write_image(pred, geo, pred_dir / "ce.nii.gz")
        for tol in (1.0, 2.0):
            s = evaluate_folder(ref_dir, pred_dir, {"liver": LIVER}, nsd_tolerance_mm=tol)
            results[axis, tol] = s["cases"]["ce"]["classes"]["liver"]
    assert results[0, 1.0]["dice"] < 1.0 and results[2, 1.0]["dice"] < 1.0
    assert results[0, 1.0]["nsd"] == 1.0        # every surface voxel has its shifted twin 0.977 mm away
    assert 0.5 < results[2, 1.0]["nsd"] < 0.95  # 2 mm away: only side walls still coincide
    assert results[2, 1.0]["nsd"] < results[2, 2.0]["nsd"]


def test_summary_json_and_csv_contents(real_ct, tmp_path):
    ref_dir, pred_dir = _folders(tmp_path)
    out = tmp_path / "out"
    for case in ("ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"):
        lab, geo = _load(real_ct, case)
        write_image(lab, geo, ref_dir / f"{case}.nii.gz")
        pred = lab.copy()
        pred[pred == SPLEEN] = 0                      # spleen missed in every case
        write_image(pred, geo, pred_dir / f"{case}.nii.gz")
    s = evaluate(ref_dir, pred_dir, labels="spleen=1,liver=6,kidney_left=3", nsd_tolerance_mm=2.0, output_dir=out)
    data = json.loads((out / "summary.json").read_text())
    assert not (pred_dir / "summary.json").exists()
    assert data["tool"] == "suprem_nn" and data["version"] and data["num_cases"] == 2
    assert data["settings"]["nsd_tolerance_mm"] == 2.0
    assert data["settings"]["labels"] == {"spleen": 1, "liver": 6, "kidney_left": 3}
    assert data["mean"]["spleen"] == {"label": 1, "prediction_label": 1, "dice": 0.0, "iou": 0.0, "nsd": 0.0,
                                      "nsd_1voxel": 0.0, "n_cases": 2, "n_excluded_both_empty": 0,
                                      "absent_everywhere": False}
    assert data["mean"]["liver"]["dice"] == 1.0
    # kidneys are not in the contrast-enhanced slab: one case is both-empty, stored as null and excluded
    kl = data["cases"]["ts_upper_abdomen_ce_dicom"]["classes"]["kidney_left"]
    assert kl["dice"] is None and kl["nsd"] is None and kl["n_ref"] == 0
    assert data["mean"]["kidney_left"]["n_cases"] == 1 and data["mean"]["kidney_left"]["n_excluded_both_empty"] == 1
    assert data["foreground_mean"]["dice"] == pytest.approx((0.0 + 1.0 + 1.0) / 3)
    assert data["missing_predictions"] == [] and data["missing_references"] == []
    assert s["foreground_mean"]["dice"] == pytest.approx(data["foreground_mean"]["dice"])
    sm = data["cases"]["ts_abdomen_sm_3mm"]["classes"]["spleen"]
    assert sm["n_ref"] == 9452 and sm["n_pred"] == 0 and sm["reference_ml"] == pytest.approx(9452 * 27 / 1000)

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 * 3
    by_key = {(r["case"], r["class"]): r for r in rows}
    assert by_key[("ts_abdomen_sm_3mm", "spleen")]["dice"] == "0.000000"
    assert by_key[("ts_abdomen_sm_3mm", "liver")]["dice"] == "1.000000"
    assert by_key[("ts_upper_abdomen_ce_dicom", "kidney_left")]["dice"] == ""
    assert by_key[("ts_abdomen_sm_3mm", "spleen")]["reference_voxels"] == "9452"
    assert not list(out.glob(".tmp-*"))


def test_numeric_labels_found_in_data_and_dataset_json_next_to_reference(real_ct, tmp_path):
    ref_dir, pred_dir = _folders(tmp_path)
    for case in ("ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"):
        shutil.copyfile(real_ct / case / "seg_btcv13.nii.gz", ref_dir / f"{case}.nii.gz")
        shutil.copyfile(real_ct / case / "seg_btcv13.nii.gz", pred_dir / f"{case}.nii.gz")
    s = evaluate_folder(ref_dir, pred_dir)
    assert list(s["mean"]) == [str(v) for v in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13)]
    assert s["mean"]["2"]["n_cases"] == 1 and s["mean"]["2"]["n_excluded_both_empty"] == 1
    assert s["mean"]["6"]["n_cases"] == 2 and s["mean"]["6"]["dice"] == 1.0
    assert s["settings"]["label_source"] == "label values found in the data"

    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 6, "organs": [1, 6]}}))
    s = evaluate_folder(ref_dir, pred_dir)
    assert list(s["mean"]) == ["liver", "organs"]
    assert s["settings"]["label_source"] == str(tmp_path / "dataset.json")
    assert s["cases"]["ts_abdomen_sm_3mm"]["classes"]["organs"]["n_ref"] == 38634 + 9452


def test_missing_cases_on_either_side_are_reported(real_ct, tmp_path):
    ref_dir, pred_dir = _folders(tmp_path)
    src = real_ct / "ts_abdomen_sm_3mm" / "seg_btcv13.nii.gz"
    for name in ("a", "b"):
        shutil.copyfile(src, ref_dir / f"{name}.nii.gz")
    for name in ("a", "c"):
        shutil.copyfile(src, pred_dir / f"{name}.nii.gz")
    (pred_dir / "a.npz").write_bytes(b"not an image, ignored")
    s = evaluate_folder(ref_dir, pred_dir, {"liver": LIVER})
    assert s["num_cases"] == 1 and list(s["cases"]) == ["a"]
    assert s["missing_predictions"] == ["b"] and s["missing_references"] == ["c"]
    data = json.loads((pred_dir / "summary.json").read_text())
    assert data["missing_predictions"] == ["b"] and data["missing_references"] == ["c"]

    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(src, other / "zzz.nii.gz")
    with pytest.raises(SupremError, match="no case in common"):
        evaluate_folder(ref_dir, other, {"liver": LIVER})


def test_geometry_mismatch_names_both_files(real_ct, tmp_path):
    ref_dir, pred_dir = _folders(tmp_path)
    lab, geo = _load(real_ct, "ts_abdomen_sm_3mm")
    write_image(lab, geo, ref_dir / "sm.nii.gz")
    shifted = Geometry(geo.shape, (3.0, 3.0, 2.5), geo.origin, geo.direction)
    write_image(lab, shifted, pred_dir / "sm.nii.gz")
    with pytest.raises(SupremError) as exc:
        evaluate_folder(ref_dir, pred_dir, {"liver": LIVER})
    msg = str(exc.value)
    assert str(pred_dir / "sm.nii.gz") in msg and str(ref_dir / "sm.nii.gz") in msg
    assert "spacing [3.0, 3.0, 2.5] vs [3.0, 3.0, 3.0]" in msg


def test_probability_map_prediction_is_rejected_naming_the_file(real_ct, tmp_path):
    ref_dir, pred_dir = _folders(tmp_path)
    lab, geo = _load(real_ct, "ts_abdomen_sm_3mm")
    write_image(lab, geo, ref_dir / "sm.nii.gz")
    write_image((lab > 0).astype(np.float32) * 0.7, geo, pred_dir / "sm.nii.gz")
    with pytest.raises(SupremError, match="non-integer values") as exc:
        evaluate_folder(ref_dir, pred_dir, {"liver": LIVER})
    assert str(pred_dir / "sm.nii.gz") in str(exc.value)


def test_abdomenatlas_masks_against_label_maps_and_against_masks(real_ct, tmp_path):
    organs = ["spleen", "liver", "pancreas"]
    atlas = make_abdomenatlas_dataset(tmp_path, "Atlas", cases=["ts_abdomen_sm_3mm"], organs=organs)
    case = "BDMAP_00000001"
    maps = tmp_path / "maps"
    maps.mkdir()
    lab, geo = _load(real_ct, "ts_abdomen_sm_3mm")
    pred = lab.copy()
    liver = lab == LIVER
    pred[liver & ~ndimage.binary_erosion(liver)] = 0
    write_image(pred, geo, maps / f"{case}.nii.gz")
    labels = {o: LABELS[o] for o in organs}

    mixed = evaluate_folder(atlas, maps, labels, output_dir=tmp_path / "o1")["cases"][case]["classes"]
    both_maps_dir = tmp_path / "refmaps"
    both_maps_dir.mkdir()
    write_image(lab, geo, both_maps_dir / f"{case}.nii.gz")
    fast = evaluate_folder(both_maps_dir, maps, labels, output_dir=tmp_path / "o2")["cases"][case]["classes"]
    for o in organs:   # the per-class mask path and the joint-histogram path agree exactly
        for key in ("dice", "iou", "nsd", "tp", "n_ref", "n_pred"):
            assert mixed[o][key] == pytest.approx(fast[o][key]), (o, key)
    assert mixed["spleen"]["dice"] == 1.0 and mixed["liver"]["dice"] < 0.95

    # masks vs masks: class names come from the reference mask files (hepatic_vessel included)
    pred_atlas = tmp_path / "PredAtlas"
    shutil.copytree(atlas, pred_atlas)
    m = pred_atlas / case / "segmentations" / "liver.nii.gz"
    liver_mask, mgeo = read_image(m)
    write_image(ndimage.binary_erosion(liver_mask).astype(np.uint8), mgeo, m)
    (pred_atlas / case / "segmentations" / "pancreas.nii.gz").unlink()   # missing file = empty mask
    s = evaluate_folder(atlas, pred_atlas)
    res = s["cases"][case]["classes"]
    assert sorted(res) == sorted(organs + ["hepatic_vessel"])
    assert res["liver"]["dice"] == pytest.approx(mixed["liver"]["dice"])
    assert res["hepatic_vessel"]["dice"] == 1.0 and res["spleen"]["nsd"] == 1.0
    assert res["pancreas"]["dice"] == 0.0 and res["pancreas"]["n_pred"] == 0
    assert s["cases"][case]["missing_mask_files"] == {"prediction": ["pancreas"]}

    # label maps on the other side need names mapped to values
    with pytest.raises(SupremError, match="pass -l"):
        evaluate_folder(atlas, maps)


def test_combined_labels_layout_and_parallel_processes(real_ct, tmp_path):
    ref_dir, pred_dir = _folders(tmp_path)
    for case in ("ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm"):
        (pred_dir / case).mkdir()
        shutil.copyfile(real_ct / case / "seg_btcv13.nii.gz", ref_dir / f"{case}.nii.gz")
        shutil.copyfile(real_ct / case / "seg_btcv13.nii.gz", pred_dir / case / "combined_labels.nii.gz")
    s = evaluate_folder(ref_dir, pred_dir, {"liver": LIVER, "spleen": SPLEEN}, num_processes=2)
    assert s["num_cases"] == 2
    assert s["mean"]["liver"]["dice"] == 1.0 and s["mean"]["spleen"]["nsd"] == 1.0
    assert s["cases"]["ts_abdomen_pelvis_3mm"]["prediction"].endswith("combined_labels.nii.gz")


def test_label_specs(real_ct, tmp_path):
    assert parse_label_spec("liver=6, spleen=1")[0] == {"liver": 6, "spleen": 1}
    assert parse_label_spec("1,2")[0] == {"1": 1, "2": 2}
    assert parse_label_spec("kidneys=2+3")[0] == {"kidneys": [2, 3]}
    btcv, _ = parse_label_spec(str(real_ct / "labels_btcv13.json"))   # {"1": "spleen", ...} direction
    assert btcv == LABELS
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"class_names": ["liver", "spleen"], "label_values": [6, 1]}))
    assert parse_label_spec(str(plans))[0] == {"liver": 6, "spleen": 1}
    with pytest.raises(SupremError, match="bad label item 'liver=x'"):
        parse_label_spec("liver=x")
    with pytest.raises(SupremError, match="0 is background"):
        parse_label_spec("bg=0")
    with pytest.raises(SupremError, match="given twice"):
        parse_label_spec("a=1,a=2")
    missing = tmp_path / "nope.json"
    with pytest.raises(SupremError, match="label file not found") as exc:
        parse_label_spec(str(missing))
    assert str(missing) in str(exc.value)
    bad = tmp_path / "dataset.json"
    bad.write_text("{not json")
    with pytest.raises(SupremError, match="not valid JSON"):
        parse_label_spec(str(bad))


def test_mask_folders_measure_anisotropic_spacing_per_axis(real_ct, tmp_path):
    # AbdomenAtlas masks on the 0.977 x 0.977 x 2 mm case: the per-class path must use each axis' spacing
    atlas = make_abdomenatlas_dataset(tmp_path, "Atlas", cases=["ts_upper_abdomen_ce_dicom"], organs=["liver"],
                                      add_overlap=False)
    case = "BDMAP_00000001"
    mask_path = atlas / case / "segmentations" / "liver.nii.gz"
    liver, geo = read_image(mask_path)
    nsd = {}
    for axis in (0, 2):
        pred = tmp_path / f"pred{axis}" / case / "segmentations"
        pred.mkdir(parents=True)
        write_image(_shift(liver > 0, axis).astype(np.uint8), geo, pred / "liver.nii.gz")
        nsd[axis] = evaluate_folder(atlas, pred.parents[1], output_dir=tmp_path)["cases"][case]["classes"]["liver"]["nsd"]
    assert nsd[0] == 1.0 and 0.5 < nsd[2] < 0.95
