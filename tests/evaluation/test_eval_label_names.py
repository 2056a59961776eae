"""suprem_evaluate protects the user: classes matched by name across different label maps, contradictions
caught, absent labels flagged, single files, NSD at one voxel. Real CT label maps of ../shared: the btcv13 and
the TotalSegmentator v2 maps of the same case hold the same organs under different values."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from tests.conftest import BTCV13
from tests.evaluation.test_eval_cli import run_cli
from suprem_nn.errors import SupremError
from suprem_nn.evaluation.api import evaluate
from suprem_nn.io.image_io import read_image, write_image

CE = "ts_upper_abdomen_ce_dicom"   # 0.977 x 0.977 x 2 mm, no kidneys in the slab
SM = "ts_abdomen_sm_3mm"
# organs present in the contrast-enhanced slab (README of ../shared/data/real_ct)
CE_ORGANS = ["spleen", "liver", "stomach", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein",
             "pancreas", "adrenal_gland_right"]


def _case_folders(real_ct, tmp_path, case=CE, ref_file="seg_btcv13.nii.gz", pred_file="seg_total117.nii.gz"):
    """DatasetX/labelsTs/<case> (reference) and DatasetX/predictions/<case> (prediction), no label files yet."""
    root = tmp_path / "Dataset1_X"
    ref, pred = root / "labelsTs", root / "predictions"
    ref.mkdir(parents=True)
    pred.mkdir()
    shutil.copyfile(real_ct / case / ref_file, ref / f"{case}.nii.gz")
    shutil.copyfile(real_ct / case / pred_file, pred / f"{case}.nii.gz")
    return root, ref, pred


def _totalseg_labels(real_ct) -> dict:
    raw = json.loads((real_ct / "totalseg_v2_total_classes.json").read_text())["labels"]
    return {name: int(v) for v, name in raw.items() if int(v) > 0}


def test_different_label_maps_scored_by_name_from_the_label_files_found_beside_each_side(real_ct, tmp_path):
    root, ref, pred = _case_folders(real_ct, tmp_path)
    # a dataset.json in the reference folder (btcv13: liver=6), the prediction run's report (TotalSegmentator: liver=5)
    (ref / "dataset.json").write_text(json.dumps({"labels": {"background": 0, **{n: i + 1 for i, n in
                                                                                  enumerate(BTCV13)}}}))
    (pred / "run_report.json").write_text(json.dumps({"labels": _totalseg_labels(real_ct)}))
    s = evaluate(ref, pred)
    assert s["settings"]["classes_matched_by"] == "name"
    assert s["settings"]["label_source"] == str(ref / "dataset.json")
    assert s["settings"]["prediction_label_source"] == str(pred / "run_report.json")
    assert s["settings"]["labels"]["liver"] == 6 and s["settings"]["prediction_labels"]["liver"] == 5
    assert list(s["mean"]) == BTCV13   # every reference class, in the reference's order
    res = s["cases"][CE]["classes"]
    for organ in CE_ORGANS:   # the btcv13 map was derived from the TotalSegmentator one: identical voxels
        assert res[organ]["dice"] == 1.0 and res[organ]["nsd"] == 1.0 and res[organ]["n_ref"] > 0, organ
    assert res["liver"]["n_ref"] == 366708 and res["liver"]["label"] == 6 and res["liver"]["prediction_label"] == 5
    # TotalSegmentator's other 104 classes (lungs, vertebrae...) are listed, not scored
    assert "vertebrae_T12" in s["settings"]["classes_not_evaluated"]["prediction_only"]
    assert s["settings"]["classes_not_evaluated"]["reference_only"] == []
    assert s["undeclared_values"] == {}

    # the same files compared by value (no label file on the prediction side) score liver against stomach
    # (TotalSegmentator 6): the comparison is flagged twice, assumed labels and values its labels do not name
    (pred / "run_report.json").unlink()
    blind = evaluate(ref, pred, output_dir=tmp_path / "blind")
    assert blind["cases"][CE]["classes"]["liver"]["dice"] == 0.0
    assert blind["settings"]["classes_matched_by"].startswith("value")
    assert "assumed equal to the reference labels" in blind["settings"]["prediction_label_source"]
    assert 52 in blind["undeclared_values"]["prediction"]   # aorta in TotalSegmentator: no btcv13 class is 52
    assert any("the prediction names no classes" in w for w in blind["warnings"])
    assert any(w.startswith("the prediction holds label values 20, 32, 33, 52, ") for w in blind["warnings"])


def test_side_specific_label_options_cli_and_the_demo_mistake(real_ct, tmp_path):
    """The issue's case: a prediction whose label 1 is liver against a reference whose label 1 is spleen."""
    root, ref, pred = _case_folders(real_ct, tmp_path, case=SM, pred_file="seg_btcv13.nii.gz")
    lab, geo = read_image(pred / f"{SM}.nii.gz")
    demo = np.zeros_like(lab)   # the demo model's numbering: liver=1, spleen=2
    demo[lab == BTCV13.index("liver") + 1] = 1
    demo[lab == BTCV13.index("spleen") + 1] = 2
    write_image(demo, geo, pred / f"{SM}.nii.gz")
    out = tmp_path / "eval"
    r = run_cli("-ref", str(ref), "-pred", str(pred), "--ref-labels", str(real_ct / "labels_btcv13.json"),
                "--pred-labels", "liver=1,spleen=2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "summary.json").read_text())
    assert list(data["mean"]) == ["spleen", "liver"]
    assert data["mean"]["liver"]["dice"] == 1.0 and data["mean"]["spleen"]["dice"] == 1.0
    assert data["mean"]["liver"]["label"] == 6 and data["mean"]["liver"]["prediction_label"] == 1
    # btcv13 classes the prediction does not name are listed and warned about, not scored as misses
    assert "kidney_left" in data["settings"]["classes_not_evaluated"]["reference_only"]
    assert "reference classes with no prediction class of that name are not evaluated: kidney_right, " in r.stderr
    rows = {row["class"]: row for row in csv.DictReader((out / "metrics.csv").open())}
    assert rows["liver"]["label"] == "6" and rows["liver"]["prediction_label"] == "1" and rows["liver"]["dice"] == "1.000000"

    # -l with both side options is refused in one line
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "liver=1", "--pred-labels", "liver=1")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "-l gives the labels of both" in r.stderr


