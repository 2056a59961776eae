"""The phantom generator: HU per tissue, label layout, geometry, determinism, the raw dataset it writes."""
import json

import numpy as np
import pytest

from suprem_nn.datasets import load_dataset, verify_dataset
from suprem_nn.demo.phantom import CLASS_NAMES, LABELS, make_phantom, phantom_geometry, write_phantom_dataset
from suprem_nn.io.image_io import read_image

SHAPE, SPACING = (120, 94, 40), (3.0, 3.0, 4.0)   # the demo's anatomy at a coarse, fast grid


@pytest.fixture(scope="module")
def case():
    return make_phantom(7, SHAPE, SPACING)


def test_arrays_types_and_geometry(case):
    assert case.ct.shape == SHAPE and case.label.shape == SHAPE
    assert case.ct.dtype == np.int16 and case.label.dtype == np.uint8
    g = case.geometry
    assert g.shape == SHAPE and g.spacing == SPACING
    assert g.orientation_code() == "RAS"
    # the centre voxel sits at the world origin
    centre = np.asarray(g.origin) + g.direction_matrix @ (np.asarray(SPACING) * (np.asarray(SHAPE) - 1) / 2)
    np.testing.assert_allclose(centre, 0, atol=1e-6)
    assert set(np.unique(case.label)) == set(LABELS.values())


@pytest.mark.parametrize("organ,lo,hi", [("liver", 90, 120), ("spleen", 105, 135), ("kidney_right", 120, 185),
                                         ("kidney_left", 120, 185), ("aorta", 170, 230)])
def test_organ_hu(case, organ, lo, hi):
    hu = case.ct[case.label == LABELS[organ]].astype(np.float64)
    assert lo <= np.median(hu) <= hi
    # voxel noise of 10-20 HU (plus partial volume at the rim), not a flat colour
    assert 8 <= np.percentile(hu, 75) - np.percentile(hu, 25) <= 80


def test_body_and_air(case):
    corner = case.ct[:5, :5, :].astype(np.float64)
    assert abs(corner.mean() + 1000) < 5
    body = case.ct > -500
    fraction = body.mean()
    assert 0.4 < fraction < 0.85            # an elliptic body filling most of the field of view
    assert ((case.label > 0) & ~body).mean() < 1e-3   # organs lie inside the body
    # subcutaneous fat exists just inside the skin on the body's lateral edge
    row = case.ct[:, SHAPE[1] // 2, SHAPE[2] // 2].astype(np.float64)
    first = int(np.argmax(row > -500))
    assert -160 < np.median(row[first + 1:first + 4]) < -40


def test_anatomy_sides_and_sizes(case):
    """Liver on the patient's right (high i in RAS), spleen on the left, liver the largest organ."""
    ml = {n: (case.label == v).sum() * np.prod(SPACING) / 1000 for n, v in LABELS.items() if v}
    assert ml["liver"] > 500 and ml["liver"] > 3 * ml["spleen"]
    assert all(40 < ml[k] < 400 for k in ("spleen", "kidney_right", "kidney_left"))
    centre_i = {n: np.argwhere(case.label == v)[:, 0].mean() for n, v in LABELS.items() if v}
    mid = (SHAPE[0] - 1) / 2
    assert centre_i["liver"] > mid > centre_i["spleen"]
    assert centre_i["kidney_right"] > mid > centre_i["kidney_left"]


def test_deterministic_and_varied():
    a, b = make_phantom(3, (60, 47, 20), (6.0, 6.0, 8.0)), make_phantom(3, (60, 47, 20), (6.0, 6.0, 8.0))
    np.testing.assert_array_equal(a.ct, b.ct)
    np.testing.assert_array_equal(a.label, b.label)
    c = make_phantom(4, (60, 47, 20), (6.0, 6.0, 8.0))
    overlap = ((a.label == 1) & (c.label == 1)).sum() / max((a.label == 1).sum(), 1)
    assert overlap < 0.97 and not np.array_equal(a.ct, c.ct)


def test_geometry_helper_matches_files(tmp_path):
    folder = write_phantom_dataset(tmp_path / "Dataset901_P", num_train=5, num_test=1, shape=(60, 47, 20),
                                   spacing=(6.0, 6.0, 8.0), seed=11)
    d = json.loads((folder / "dataset.json").read_text())
    assert d["labels"] == LABELS and d["numTraining"] == 5 and d["channel_names"] == {"0": "CT"}
    ct, geo = read_image(folder / "imagesTr" / "phantom_000_0000.nii.gz")
    lab, lgeo = read_image(folder / "labelsTr" / "phantom_000.nii.gz")
    assert ct.dtype == np.int16 and lab.dtype == np.uint8
    assert geo.same_grid(phantom_geometry((60, 47, 20), (6.0, 6.0, 8.0))) and lgeo.same_grid(geo)
    np.testing.assert_array_equal(ct, make_phantom(11, (60, 47, 20), (6.0, 6.0, 8.0)).ct)
    assert (folder / "imagesTs" / "phantom_005_0000.nii.gz").is_file()
    assert (folder / "labelsTs" / "phantom_005.nii.gz").is_file()
    # the dataset loader and verifier accept it as it is
    ds = load_dataset(str(folder))
    assert [c.case_id for c in ds.cases] == [f"phantom_{n:03d}" for n in range(5)]
    assert list(ds.class_names) == CLASS_NAMES
    verify_dataset(ds, num_processes=1, progress=False).raise_if_failed()


def test_rewrite_with_other_settings_drops_old_cases(tmp_path):
    folder = tmp_path / "Dataset902_P"
    write_phantom_dataset(folder, 6, 2, (60, 47, 20), (6.0, 6.0, 8.0))
    write_phantom_dataset(folder, 5, 1, (60, 47, 20), (6.0, 6.0, 8.0))
    assert len(list((folder / "imagesTr").iterdir())) == 5
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["phantom_005_0000.nii.gz"]
