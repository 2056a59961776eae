"""Metric functions on arrays against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from suprem_nn.evaluation import metrics as m


def cube(shape=(10, 10, 10), lo=2, size=4):
    a = np.zeros(shape, dtype=bool)
    a[lo:lo + size, lo:lo + size, lo:lo + size] = True
    return a


def test_dice_iou_exact_fractions_for_shifted_cubes():
    a = cube()
    b = np.roll(a, 1, axis=2)  # 4x4x4 cubes overlapping in 4x4x3 = 48 voxels
    assert m.dice(a, b) == pytest.approx(96 / 128)
    assert m.iou(a, b) == pytest.approx(48 / 80)
    c = np.zeros_like(a)
    c[2:6, 2:6, 2:4] = True  # half of a
    assert m.dice(a, c) == pytest.approx(2 * 32 / (64 + 32))
    assert m.iou(a, c) == pytest.approx(0.5)
    assert m.dice(a, a) == 1.0 and m.iou(a, a) == 1.0


def test_surface_is_mask_minus_6_connected_erosion_with_array_border_outside():
    assert int(m.surface(cube(size=3)).sum()) == 26          # 27 voxels, 1 interior
    assert int(m.surface(cube(size=4)).sum()) == 64 - 8
    full = np.ones((4, 4, 4), dtype=bool)                    # touches the array border everywhere
    assert int(m.surface(full).sum()) == 64 - 8
    assert int(m.surface(cube(size=1)).sum()) == 1


def test_nsd_anisotropic_shift_beyond_tolerance_on_coarse_axis_within_on_fine_axis():
    a = cube()
    b = np.roll(a, 1, axis=2)
    # axis 2 is 3 mm: the shifted faces are 3 mm apart (> 1 mm). Per cube 56 surface voxels; the 16 voxels of
    # the face that has no counterpart fail, the 4 interior voxels of the other face are 1 mm (axis 0) from the
    # side wall and pass: (40 + 40) / (56 + 56).
    assert m.surface_dice(a, b, (1.0, 1.0, 3.0), 1.0) == pytest.approx(80 / 112)
    # the same shift along a 1 mm axis while the other axes are coarse: every voxel is within 1 mm
    assert m.surface_dice(a, b, (3.0, 3.0, 1.0), 1.0) == pytest.approx(1.0)
    # 3 mm tolerance covers the 3 mm shift
    assert m.surface_dice(a, b, (1.0, 1.0, 3.0), 3.0) == pytest.approx(1.0)
    # tolerance 0: only coinciding surface voxels (the 36 side-wall voxels of the 3 shared layers) count
    assert m.surface_dice(a, b, (1.0, 1.0, 3.0), 0.0) == pytest.approx(72 / 112)


def test_nsd_rewards_near_misses_that_dice_scores_zero():
    a = np.zeros((5, 5, 5), dtype=bool)
    b = np.zeros_like(a)
    a[2, 2, 2] = True
    b[2, 2, 3] = True
    assert m.dice(a, b) == 0.0
    assert m.surface_dice(a, b, (1, 1, 1), 1.0) == 1.0
    assert m.surface_dice(a, b, (1, 1, 1.5), 1.0) == 0.0


def test_empty_mask_convention():
    empty = np.zeros((6, 6, 6), dtype=bool)
    full = cube((6, 6, 6), 1, 3)
    for f in (m.dice, m.iou):
        assert math.isnan(f(empty, empty))
        assert f(empty, full) == 0.0
        assert f(full, empty) == 0.0
    assert math.isnan(m.surface_dice(empty, empty, (1, 1, 1)))
    assert m.surface_dice(empty, full, (1, 1, 1)) == 0.0
    assert m.surface_dice(full, empty, (1, 1, 1)) == 0.0
    assert m.nanmean_with_count([1.0, math.nan, 0.5]) == (0.75, 2, 1)
    mean, used, skipped = m.nanmean_with_count([math.nan])
    assert math.isnan(mean) and (used, skipped) == (0, 1)


@pytest.mark.parametrize("spacing,tol", [((0.8, 0.8, 1.5), 1.0), ((1, 1, 1), 3.0), ((0.7, 1.3, 2.9), 2.5),
                                         ((3, 3, 3), 2.0), ((1, 2, 5), 0.0)])
def test_offset_lookup_and_distance_transform_agree(spacing, tol):
    rng = np.random.default_rng(int(tol * 10))
    a = ndimage.binary_opening(rng.random((40, 30, 20)) > 0.4)
    b = ndimage.binary_opening(rng.random((40, 30, 20)) > 0.4)
    sa, sb = m.surface(a), m.surface(b)
    by_edt = m.count_within_tolerance(sa, sb, spacing, tol, "edt")
    by_offsets = m.count_within_tolerance(sa, sb, spacing, tol, "offsets")
    assert by_edt == by_offsets
    assert 0 < by_edt < int(sa.sum())


def test_cropping_to_the_union_box_changes_nothing():
    rng = np.random.default_rng(1)
    big = np.zeros((80, 70, 60), dtype=bool)
    a, b = big.copy(), big.copy()
    a[30:45, 20:35, 10:22] = ndimage.binary_opening(rng.random((15, 15, 12)) > 0.3)
    b[31:46, 20:35, 11:23] = ndimage.binary_opening(rng.random((15, 15, 12)) > 0.3)
    cropped = m.surface_dice(a, b, (0.9, 0.9, 2.0), 2.0)
    whole = m.surface_dice_in_box(a, b, (0.9, 0.9, 2.0), 2.0)
    assert cropped == pytest.approx(whole)
    assert 0 < cropped < 1


def test_label_maps_match_per_class_masks_and_regions():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 4, (30, 30, 20)).astype(np.uint8)
    ref = ndimage.median_filter(ref, size=3)
    pred = ndimage.median_filter(np.roll(ref, 1, axis=0), size=3)
    classes = {"a": 1, "b": 2, "c": 3, "absent": 7, "ab": [1, 2]}
    res = m.evaluate_label_maps(ref, pred, classes, (1.0, 1.0, 2.5), 1.0)
    for name, v in classes.items():
        vals = v if isinstance(v, list) else [v]
        r, p = np.isin(ref, vals), np.isin(pred, vals)
        if name == "absent":
            assert math.isnan(res[name]["dice"]) and math.isnan(res[name]["nsd"])
            continue
        assert res[name]["dice"] == pytest.approx(m.dice(r, p))
        assert res[name]["iou"] == pytest.approx(m.iou(r, p))
        assert res[name]["nsd"] == pytest.approx(m.surface_dice(r, p, (1.0, 1.0, 2.5), 1.0))
        assert (res[name]["tp"], res[name]["n_ref"], res[name]["n_pred"]) == (
            int((r & p).sum()), int(r.sum()), int(p.sum()))


def test_joint_histogram_counts_and_slabs(monkeypatch):
    ref = np.array([0, 1, 1, 2, 2, 2], dtype=np.uint8).reshape(1, 2, 3)
    pred = np.array([0, 1, 2, 2, 2, 0], dtype=np.uint8).reshape(1, 2, 3)
    expected = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 2]])
    assert (m.label_map_counts(ref, pred) == expected).all()
    monkeypatch.setattr(m, "_SLAB_VOXELS", 4)  # several slabs must add up to the same histogram
    assert (m.label_map_counts(ref, pred) == expected).all()
    c = m.counts_for(expected, 2)
    assert (c.tp, c.n_ref, c.n_pred) == (2, 3, 3)
    with pytest.raises(ValueError, match="integers"):
        m.label_map_counts(ref.astype(float), pred)


def test_bad_spacing_and_tolerance_are_rejected():
    a = cube()
    with pytest.raises(ValueError, match="spacing"):
        m.surface_dice(a, np.roll(a, 1, 0), (1, 0, 1))
    with pytest.raises(ValueError, match="tolerance"):
        m.surface_dice(a, np.roll(a, 1, 0), (1, 1, 1), -1)


def test_renumbered_prediction_and_nsd_at_one_voxel():
    """A prediction numbering the classes differently scores like the same numbering, given pred_classes; NSD at
    one voxel of the coarsest axis forgives the one-slice shift that NSD@1mm counts wrong (80/112 above)."""
    a = cube()
    ref = a.astype(np.uint8) * 6                      # "liver" is 6 in the reference ...
    pred = np.roll(a, 1, axis=2).astype(np.uint8) * 5  # ... and 5 in the prediction, shifted one 3 mm voxel
    spacing = (1.0, 1.0, 3.0)
    tol = m.one_voxel_tolerance_mm(spacing)
    assert tol == 3.0 and m.one_voxel_tolerance_mm((0.8, 0.8, 2.5)) == 2.5
    res = m.evaluate_label_maps(ref, pred, {"liver": 6}, spacing, 1.0, pred_classes={"liver": 5},
                                extra_tolerances_mm={"nsd_1voxel": tol})["liver"]
    assert res["dice"] == pytest.approx(96 / 128) and res["nsd"] == pytest.approx(80 / 112)
    assert res["nsd_1voxel"] == 1.0 and (res["tp"], res["n_ref"], res["n_pred"]) == (48, 64, 64)
    # without pred_classes the reference's value 6 is looked for in the prediction: nothing there
    blind = m.evaluate_label_maps(ref, pred, {"liver": 6}, spacing, 1.0)["liver"]
    assert blind["dice"] == 0.0 and blind["n_pred"] == 0
    c = m.counts_for(m.label_map_counts(ref, pred), 6, 5)
    assert (c.tp, c.n_ref, c.n_pred) == (48, 64, 64)
    assert m.surface_dices_in_box(a, np.roll(a, 1, axis=2), spacing, [0.0, 1.0, 3.0]) == pytest.approx(
        [72 / 112, 80 / 112, 1.0])