def test_l_contradicting_a_label_file_is_an_error_naming_it(real_ct, tmp_path):
    root, ref, pred = _case_folders(real_ct, tmp_path, case=SM, pred_file="seg_btcv13.nii.gz")
    dataset_json = root / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, **{n: i + 1 for i, n in enumerate(BTCV13)}}}))
    # the user thinks "liver is 1" (the demo model's numbering); the dataset says spleen is 1, liver 6
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "liver=1")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert err[0].startswith(f"suprem_evaluate: error: {dataset_json}: -l liver=1 contradicts the reference labels")
    assert "liver=1 where the file has liver=6" in err[0]
    # a new name on a value the file gives another organ is caught too
    with pytest.raises(SupremError, match="organ=1 where value 1 is 'spleen' in the file") as exc:
        evaluate(ref, pred, labels="organ=1")
    assert str(dataset_json) in str(exc.value)
    # -l agreeing with the file is fine; numbers alone (-l 6) name no organ and cannot contradict
    assert evaluate(ref, pred, labels="liver=6")["mean"]["liver"]["dice"] == 1.0
    assert evaluate(ref, pred, labels="6")["mean"]["6"]["dice"] == 1.0
    # --ref-labels says deliberately what the reference holds: it overrides the file, with a warning
    s = evaluate(ref, pred, ref_labels="spleen=6", pred_labels="spleen=6")
    assert s["mean"]["spleen"]["dice"] == 1.0
    assert any(f"overrides {dataset_json}" in w and "spleen=6 where the file has spleen=1" in w for w in s["warnings"])


