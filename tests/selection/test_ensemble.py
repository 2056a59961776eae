"""suprem_ensemble on probability files of real CT cases (headers of ../shared): the mean, the geometry, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from suprem_nn.cli.ensemble import main as ensemble
from suprem_nn.inference.probabilities import write_probabilities
from suprem_nn.io import read_image
from suprem_nn.preprocessing import preprocess_images, restore_to_original
from tests.inference.helpers import tiny_plan

CASE = "ts_upper_abdomen_ce_dicom"  # 512 x 280 x 20 at 0.98 x 0.98 x 2 mm: resampling differs per axis


def member(real_ct, folder, spacing, multilabel, seed, classes=("liver", "spleen")):
    """Random probabilities in the network space of a plan at ``spacing`` mm, written as suprem_predict does."""
    plan = tiny_plan(multilabel=multilabel, classes=classes, spacing=spacing)
    image, geometry = read_image(real_ct / CASE / "ct.nii.gz")
    _, props = preprocess_images([image], geometry, plan, CASE)
    rng = np.random.default_rng(seed)
    shape = (plan.num_outputs,) + tuple(props.shape_after_resampling)
    raw = rng.random(shape, dtype=np.float32)
    probs = raw / raw.sum(0) if not multilabel else raw
    write_probabilities(folder / CASE, probs, plan.class_names, plan.label_values, props, plan)
    return plan, props, geometry


def test_ensemble_is_the_mean_and_lands_on_the_input_grid(real_ct, tmp_path, capsys):
    plan_a, props_a, geometry = member(real_ct, tmp_path / "a", (6.0, 6.0, 6.0), False, 1)
    plan_b, props_b, _ = member(real_ct, tmp_path / "b", (8.0, 7.0, 5.0), False, 2)
    assert ensemble(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    labels, geo = read_image(tmp_path / "out" / f"{CASE}.nii.gz")
    # the written header is the CT's: same shape, spacing, origin and direction
    ct_geo = read_image(real_ct / CASE / "ct.nii.gz")[1]
    assert geo.shape == ct_geo.shape == labels.shape
    for key in ("spacing", "origin", "direction"):
        assert np.allclose(getattr(geo, key), getattr(ct_geo, key), atol=1e-5), key
    # the mean computed independently: each member's stored float16 values resampled on their own, then averaged
    means = []
    for d, plan, props in ((tmp_path / "a", plan_a, props_a), (tmp_path / "b", plan_b, props_b)):
        with np.load(d / f"{CASE}.npz") as z:
            stored = z["probabilities"].astype(np.float32)
        means.append(restore_to_original(stored, props, plan, order=1, fill=[1.0, 0.0, 0.0]))
    mean = (means[0] + means[1]) / 2
    top2 = np.sort(mean, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-4   # float ties could go either way; everything else must match exactly
    assert clear.mean() > 0.99
    expected = np.argmax(mean, axis=0).astype(np.uint8)  # label values 1, 2 = class index + 1 here
    assert np.array_equal(labels[clear], expected[clear])
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).any()
    # a second run skips the finished case; --overwrite redoes it
    capsys.readouterr()
    assert ensemble(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert "0 case(s) written, 1 already done" in capsys.readouterr().err
    assert ensemble(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--quiet",
                     "--overwrite"]) == 0
    assert "1 case(s) written, 0 already done" in capsys.readouterr().err


def test_sigmoid_ensemble_with_largest_component_and_per_class_masks(real_ct, tmp_path):
    member(real_ct, tmp_path / "a", (6.0, 6.0, 6.0), True, 3)
    member(real_ct, tmp_path / "b", (6.0, 6.0, 6.0), True, 4)
    out = tmp_path / "out"
    assert ensemble(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "--largest-component",
                     "liver", "--per-class", "--quiet"]) == 0
    import cc3d

    liver = read_image(out / CASE / "segmentations" / "liver.nii.gz")[0]
    spleen = read_image(out / CASE / "segmentations" / "spleen.nii.gz")[0]
    assert cc3d.connected_components(liver, connectivity=26, return_N=True)[1] == 1
    # random probabilities: the untouched class stays in many pieces
    assert cc3d.connected_components(spleen, connectivity=26, return_N=True)[1] > 1
    labels = read_image(out / f"{CASE}.nii.gz")[0]
    assert np.array_equal(labels == 2, spleen > 0)  # spleen (higher index) wins where masks overlap


@pytest.mark.parametrize("second", ["sigmoid", "other_classes"])
def test_refusals_name_the_file(real_ct, tmp_path, capsys, second):
    member(real_ct, tmp_path / "a", (6.0, 6.0, 6.0), False, 1)
    if second == "sigmoid":
        member(real_ct, tmp_path / "b", (6.0, 6.0, 6.0), True, 2)
    else:
        member(real_ct, tmp_path / "b", (6.0, 6.0, 6.0), False, 2, classes=("liver", "pancreas"))
    assert ensemble(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "b" / f"{CASE}.npz") in err
    if second == "sigmoid":
        assert "cannot average sigmoid (multi-label masks) probabilities with the softmax" in err
        assert "Refused (not converted)" in err
    else:
        assert "only here: pancreas; only in" in err and "spleen" in err
    assert not (tmp_path / "out" / f"{CASE}.nii.gz").exists()


def test_missing_case_and_empty_folder(real_ct, tmp_path, capsys):
    member(real_ct, tmp_path / "a", (6.0, 6.0, 6.0), False, 1)
    (tmp_path / "b").mkdir()
    assert ensemble(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no saved probabilities" in err and str(tmp_path / "b") in err


@pytest.mark.parametrize("damage", ["cut npz", "zip of something else", "json: bbox", "json: reorientation",
                                    "json: geometry", "json: label_values", "json: a list"])
def test_damaged_member_files_are_one_line_naming_the_file(real_ct, tmp_path, capsys, damage):
    """A half-copied .npz was a BadZipFile traceback, a hand-edited .json a KeyError / TypeError from deep inside;
    each is now one line naming the file, and nothing is written."""
    import json
    import zipfile

    member(real_ct, tmp_path / "a", (6.0, 6.0, 6.0), False, 1)
    member(real_ct, tmp_path / "b", (6.0, 6.0, 6.0), False, 2)
    npz, meta = tmp_path / "b" / f"{CASE}.npz", tmp_path / "b" / f"{CASE}.json"
    info = json.loads(meta.read_text())
    if damage == "cut npz":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif damage == "zip of something else":
        with zipfile.ZipFile(npz, "w") as z:
            z.writestr("readme.txt", "not probabilities")
    elif damage == "json: a list":
        meta.write_text("[]")
    else:
        field = damage.split(": ")[1]
        changed = {"bbox": ("bbox", [[0, 5]]), "reorientation": ("reorientation", {"permutation": [0, 0, 1],
                                                                                   "flips": [False] * 3}),
                   "geometry": ("original_geometry", {**info["original_geometry"], "spacing": [1.0, 0.0, 1.0]}),
                   "label_values": ("label_values", ["liver", "spleen"])}[field]
        meta.write_text(json.dumps({**info, changed[0]: changed[1]}))
    assert ensemble(["-i", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    named = npz if damage in ("cut npz", "zip of something else") else meta
    assert len(err.splitlines()) == 1 and f"{named}: " in err, err
    assert not (tmp_path / "out" / f"{CASE}.nii.gz").exists()
