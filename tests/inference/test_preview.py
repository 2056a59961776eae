"""Previews (suprem_nn.inference.preview) on real CTs: radiological orientation for several file orientations,
physical aspect, views chosen by the data, and a legend of exactly the classes shown.

Orientation is checked two independent ways: a marker rod placed by *world* (LPS) coordinates on the patient's
left and anterior side (the test computes voxel positions from the geometry formula, not from the preview code),
and the anatomy itself (spleen on the patient's left, liver on the right and above the kidneys). Pixels are
found by the classes' exact outline colours in the decoded PNG.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from suprem_nn.inference.preview import THIN_AXIAL, class_colour, render_preview, write_preview_png
from suprem_nn.io.geometry import Geometry
from suprem_nn.io.image_io import read_image

MARKER = 99  # label value of the marker rod (not a btcv13 value)
RADIOLOGICAL_AXIAL = {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def _btcv13(real_ct):
    labels = json.loads((real_ct / "labels_btcv13.json").read_text())["labels"]
    values = sorted(int(v) for v in labels if v != "0")
    return [labels[str(v)] for v in values], values


def _case(real_ct, name):
    ct, geo = read_image(real_ct / name / "ct.nii.gz")
    lab, lab_geo = read_image(real_ct / name / "seg_btcv13.nii.gz")
    assert lab_geo.same_grid(geo)
    return ct, lab.astype(np.uint8), geo


def _world(geo: Geometry) -> list[np.ndarray]:
    """LPS x, y, z (mm) of every voxel centre: origin + direction @ (spacing * index) (geometry.py's formula)."""
    d, sp, o = geo.direction_matrix, np.asarray(geo.spacing), np.asarray(geo.origin)
    idx = [np.arange(n, dtype=np.float64).reshape([-1 if a == b else 1 for b in range(3)])
           for a, n in enumerate(geo.shape)]
    return [o[w] + sum(d[w, a] * sp[a] * idx[a] for a in range(3)) for w in range(3)]


def _add_marker(lab, geo) -> tuple[np.ndarray, tuple[float, float]]:
    """A 16 x 16 mm rod through every axial slice, a quarter of the field of view to the patient's LEFT (+x)
    and ANTERIOR (-y) of its centre. Returns the new labels and the rod's expected place in an axial panel as
    fractions (from the viewer's left, from the top) under the radiological convention."""
    x, y, _ = _world(geo)
    x, y = np.broadcast_to(x, geo.shape), np.broadcast_to(y, geo.shape)
    sp = max(geo.spacing[:2])
    lo_x, hi_x, lo_y, hi_y = x.min() - sp / 2, x.max() + sp / 2, y.min() - sp / 2, y.max() + sp / 2
    cx, cy = lo_x + 0.75 * (hi_x - lo_x), lo_y + 0.25 * (hi_y - lo_y)
    out = lab.copy()
    out[(np.abs(x - cx) < 8) & (np.abs(y - cy) < 8)] = MARKER
    # viewer's left = patient's right = smallest LPS x; top = anterior = smallest LPS y
    return out, ((cx - lo_x) / (hi_x - lo_x), (cy - lo_y) / (hi_y - lo_y))


def _flip(arrays, geo: Geometry, axis: int):
    """The same anatomy with file axis ``axis`` stored in reverse (direction column negated, origin moved)."""
    d, sp = geo.direction_matrix.copy(), np.asarray(geo.spacing)
    origin = np.asarray(geo.origin) + d[:, axis] * sp[axis] * (geo.shape[axis] - 1)
    d[:, axis] *= -1
    return ([np.ascontiguousarray(np.flip(a, axis)) for a in arrays],
            Geometry(geo.shape, geo.spacing, tuple(origin), tuple(d.reshape(-1))))


def _swap_ij(arrays, geo: Geometry):
    """The same anatomy with file axes i and j exchanged."""
    d = geo.direction_matrix[:, [1, 0, 2]]
    return ([np.ascontiguousarray(a.transpose(1, 0, 2)) for a in arrays],
            Geometry((geo.shape[1], geo.shape[0], geo.shape[2]), (geo.spacing[1], geo.spacing[0], geo.spacing[2]),
                     geo.origin, tuple(d.reshape(-1))))


def _to_code(arrays, geo: Geometry, towards: str):
    """Flip every file axis whose direction is not among ``towards`` (e.g. "LPS", "RAS")."""
    for a in range(3):
        col = geo.direction_matrix[:, a]
        w = int(np.argmax(np.abs(col)))
        letter = ("LPS" if col[w] > 0 else "RAI")[w]
        if letter not in towards:
            arrays, geo = _flip(arrays, geo, a)
    return arrays, geo


def _variant(ct, lab, geo, kind):
    if kind == "stored":
        return [ct, lab], geo
    if kind in ("LPS", "RAS"):
        return _to_code([ct, lab], geo, kind)
    if kind == "swapped_ij":
        return _swap_ij([ct, lab], geo)
    if kind == "mirrored":  # NOT the same anatomy: voxels reversed along i, geometry kept (patient mirrored)
        return [np.ascontiguousarray(ct[::-1]), np.ascontiguousarray(lab[::-1])], geo
    raise ValueError(kind)


def _pixels(preview) -> np.ndarray:
    """The PNG decoded (what a reader sees), checked equal to the returned pixels."""
    png = np.asarray(Image.open(io.BytesIO(preview.png)).convert("RGB"))
    assert png.shape[:2] == (preview.size_px[1], preview.size_px[0])
    assert np.array_equal(png, preview.pixels)
    return png


def _colour_centroid(png, box, rgb):
    """Mean (x, y) of the pixels of exactly colour ``rgb`` inside ``box``, as fractions of the box; None if none."""
    x0, y0, x1, y1 = box
    hit = np.all(png[y0:y1, x0:x1] == np.asarray(rgb, dtype=np.uint8), axis=2)
    if not hit.any():
        return None
    ys, xs = np.nonzero(hit)
    return (xs.mean() + 0.5) / (x1 - x0), (ys.mean() + 0.5) / (y1 - y0)


def _render_marked(real_ct, case, kind):
    names, values = _btcv13(real_ct)
    ct, lab, geo = _case(real_ct, case)
    lab, expected = _add_marker(lab, geo)
    (ct, lab), geo = _variant(ct, lab, geo, kind)
    preview = render_preview(ct, geo, lab, names + ["marker"], values + [MARKER], title=f"{case} {kind}")
    return preview, expected, geo


@pytest.mark.parametrize("case,kind", [
    ("ts_upper_abdomen_ce_dicom", "stored"),      # LAS file, 20 slices of 2 mm: a thin slab
    ("ts_upper_abdomen_ce_dicom", "LPS"),         # the same anatomy stored LPS (ITK/DICOM order)
    ("ts_upper_abdomen_ce_dicom", "RAS"),         # ... and stored RAS
    ("ts_abdomen_pelvis_3mm", "stored"),          # RAS file, 112 slices: a thick volume
    ("ts_abdomen_pelvis_3mm", "swapped_ij"),      # i and j exchanged (an "ARS" file)
])
def test_left_and_anterior_land_on_the_viewers_right_and_top(real_ct, case, kind):
    preview, (fx, fy), geo = _render_marked(real_ct, case, kind)
    png = _pixels(preview)
    legend = {e.name: e for e in preview.legend}
    marker_rgb = legend["marker"].rgb
    assert sum(e.rgb == marker_rgb for e in preview.legend) == 1  # the marker's colour is its own
    axial = [p for p in preview.panels if p.view == "axial"]
    assert axial
    for p in axial:
        assert p.letters == RADIOLOGICAL_AXIAL
        where = _colour_centroid(png, p.box_px, marker_rgb)
        assert where is not None, f"marker not drawn in axial panel {p.number}"
        # patient's left and anterior: viewer's right and top, where the world coordinates put it
        assert where[0] == pytest.approx(fx, abs=0.05) and fx > 0.7
        assert where[1] == pytest.approx(fy, abs=0.05) and fy < 0.3
        if {"spleen", "liver"} <= set(p.classes):  # anatomy agrees: spleen (patient's left) right of the liver
            spleen = _colour_centroid(png, p.box_px, legend["spleen"].rgb)
            liver = _colour_centroid(png, p.box_px, legend["liver"].rgb)
            assert spleen[0] > 0.5 > liver[0]
    assert any({"spleen", "liver"} <= set(p.classes) for p in axial)


def test_a_mirrored_file_shows_the_marker_on_the_viewers_left(real_ct):
    """The negative control: with the voxels reversed but the geometry kept, the patient is mirrored in the
    world, so the same checks must see the marker and the spleen on the other side."""
    preview, (fx, _), _ = _render_marked(real_ct, "ts_upper_abdomen_ce_dicom", "mirrored")
    png = _pixels(preview)
    legend = {e.name: e for e in preview.legend}
    for p in (p for p in preview.panels if p.view == "axial"):
        assert _colour_centroid(png, p.box_px, legend["marker"].rgb)[0] == pytest.approx(1 - fx, abs=0.05)
        if {"spleen", "liver"} <= set(p.classes):
            assert _colour_centroid(png, p.box_px, legend["spleen"].rgb)[0] < 0.5


def test_a_thin_slab_gets_an_axial_contact_sheet_with_physical_aspect(real_ct):
    names, values = _btcv13(real_ct)
    ct, lab, geo = _case(real_ct, "ts_upper_abdomen_ce_dicom")  # 512 x 280 x 20 at 0.98 x 0.98 x 2 mm
    preview = render_preview(ct, geo, lab, names, values, title="thin")
    assert preview.layout == "axial sheet"
    assert [p.view for p in preview.panels] == ["axial"] * THIN_AXIAL
    assert preview.size_px[0] >= 1000
    positions = [p.position_mm for p in preview.panels]
    assert positions == sorted(positions, reverse=True)  # superior first
    for p in preview.panels:
        x0, y0, x1, y1 = p.box_px
        assert (x1 - x0) / (y1 - y0) == pytest.approx((512 * geo.spacing[0]) / (280 * geo.spacing[1]), rel=0.02)
    # every class of the volume is on some slice of the sheet
    present = {names[values.index(v)] for v in np.unique(lab) if v}
    assert {e.name for e in preview.legend} == present and preview.not_shown == ()


def test_a_thick_volume_gets_coronal_and_sagittal_overviews_in_anatomical_order(real_ct):
    names, values = _btcv13(real_ct)
    ct, lab, geo = _case(real_ct, "ts_abdomen_pelvis_3mm")  # RAS, 366 x 303 x 336 mm
    preview = render_preview(ct, geo, lab, names, values, title="thick")
    png = _pixels(preview)
    assert preview.layout == "overview + axial"
    views = [p.view for p in preview.panels]
    assert views[:2] == ["coronal", "sagittal"] and set(views[2:]) == {"axial"}
    coronal, sagittal = preview.panels[:2]
    assert coronal.letters == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert sagittal.letters == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    x0, y0, x1, y1 = coronal.box_px
    assert (x1 - x0) / (y1 - y0) == pytest.approx(122 / 112, rel=0.02)
    rgb = {e.name: e.rgb for e in preview.legend}
    assert {"liver", "spleen", "kidney_right"} <= set(coronal.classes)
    liver, spleen, kidney = (_colour_centroid(png, coronal.box_px, rgb[n]) for n in ("liver", "spleen", "kidney_right"))
    assert liver[0] < 0.5 < spleen[0]   # patient's right on the viewer's left
    assert liver[1] < kidney[1]         # the liver is superior to the right kidney: higher on the screen
    assert {"stomach", "kidney_left"} <= set(sagittal.classes)
    stomach, kidney_l = (_colour_centroid(png, sagittal.box_px, rgb[n]) for n in ("stomach", "kidney_left"))
    assert stomach[0] < kidney_l[0]     # the stomach is anterior to the left kidney: anterior on the left


def test_legend_names_exactly_the_classes_in_the_shown_slices(real_ct, tmp_path):
    """Eight small labelled blobs, each in its own axial slice of a 20-slice CT: the sheet shows six slices, so
    two classes are in the volume but not shown. The legend lists exactly the classes in the shown file slices
    (recomputed here from the panels' file axis and index), its swatches are drawn in exactly those colours,
    and the other two are named as not shown."""
    ct, _, geo = _case(real_ct, "ts_upper_abdomen_ce_dicom")
    lab = np.zeros(geo.shape, dtype=np.uint8)
    names = [f"blob_{n}" for n in range(8)]
    values = [10 + n for n in range(8)]
    for n, k in enumerate(range(1, 17, 2)):  # slices k = 1, 3, ..., 15
        lab[200 + 10 * n: 212 + 10 * n, 120:132, k] = values[n]
    preview = write_preview_png(tmp_path / "p.png", ct, geo, label_map=lab, class_names=names, class_values=values)
    assert (tmp_path / "p.png").read_bytes() == preview.png
    png = _pixels(preview)
    shown = set()
    for p in preview.panels:
        in_slice = {names[values.index(v)] for v in np.unique(np.take(lab, p.index, axis=p.axis)) if v}
        assert set(p.classes) == in_slice
        shown |= in_slice
    assert len(shown) == THIN_AXIAL  # the greedy choice put one new class on every slice
    assert [e.name for e in preview.legend] == [n for n in names if n in shown]  # class order
    assert set(preview.not_shown) == set(names) - shown and len(preview.not_shown) == 2
    x0, y0, x1, y1 = preview.legend_box_px
    swatches = png[y0:y1, x0:x1].reshape(-1, 3)
    colours = {tuple(int(c) for c in px) for px in swatches}
    all_rgb = {e.name: e.rgb for e in preview.legend}
    assert {e.rgb for e in preview.legend} <= colours
    assert len({e.rgb for e in preview.legend}) == len(preview.legend)  # one colour per class
    # a not-shown class would take the colour of its place in the class list: not in the swatches
    for n in preview.not_shown:
        assert class_colour(names.index(n)) not in colours
    assert all(all_rgb[n] == class_colour(names.index(n)) for n in all_rgb)


def test_overlapping_masks_are_drawn_and_listed(real_ct):
    """Multi-label predictions give masks that overlap: a class inside the liver is listed and drawn over it."""
    names, values = _btcv13(real_ct)
    ct, lab, geo = _case(real_ct, "ts_abdomen_sm_3mm")
    liver = lab == values[names.index("liver")]
    vessel = np.zeros_like(liver)
    vessel[40:60, 40:60, :] = liver[40:60, 40:60, :]
    assert vessel.any()
    masks = np.stack([lab == v for v in values] + [vessel]).astype(np.uint8)
    preview = render_preview(ct, geo, masks=masks, class_names=names + ["hepatic_vessel"],
                             class_values=values + [50])
    png = _pixels(preview)
    legend = {e.name: e for e in preview.legend}
    assert {"liver", "hepatic_vessel"} <= set(legend)
    drawn = [p for p in preview.panels if "hepatic_vessel" in p.classes]
    assert drawn and all(_colour_centroid(png, p.box_px, legend["hepatic_vessel"].rgb) for p in drawn)


def test_label_values_outside_the_class_list_are_shown_by_value(real_ct):
    ct, lab, geo = _case(real_ct, "ts_abdomen_sm_3mm")
    preview = render_preview(ct, geo, lab)  # no class names at all
    present = sorted(int(v) for v in np.unique(lab) if v)
    assert [e.value for e in preview.legend] == present
    assert [e.name for e in preview.legend] == [f"label {v}" for v in present]


def test_predict_preview_writes_the_same_picture(real_ct, tmp_path):
    """``suprem_predict --preview`` (writers.write_preview) renders the prediction's classes with this module."""
    from suprem_nn.inference.predictor import PredictionResult
    from suprem_nn.inference.writers import write_preview

    names, values = _btcv13(real_ct)
    ct, lab, geo = _case(real_ct, "ts_abdomen_sm_3mm")
    result = PredictionResult("case_7", geo, lab, names, values)
    write_preview(result, ct, tmp_path / "case_7_preview.png")
    expected = render_preview(ct, geo, lab, names, values, title="case_7")
    assert (tmp_path / "case_7_preview.png").read_bytes() == expected.png
    assert Image.open(tmp_path / "case_7_preview.png").size[0] >= 1000


def test_command_line_draws_a_float_label_file_with_names(real_ct, tmp_path, capsys):
    """``python -m suprem_nn.inference.preview`` (how the documentation's screenshots are made): names from a
    {value: name} JSON, a label map saved as float (as some tools do) accepted when its values are whole."""
    import nibabel as nib

    from suprem_nn.inference.preview import main

    case = real_ct / "ts_abdomen_sm_3mm"
    seg = nib.load(str(case / "seg_btcv13.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj).astype(np.float32), seg.affine), str(tmp_path / "seg.nii.gz"))
    out = tmp_path / "shot.png"
    assert main([str(case / "ct.nii.gz"), str(tmp_path / "seg.nii.gz"), str(out),
                 "--names", str(real_ct / "labels_btcv13.json")]) == 0
    printed = capsys.readouterr().out
    assert "classes shown: spleen, kidney_right, kidney_left" in printed and "label " not in printed
    assert Image.open(out).size[0] >= 1000
    ct, _, geo = _case(real_ct, "ts_abdomen_sm_3mm")
    with pytest.raises(ValueError, match="non-integer"):
        render_preview(ct, geo, np.full(geo.shape, 0.5, dtype=np.float32))