def test_label_absent_on_both_sides_is_flagged_in_summary_csv_and_table(real_ct, tmp_path):
    _, ref, pred = _case_folders(real_ct, tmp_path, case=SM, pred_file="seg_btcv13.nii.gz")
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "liver=6,ghost=99")
    assert r.returncode == 0, r.stderr
    data = json.loads((pred / "summary.json").read_text())
    assert data["absent_classes"] == ["ghost"]
    assert data["mean"]["ghost"]["absent_everywhere"] is True and data["mean"]["liver"]["absent_everywhere"] is False
    assert data["mean"]["ghost"]["dice"] is None and data["mean"]["ghost"]["n_excluded_both_empty"] == 1
    assert any("class 'ghost' (value 99) has no voxel in any of the 1 case(s)" in w for w in data["warnings"])
    assert "class 'ghost' (value 99) has no voxel" in r.stderr
    ghost_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ghost "))
    assert ghost_line.endswith("<- absent everywhere")
    assert "absent everywhere): ghost" in r.stdout and "1 warning(s) on stderr, also under 'warnings'" in r.stdout
    # a class empty in one case (no kidneys in the contrast-enhanced slab) but present in another is not flagged
    for folder in (ref, pred):
        shutil.copyfile(real_ct / CE / "seg_btcv13.nii.gz", folder / f"{CE}.nii.gz")
    s = evaluate(ref, pred, labels="liver=6,kidney_left=3")
    assert s["num_cases"] == 2 and s["absent_classes"] == []
    assert s["mean"]["kidney_left"]["n_excluded_both_empty"] == 1


def test_single_files_and_a_file_against_a_folder(real_ct, tmp_path):
    ref_file = real_ct / CE / "seg_btcv13.nii.gz"
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    pred_file = pred_dir / "ct_seg.nii.gz"
    shutil.copyfile(real_ct / CE / "seg_total117.nii.gz", pred_file)
    r = run_cli("-ref", str(ref_file), "-pred", str(pred_file), "--ref-labels", str(real_ct / "labels_btcv13.json"),
                "--pred-labels", str(real_ct / "totalseg_v2_total_classes.json"))
    assert r.returncode == 0, r.stderr
    # beside the prediction, named after it, so a folder's summary.json is never overwritten
    data = json.loads((pred_dir / "ct_seg_summary.json").read_text())
    assert (pred_dir / "ct_seg_metrics.csv").is_file() and not (pred_dir / "summary.json").exists()
    assert data["num_cases"] == 1 and data["cases"]["seg_btcv13"]["prediction"] == str(pred_file)
    assert data["mean"]["liver"]["dice"] == 1.0 and data["settings"]["reference_dir"] == str(ref_file)
    assert f"wrote {pred_dir / 'ct_seg_summary.json'}" in r.stdout

    # one reference file against a folder of predictions: the case of that name is evaluated
    ref_dir = tmp_path / "refs"
    ref_dir.mkdir()
    shutil.copyfile(ref_file, ref_dir / "ct_seg.nii.gz")
    shutil.copyfile(ref_file, pred_dir / "other.nii.gz")
    s = evaluate(ref_dir / "ct_seg.nii.gz", pred_dir, ref_labels=real_ct / "labels_btcv13.json",
                 pred_labels=real_ct / "totalseg_v2_total_classes.json", output_dir=tmp_path / "o")
    assert list(s["cases"]) == ["ct_seg"] and s["mean"]["spleen"]["dice"] == 1.0
    with pytest.raises(SupremError, match="no prediction for case 'missing'") as exc:
        shutil.copyfile(ref_file, ref_dir / "missing.nii.gz")
        evaluate(ref_dir / "missing.nii.gz", pred_dir, labels="liver=6")
    assert str(pred_dir) in str(exc.value)
    with pytest.raises(SupremError, match="not a segmentation image"):
        evaluate(real_ct / "README.md", pred_dir)


def test_nsd_at_one_voxel_of_the_coarsest_axis_beside_nsd_at_1mm(real_ct, tmp_path):
    """Liver moved one 2 mm slice: Dice 0.97 beside NSD@1mm 0.64 (a third of its surface is 2 mm off), NSD at one
    voxel (2 mm) all but the few surface voxels the shift pushed across the array border."""
    _, ref, pred = _case_folders(real_ct, tmp_path, pred_file="seg_btcv13.nii.gz")
    lab, geo = read_image(ref / f"{CE}.nii.gz")
    assert max(geo.spacing) == pytest.approx(2.0)
    liver_value = BTCV13.index("liver") + 1
    liver = lab == liver_value
    moved = np.zeros_like(liver)
    moved[:, :, 1:] = liver[:, :, :-1]
    out = lab.copy()
    out[liver] = 0
    out[moved] = liver_value
    write_image(out, geo, pred / f"{CE}.nii.gz")
    s = evaluate(ref, pred, labels="liver=6,spleen=1")
    liver_res = s["cases"][CE]["classes"]["liver"]
    assert liver_res["dice"] > 0.95 and liver_res["nsd"] < 0.7 and liver_res["nsd_1voxel"] > 0.999
    assert s["cases"][CE]["nsd_1voxel_tolerance_mm"] == pytest.approx(2.0)
    assert s["settings"]["nsd_1voxel_tolerance_mm"] == [pytest.approx(2.0)]
    assert "stricter than one voxel" in s["settings"]["nsd_note"]
    assert s["mean"]["liver"]["nsd_1voxel"] == liver_res["nsd_1voxel"] and s["mean"]["spleen"]["nsd_1voxel"] == 1.0
    assert s["foreground_mean"]["nsd_1voxel"] == pytest.approx((liver_res["nsd_1voxel"] + 1.0) / 2)
    # at a tolerance of a voxel or more the note says so instead
    wide = evaluate(ref, pred, labels="liver=6", nsd_tolerance_mm=2.0, output_dir=tmp_path / "w")
    assert wide["mean"]["liver"]["nsd"] == liver_res["nsd_1voxel"]
    assert "allows at least one voxel" in wide["settings"]["nsd_note"]


def test_no_class_name_in_common_is_an_error_listing_both_sides(real_ct, tmp_path):
    _, ref, pred = _case_folders(real_ct, tmp_path, case=SM, pred_file="seg_btcv13.nii.gz")
    with pytest.raises(SupremError, match="no class name in common") as exc:
        evaluate(ref, pred, ref_labels="liver=6,spleen=1", pred_labels="Liver=6,Spleen=1")
    assert "name liver, spleen" in str(exc.value) and "name Liver, Spleen" in str(exc.value)


def test_suprem_predict_run_report_names_the_classes_and_evaluation_matches_them(real_ct, tmp_path):
    """The issue's demo mistake end to end: a model whose label 1 is liver (softmax, liver=1, spleen=2) predicts a
    real CT; its reference numbers spleen 1 and liver 6. run_report.json names the prediction's classes, so
    liver is scored against liver with no option given, and -l liver=1 is refused."""
    from suprem_nn.inference import predict
    from tests.inference.helpers import make_model_folder, tiny_plan

    plan = tiny_plan(multilabel=False, classes=("liver", "spleen"), spacing=(12.0, 12.0, 12.0), mirror_axes=())
    model = make_model_folder(tmp_path / "results", plan)
    inp = tmp_path / "imagesTs"
    inp.mkdir()
    shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / f"{SM}_0000.nii.gz")
    pred = tmp_path / "predictions"
    predict(inp, pred, model_folder=model, folds=[0], progress=False)
    report = json.loads((pred / "run_report.json").read_text())
    assert report["labels"] == {"liver": 1, "spleen": 2}

    ref = tmp_path / "Dataset1_X" / "labelsTs"
    ref.mkdir(parents=True)
    shutil.copyfile(real_ct / SM / "seg_btcv13.nii.gz", ref / f"{SM}.nii.gz")
    (ref.parent / "dataset.json").write_text(json.dumps({"labels": {"background": 0, **{n: i + 1 for i, n in
                                                                                         enumerate(BTCV13)}}}))
    s = evaluate(ref, pred)
    assert s["settings"]["classes_matched_by"] == "name"
    assert s["settings"]["prediction_label_source"] == str(pred / "run_report.json")
    assert list(s["mean"]) == ["spleen", "liver"]
    liver = s["cases"][SM]["classes"]["liver"]
    assert liver["label"] == 6 and liver["prediction_label"] == 1 and liver["n_ref"] == 38634
    pred_map, _ = read_image(pred / f"{SM}.nii.gz")
    assert liver["n_pred"] == int((pred_map == 1).sum())
    with pytest.raises(SupremError, match="liver=1 where the file has liver=6"):
        evaluate(ref, pred, labels="liver=1,spleen=2")
