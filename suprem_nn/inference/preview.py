"""Preview PNGs of a CT and its labels that a radiologist reads at a glance.

One renderer for ``suprem_predict --preview`` (:func:`suprem_nn.inference.writers.write_preview`), the demo
(which runs ``suprem_predict --preview``) and ``python -m suprem_nn.inference.preview CT LABELS OUT.png``.

What a preview shows
--------------------
* **Radiological convention.** Axial and coronal panels put the patient's right on the viewer's left
  (patient's left on the viewer's right); axial panels have anterior at the top, coronal and sagittal panels
  superior at the top, sagittal panels anterior on the viewer's left. The volume is first reoriented to the
  closest axis-aligned LPS layout (:func:`suprem_nn.io.geometry.plan_reorientation`, from the direction
  cosines), so LPS, RAS, LAS, flipped and axis-permuted files all display the same way; an oblique file is
  shown along its closest anatomical axes.
* **Orientation letters** (R/L, A/P, S/I) outside every panel edge, computed from the reoriented direction
  cosines (a second letter is added when an edge is more than about 17 degrees oblique, e.g. ``LA``).
* **True physical aspect ratio**: every panel is resampled to square display pixels from the voxel spacing.
* **Views chosen by the data.** A volume whose superior-inferior extent is less than :data:`THIN_RATIO` of its
  right-left extent (a slab such as a 20-slice CT) gets a contact sheet of :data:`THIN_AXIAL` axial slices;
  a thicker one gets a coronal and a sagittal overview (with numbered lines where the axial slices are) above
  :data:`THICK_AXIAL` axial slices. Axial slices are picked to show every labelled class at least once where
  the sheet has room (greedy: the slice holding most not-yet-shown classes first), the rest spread evenly
  over the labelled extent; they are ordered superior (first) to inferior. Coronal and sagittal overviews go
  through the slice holding the most classes (ties: the largest labelled area).
* **A legend of exactly the classes shown**: a class is listed when at least one of its voxels lies in a
  shown slice (the voxel slice, before display resampling). Classes in the volume but in none of the shown
  slices are named below the legend ("in the volume, not in these slices"), so nothing present is hidden.
  Colours are fixed per class (by its position in the model's class list), so the same organ has the same
  colour in every preview of a model. Label values that are not in the class list are shown as ``label N``.
* Labels are drawn as a translucent fill with a solid outline, over a CT window of W400 L40 HU (abdomen);
  images that do not look like CT (1st percentile above -500) use their own 0.5-99.5 percentile range.

:func:`render_preview` is pure (arrays in, :class:`Preview` out: PNG bytes, the RGB pixels and what was
drawn where); :func:`write_preview_png` does the atomic write.
"""
from __future__ import annotations

import colorsys
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..io.geometry import Geometry, apply_reorientation, plan_reorientation, reoriented_geometry
from ..utils.atomic import atomic_write_bytes

__all__ = ["Preview", "PreviewPanel", "LegendEntry", "render_preview", "write_preview_png", "class_colour",
           "THIN_RATIO", "THIN_AXIAL", "THICK_AXIAL"]

# Superior-inferior extent below this fraction of the right-left extent: a coronal or sagittal view would be a
# strip (a 20-slice 2 mm CT is 40 mm tall and 500 mm wide), so only axial slices are shown.
THIN_RATIO = 0.4
THIN_AXIAL = 6    # axial slices of a thin volume's contact sheet (3 per row)
THICK_AXIAL = 6   # axial slices under a thick volume's coronal and sagittal overview (3 per row)
CT_WINDOW = (-160.0, 240.0)  # HU: abdomen soft-tissue window, width 400 centred on 40

# Distinct colours that stand out on a grey CT (Trubetskoy's 20 distinct colours without the greys, black,
# white and navy, which vanish on CT); class n gets _PALETTE[n], later classes golden-ratio hues.
_PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
            "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1")
_FILL_ALPHA = 0.35       # translucent fill: the anatomy under a label stays readable
_OUTLINE_PX = 2          # solid outline width in display pixels
_LINE_RGB = (255, 255, 0)  # reference lines on the overviews (where the axial slices are)
_LETTER_COLOUR = "#ffff66"

# Layout in display pixels (the PNG is rendered at 100 dpi, so 1 pt = 100/72 px).
_DPI = 100
_MARGIN = 12      # outer margin
_LETTER = 22      # band around every panel holding its orientation letters
_PANEL_TITLE = 20  # line above every panel
_GAP = 6          # between panel cells
_TITLE = 46       # figure title (two lines)
_LEGEND_W = 270
_LEGEND_ROW = 22
_MAX_PANEL_H = 560


@dataclass(frozen=True)
class LegendEntry:
    """One legend line: label ``value`` in the label map, class ``name``, ``rgb`` colour (0-255)."""

    value: int
    name: str
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class PreviewPanel:
    """One drawn slice.

    ``view`` is ``"axial"``, ``"coronal"`` or ``"sagittal"``. ``axis`` is the array axis of the *file*
    (0 = i, 1 = j, 2 = k) normal to the slice and ``index`` the slice's voxel index along it, so
    ``labels[(slice(None),) * axis + (index,)]`` is the slice shown. ``position_mm`` is the world (LPS)
    coordinate of the slice along its normal (LPS z for axial: superior positive). ``letters`` maps
    ``"left"``, ``"right"``, ``"top"``, ``"bottom"`` to the anatomical direction at that edge of the panel.
    ``box_px`` is the panel's image area in the PNG: ``(x0, y0, x1, y1)`` pixels from the top-left corner,
    ``x1``/``y1`` exclusive. ``classes`` are the names of the classes with a voxel in this slice.
    """

    view: str
    number: int
    axis: int
    index: int
    position_mm: float
    letters: dict
    box_px: tuple[int, int, int, int]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Preview:
    """A rendered preview: ``png`` bytes, ``pixels`` (height, width, 3) uint8 RGB of the same image, and what
    was drawn: ``layout`` (``"axial sheet"`` or ``"overview + axial"``), ``panels``, ``legend`` (the classes
    shown, in class order), ``not_shown`` (names of classes in the volume but in no shown slice) and
    ``legend_box_px`` (the legend swatches' area, same convention as :attr:`PreviewPanel.box_px`)."""

    png: bytes
    pixels: np.ndarray
    layout: str
    panels: tuple[PreviewPanel, ...]
    legend: tuple[LegendEntry, ...]
    not_shown: tuple[str, ...]
    legend_box_px: tuple[int, int, int, int]

    @property
    def size_px(self) -> tuple[int, int]:
        """(width, height) of the PNG in pixels."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


def class_colour(n: int) -> tuple[int, int, int]:
    """RGB (0-255) of the class at position ``n`` (0-based) of a class list."""
    if n < len(_PALETTE):
        h = _PALETTE[n].lstrip("#")
        return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
    r, g, b = colorsys.hsv_to_rgb((n * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def render_preview(image: np.ndarray, geometry: Geometry, label_map: Optional[np.ndarray] = None,
                   class_names: Optional[Sequence[str]] = None, class_values: Optional[Sequence[int]] = None,
                   masks: Optional[np.ndarray] = None, title: str = "",
                   window: Optional[tuple[float, float]] = None, width_px: int = 1400) -> Preview:
    """Render the preview of one case (see the module docstring for what it shows).

    Args:
        image: (i, j, k) intensities in file voxel order (HU for CT), as :func:`suprem_nn.io.read_image` returns.
        geometry: the image's geometry (spacing in mm, LPS direction cosines).
        label_map: (i, j, k) integer label values on the same grid, or None when ``masks`` are given.
        class_names / class_values: the classes and their values in ``label_map`` (class ``n`` of this list
            gets colour :func:`class_colour` (n)). Values present in ``label_map`` but not listed are drawn as
            ``label N``; without a list every nonzero value is such a class.
        masks: (K, i, j, k) per-class masks (multi-label predictions, may overlap), one per class of the list;
            used instead of ``label_map`` for what is drawn, later classes drawn over earlier ones.
        title: first line of the figure title (the case id).
        window: (low, high) display window in image units; default: W400 L40 HU for CT, else percentiles.
        width_px: PNG width in pixels (the height follows the layout).
    """
    image = np.asarray(image)
    if image.ndim != 3 or tuple(image.shape) != tuple(geometry.shape):
        raise ValueError(f"image shape {image.shape} does not match the geometry's {tuple(geometry.shape)}")
    if label_map is None and masks is None:
        label_map = np.zeros(image.shape, dtype=np.uint8)
    if masks is None:
        label_map = _integer_labels(np.asarray(label_map))
        if label_map.shape != image.shape:
            raise ValueError(f"label map shape {label_map.shape} differs from the image's {image.shape}")
    names = list(class_names or [])
    values = [int(v) for v in (class_values if class_values is not None else range(1, len(names) + 1))]
    if len(values) != len(names):
        raise ValueError(f"{len(names)} class names but {len(values)} class values")
    if masks is not None and len(masks) != len(names):
        raise ValueError(f"{len(masks)} masks but {len(names)} classes")

    # Display frame: array axes towards patient Left, Posterior, Superior. Columns of an axial panel then run
    # right -> left and its rows anterior -> posterior: the radiological convention.
    reo = plan_reorientation(geometry, "LPS")
    dgeo = reoriented_geometry(geometry, reo)
    vol = apply_reorientation(image, reo)
    lab = apply_reorientation(np.asarray(label_map), reo) if masks is None else None
    msk = apply_reorientation(np.asarray(masks), reo) if masks is not None else None
    sp = np.asarray(dgeo.spacing, dtype=np.float64)
    ext = sp * np.asarray(vol.shape)  # mm along L, P, S

    axial_counts = _slice_counts(lab, msk, 2)  # (axial slices, label values or masks) voxels
    if msk is None:
        present_values = [int(v) for v in np.nonzero(axial_counts.sum(0))[0] if v != 0]
        extra = [v for v in present_values if v not in values]
        names, values = names + [f"label {v}" for v in extra], values + extra
    colours = [class_colour(n) for n in range(len(values))]

    thin = ext[2] < THIN_RATIO * ext[0]
    # per display axis: (slices, classes) voxel counts of each listed class; coronal and sagittal counts (a pass
    # over the volume each) only when those views are drawn
    per_class = {a: _class_columns(axial_counts if a == 2 else _slice_counts(lab, msk, a), values, msk is not None)
                 for a in ((2,) if thin else (0, 1, 2))}
    n_axial = min(THIN_AXIAL if thin else THICK_AXIAL, vol.shape[2])
    axial = sorted(_spread_slices(per_class[2], n_axial), reverse=True)  # superior first
    specs = []  # (view, display axis, display index)
    if not thin:
        specs += [("coronal", 1, _best_slice(per_class[1])), ("sagittal", 0, _best_slice(per_class[0]))]
    specs += [("axial", 2, z) for z in axial]

    lo, hi = window if window is not None else _auto_window(image)
    panels_px = _layout(specs, ext, width_px)
    width, height = panels_px["size"]
    shown_classes: set[int] = set()
    drawn = []
    for (view, a, idx), box in zip(specs, panels_px["boxes"]):
        ct2d, lab2d, msk2d = _slice(vol, lab, msk, view, idx)
        h, w = box[3] - box[1], box[2] - box[0]
        in_slice = [c for c in range(len(values)) if per_class[a][idx, c] > 0]
        shown_classes.update(in_slice)
        rgb = _compose(_resample(ct2d, h, w, 1), lo, hi,
                       _resample(lab2d, h, w, 0) if lab2d is not None else None,
                       _resample(msk2d, h, w, 0) if msk2d is not None else None, values, colours, in_slice)
        if view != "axial":
            _reference_lines(rgb, vol.shape[2], axial)
        number = axial.index(idx) + 1 if view == "axial" else 0
        file_axis = int(reo.permutation[a])
        file_index = int(vol.shape[a] - 1 - idx if reo.flips[a] else idx)
        drawn.append((rgb, PreviewPanel(view, number, file_axis, file_index, _position_mm(dgeo, a, idx),
                                        _edge_letters(dgeo, view), box,
                                        tuple(names[c] for c in in_slice))))

    legend = tuple(LegendEntry(values[c], names[c], colours[c]) for c in sorted(shown_classes))
    in_volume = [c for c in range(len(values)) if per_class[2][:, c].sum() > 0]
    not_shown = tuple(names[c] for c in in_volume if c not in shown_classes)
    header = _header(title, geometry, lo, hi, thin)
    pixels, legend_box = _draw(width, height, drawn, legend, not_shown, header, axial, vol.shape[2], panels_px)
    return Preview(_encode_png(pixels), pixels, "axial sheet" if thin else "overview + axial",
                   tuple(p for _, p in drawn), legend, not_shown, legend_box)


def write_preview_png(path: Path, image: np.ndarray, geometry: Geometry, **kwargs) -> Preview:
    """:func:`render_preview` (same keyword arguments) and write its PNG to ``path`` atomically.

    Parameters
    ----------
    path : Path
        The PNG file.
    image : np.ndarray
        ``[i, j, k]`` image in file voxel order (CT in HU).
    geometry : Geometry
        Its grid (spacing in mm, LPS direction), which sets the orientation letters and aspect.

    Returns
    -------
    Preview
        What :func:`render_preview` returned.
    """
    preview = render_preview(image, geometry, **kwargs)
    atomic_write_bytes(Path(path), preview.png)
    return preview


# ----------------------------------------------------------------------------------------------------------------
# choosing slices


def _slice_counts(lab, msk, axis: int) -> np.ndarray:
    """Voxels of every label value (label map: columns = values 0..max) or of every mask (masks: columns =
    classes) in each slice normal to display ``axis``: shape (slices, columns)."""
    if msk is not None:
        other = tuple(1 + b for b in range(3) if b != axis)
        return np.moveaxis(np.count_nonzero(msk, axis=other), 0, 1) if msk.shape[0] else \
            np.zeros((msk.shape[1 + axis], 0), dtype=np.int64)
    top = int(lab.max()) + 1 if lab.size else 1
    # basic indexing: np.take on the reoriented view (negative strides) would copy the whole volume per slice
    return np.stack([np.bincount(lab[(slice(None),) * axis + (s,)].ravel(), minlength=top)
                     for s in range(lab.shape[axis])])


def _integer_labels(label_map: np.ndarray) -> np.ndarray:
    """The label map as non-negative integers below 65536 (float files holding whole numbers are accepted, as
    some tools save label maps as float); anything else is a ValueError."""
    if label_map.dtype.kind == "b":
        return label_map.astype(np.uint8)
    if label_map.dtype.kind == "f":
        if not np.all(np.isfinite(label_map)) or np.any(label_map != np.round(label_map)):
            raise ValueError("label map holds non-integer values")
        label_map = label_map.astype(np.int64)
    if label_map.dtype.kind not in "ui":
        raise ValueError(f"label map must hold integers, got dtype {label_map.dtype}")
    if label_map.size and (label_map.min() < 0 or label_map.max() >= 1 << 16):
        raise ValueError(f"label values must lie in 0..65535, got {label_map.min()}..{label_map.max()}")
    return label_map


def _class_columns(counts: np.ndarray, values: list[int], from_masks: bool) -> np.ndarray:
    """(slices, classes) voxel counts of each listed class."""
    if from_masks:
        return counts
    out = np.zeros((counts.shape[0], len(values)), dtype=np.int64)
    for c, v in enumerate(values):
        if 0 < v < counts.shape[1]:
            out[:, c] = counts[:, v]
    return out


def _best_slice(per_class: np.ndarray) -> int:
    """The slice holding the most classes, ties broken by the largest labelled area; the middle when empty."""
    if per_class.size == 0 or not per_class.any():
        return per_class.shape[0] // 2
    n_classes = (per_class > 0).sum(1)
    area = per_class.sum(1)
    return int(np.lexsort((-np.arange(len(area)), area, n_classes))[-1])


def _spread_slices(per_class: np.ndarray, n: int) -> list[int]:
    """``n`` slice indices: first greedily the slices that show classes not yet shown (most new classes, then
    their area), then the slices farthest from those chosen, within the labelled extent."""
    n_slices = per_class.shape[0]
    if n >= n_slices:
        return list(range(n_slices))
    labelled = np.nonzero(per_class.sum(1) > 0)[0] if per_class.size else np.array([], dtype=int)
    first, last = (int(labelled[0]), int(labelled[-1])) if len(labelled) else (0, n_slices - 1)
    present = per_class > 0
    chosen: list[int] = []
    uncovered = present.any(0)
    while len(chosen) < n and uncovered.any():
        new = present[:, uncovered].sum(1)
        area = per_class[:, uncovered].sum(1)
        z = int(np.lexsort((area, new))[-1])
        chosen.append(z)
        uncovered &= ~present[z]
    while len(chosen) < n:
        # n < n_slices, so when the labelled extent is used up some other slice is still free
        pool = [s for s in range(first, last + 1) if s not in chosen] or \
            [s for s in range(n_slices) if s not in chosen]
        if chosen:
            score = [min(abs(s - c) for c in chosen) for s in pool]
        else:  # nothing labelled: start from the middle of the extent
            score = [-abs(s - (first + last) / 2.0) for s in pool]
        chosen.append(int(pool[int(np.argmax(score))]))
    return chosen


# ----------------------------------------------------------------------------------------------------------------
# geometry of the panels


def _slice(vol, lab, msk, view: str, idx: int):
    """The 2D arrays (masks: (K, rows, columns)) of one panel with row 0 at the top and column 0 at the left of
    the screen. Display axes: 0 towards Left, 1 Posterior, 2 Superior."""
    def cut(a):
        if a is None:
            return None
        lead = a.ndim - 3
        if view == "axial":    # rows anterior -> posterior, columns right -> left
            s = a[(slice(None),) * lead + (slice(None), slice(None), idx)]
            return np.swapaxes(s, -1, -2)
        if view == "coronal":  # rows superior -> inferior, columns right -> left
            s = a[(slice(None),) * lead + (slice(None), idx, slice(None))]
            return np.flip(np.swapaxes(s, -1, -2), -2)
        s = a[(slice(None),) * lead + (idx, slice(None), slice(None))]  # sagittal: rows S -> I, columns A -> P
        return np.flip(np.swapaxes(s, -1, -2), -2)
    return cut(vol), cut(lab), cut(msk)


def _screen_axes(view: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(display axis, sign) that grows towards the screen's right and towards its bottom."""
    return {"axial": ((0, 1), (1, 1)), "coronal": ((0, 1), (2, -1)), "sagittal": ((1, 1), (2, -1))}[view]


def _direction_letters(v: np.ndarray) -> str:
    """Anatomical letters of LPS world vector ``v``: the dominant one, then any component above sin(17 deg)."""
    order = np.argsort(-np.abs(v))
    letters = ""
    for w in order:
        if w == order[0] or abs(v[w]) > 0.3:
            letters += ("LPS" if v[w] > 0 else "RAI")[w]
    return letters


def _edge_letters(dgeo: Geometry, view: str) -> dict:
    """Letters at the four edges of a panel, from the reoriented direction cosines."""
    d = dgeo.direction_matrix
    (ra, rs), (da, ds) = _screen_axes(view)
    right, down = d[:, ra] * rs, d[:, da] * ds
    return {"left": _direction_letters(-right), "right": _direction_letters(right),
            "top": _direction_letters(-down), "bottom": _direction_letters(down)}


def _position_mm(dgeo: Geometry, axis: int, idx: int) -> float:
    """World (LPS) coordinate, in mm, of slice ``idx`` along its normal's dominant world axis."""
    d = dgeo.direction_matrix
    w = int(np.argmax(np.abs(d[:, axis])))
    point = np.asarray(dgeo.origin) + d[:, axis] * dgeo.spacing[axis] * idx
    return float(point[w])


def _position_text(view: str, mm: float) -> str:
    letter = {"axial": "SI", "coronal": "PA", "sagittal": "LR"}[view][0 if mm >= 0 else 1]
    return f"{letter} {abs(mm):.1f} mm"


def _layout(specs, ext: np.ndarray, width_px: int) -> dict:
    """Pixel boxes of the panels: overview panels (coronal, sagittal) share a row, axial panels go three to a
    row; every panel keeps its physical aspect ratio (mm)."""
    aspect = {"axial": ext[0] / ext[1], "coronal": ext[0] / ext[2], "sagittal": ext[1] / ext[2]}
    rows = []
    overview = [s for s in specs if s[0] != "axial"]
    axial = [s for s in specs if s[0] == "axial"]
    if overview:
        rows.append(overview)
    per_row = 3 if len(axial) > 4 or len(axial) == 3 else max(1, min(2, len(axial)))
    rows += [axial[i:i + per_row] for i in range(0, len(axial), per_row)]
    avail = width_px - _LEGEND_W - 2 * _MARGIN
    boxes, y = [], _MARGIN + _TITLE
    for row in rows:
        asp = [aspect[s[0]] for s in row]
        # axial rows are laid out for a full row of per_row panels so all axial panels have one size
        slots = max(len(row), per_row) if row[0][0] == "axial" else len(row)
        slot_asp = sum(asp) * slots / len(row)
        h = (avail - slots * 2 * _LETTER - (slots - 1) * _GAP) / slot_asp
        h = int(min(h, _MAX_PANEL_H))
        x = _MARGIN
        for a in asp:
            w = max(1, int(round(a * h)))
            x0, y0 = x + _LETTER, y + _PANEL_TITLE + _LETTER
            boxes.append((x0, y0, x0 + w, y0 + h))
            x += w + 2 * _LETTER + _GAP
        y += _PANEL_TITLE + 2 * _LETTER + h + _GAP
    return {"boxes": boxes, "size": (int(width_px), int(y + _MARGIN)), "legend_x": width_px - _LEGEND_W}


# ----------------------------------------------------------------------------------------------------------------
# pixels


def _auto_window(image: np.ndarray) -> tuple[float, float]:
    """W400 L40 for CT (HU), else the image's 0.5-99.5 percentiles (sampled: percentiles of a large volume
    would sort it all)."""
    flat = image.ravel()
    sample = flat[:: max(1, flat.size // 200_000)].astype(np.float32)
    if np.percentile(sample, 1) < -500:
        return CT_WINDOW
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _resample(a: Optional[np.ndarray], h: int, w: int, order: int) -> Optional[np.ndarray]:
    """``a`` (leading channels allowed) resampled to (h, w) display pixels: pixel centres mapped onto voxel
    centres, nearest neighbour (order 0, labels) or bilinear (order 1, intensities)."""
    if a is None:
        return None
    rows, cols = a.shape[-2:]
    r = (np.arange(h) + 0.5) * rows / h - 0.5
    c = (np.arange(w) + 0.5) * cols / w - 0.5
    if order == 0:
        ri = np.clip(np.floor(r + 0.5), 0, rows - 1).astype(np.intp)
        ci = np.clip(np.floor(c + 0.5), 0, cols - 1).astype(np.intp)
        return a[..., ri[:, None], ci[None, :]]
    a = a.astype(np.float32)
    r, c = np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)
    r0, c0 = np.floor(r).astype(np.intp), np.floor(c).astype(np.intp)
    r1, c1 = np.minimum(r0 + 1, rows - 1), np.minimum(c0 + 1, cols - 1)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    top = a[r0][:, c0] * (1 - fc) + a[r0][:, c1] * fc
    bottom = a[r1][:, c0] * (1 - fc) + a[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def _compose(ct: np.ndarray, lo: float, hi: float, lab, msk, values, colours, classes) -> np.ndarray:
    """(h, w, 3) uint8: the windowed grey image with every class of ``classes`` as fill plus outline."""
    from scipy import ndimage

    grey = np.clip((ct - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat(grey[..., None] * 255.0, 3, axis=2)
    for c in classes:  # class order: later (higher index) classes drawn over earlier ones where masks overlap
        m = (msk[c] > 0) if msk is not None else (lab == values[c])
        if not m.any():
            continue
        colour = np.asarray(colours[c], dtype=np.float64)
        rgb[m] = (1 - _FILL_ALPHA) * rgb[m] + _FILL_ALPHA * colour
        inner = ndimage.binary_erosion(m, iterations=_OUTLINE_PX, border_value=0)
        rgb[m & ~inner] = colour
    return np.round(rgb).astype(np.uint8)


def _reference_row(z: int, n_slices: int, n_rows: int) -> int:
    """Display row (from the top) of an overview panel of ``n_rows`` pixels where axial display slice ``z`` of
    ``n_slices`` lies (rows run superior -> inferior, display slice indices inferior -> superior)."""
    return int(np.clip(np.floor((n_slices - 1 - z + 0.5) * n_rows / n_slices), 0, n_rows - 1))


def _reference_lines(rgb: np.ndarray, n_axial_slices: int, axial: list[int]) -> None:
    """Dashed lines across an overview panel at the axial slices shown."""
    for z in axial:
        row = _reference_row(z, n_axial_slices, rgb.shape[0])
        dash = (np.arange(rgb.shape[1]) // 6) % 2 == 0
        rgb[row, dash] = _LINE_RGB


def _header(title: str, geometry: Geometry, lo: float, hi: float, thin: bool) -> str:
    sp = " x ".join(f"{s:g}" for s in geometry.spacing)
    shape = " x ".join(str(s) for s in geometry.shape)
    why = (f"superior-inferior extent under {THIN_RATIO:g} x right-left: axial slices only" if thin else
           "coronal and sagittal overview (yellow lines: the axial slices below)")
    line1 = f"{title}   {shape} voxels, {sp} mm, file orientation {geometry.orientation_code()}" if title else \
        f"{shape} voxels, {sp} mm, file orientation {geometry.orientation_code()}"
    window = f"window W{hi - lo:.0f} L{(hi + lo) / 2:.0f}" if (lo, hi) == CT_WINDOW else f"window {lo:.4g} to {hi:.4g}"
    return f"{line1}\nradiological convention (patient's left on the viewer's right)   {window}   {why}"


def _draw(width, height, drawn, legend, not_shown, header, axial, n_axial_slices, layout) -> tuple[np.ndarray, tuple]:
    """Render panels, letters, titles and legend with matplotlib (Agg) into an RGB array."""
    # A Figure on its own Agg canvas, not pyplot: no global backend switch (a notebook calling this keeps its
    # backend) and no figure registry to leak from in a long prediction run.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lx = layout["legend_x"]
    entries_h = _LEGEND_ROW * (len(legend) + 2) + (_LEGEND_ROW * (2 + len(not_shown)) if not_shown else 0)
    height = max(height, _MARGIN + _TITLE + entries_h + _MARGIN)
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(fig)

    def text(x, y, s, **kw):  # pixel coordinates from the top-left corner
        kw.setdefault("color", "white")
        fig.text(x / width, 1 - y / height, s, **kw)

    text(_MARGIN, _MARGIN, header, fontsize=10, va="top", ha="left", linespacing=1.5)
    for rgb, p in drawn:
        x0, y0, x1, y1 = p.box_px
        fig.figimage(rgb, xo=x0, yo=height - y1, origin="upper")
        name = f"{p.number}  axial" if p.view == "axial" else p.view
        where = f"{'ijk'[p.axis]}={p.index}   {_position_text(p.view, p.position_mm)}"
        text(x0 - _LETTER, y0 - _LETTER - 2, f"{name}   {where}", fontsize=10, va="bottom", ha="left")
        letter = dict(fontsize=13, fontweight="bold", color=_LETTER_COLOUR, va="center", ha="center")
        text(x0 - _LETTER / 2, (y0 + y1) / 2, p.letters["left"], **letter)
        text(x1 + _LETTER / 2, (y0 + y1) / 2, p.letters["right"], **letter)
        text((x0 + x1) / 2, y0 - _LETTER / 2, p.letters["top"], **letter)
        text((x0 + x1) / 2, y1 + _LETTER / 2, p.letters["bottom"], **letter)
        if p.view != "axial":
            n_rows = y1 - y0
            for number, z in enumerate(axial, 1):
                # same row as _reference_lines; the number sits just inside the panel's left edge
                row = _reference_row(z, n_axial_slices, n_rows)
                text(x0 + 3, y0 + row - 1, str(number), fontsize=8, color="#ffff00", va="bottom", ha="left")

    y = _MARGIN + _TITLE
    text(lx, y, "Labels shown" if legend else "No labels in these slices", fontsize=11, fontweight="bold",
         va="top", ha="left")
    y += _LEGEND_ROW + 4
    sw = 14
    box_top = y
    for e in legend:
        fig.figimage(np.broadcast_to(np.asarray(e.rgb, dtype=np.uint8), (sw, sw, 3)).copy(), xo=lx,
                     yo=height - (y + sw), origin="upper")
        text(lx + sw + 8, y + sw / 2, f"{e.name}  ({e.value})", fontsize=10, va="center", ha="left")
        y += _LEGEND_ROW
    legend_box = (lx, box_top, lx + sw, max(box_top, y - _LEGEND_ROW + sw))
    if not_shown:
        y += _LEGEND_ROW // 2
        text(lx, y, "In the volume, not in these slices:", fontsize=9, color="#bbbbbb", va="top", ha="left")
        for name in not_shown:
            y += _LEGEND_ROW * 0.8
            text(lx + 8, y, name, fontsize=9, color="#bbbbbb", va="top", ha="left")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    return pixels, legend_box


def _encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# files


def read_label_names(path: Path) -> tuple[list[str], list[int]]:
    """Class names and values from a JSON file: a dataset.json (``"labels": {name: value}``) or a
    ``{value: name}`` map (optionally under ``"labels"``, as ``labels_btcv13.json``); value 0 is dropped."""
    d = json.loads(Path(path).read_text())
    d = d.get("labels", d)
    pairs = []
    for k, v in d.items():
        if str(k).isdigit():
            pairs.append((int(k), str(v)))
        elif isinstance(v, int) and not isinstance(v, bool):  # nnU-Net region lists are not single values
            pairs.append((v, str(k)))
    pairs = sorted(p for p in pairs if p[0] != 0)
    return [n for _, n in pairs], [v for v, _ in pairs]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m suprem_nn.inference.preview IMAGE LABELS OUT.png [--names FILE] [--title TEXT]``."""
    import argparse

    from ..io.image_io import read_image, strip_ending

    p = argparse.ArgumentParser(prog="python -m suprem_nn.inference.preview",
                                description="Write the preview PNG of an image and a label map on its grid.")
    p.add_argument("image", help="CT file or DICOM folder")
    p.add_argument("labels", help="label map on the image's grid")
    p.add_argument("output", help="PNG to write")
    p.add_argument("--names", help="JSON with the class names: dataset.json or {value: name}")
    p.add_argument("--title", help="first line of the title (default: the image's file name)")
    args = p.parse_args(argv)
    image, geometry = read_image(args.image)
    labels, label_geometry = read_image(args.labels)
    if not label_geometry.same_grid(geometry, atol=1e-3):
        p.error(f"{args.labels} is not on the grid of {args.image}")
    names, values = read_label_names(Path(args.names)) if args.names else ([], [])
    preview = write_preview_png(Path(args.output), image, geometry, label_map=labels, class_names=names,
                                class_values=values, title=args.title or strip_ending(args.image))
    print(f"{args.output}: {preview.size_px[0]} x {preview.size_px[1]} px, {preview.layout}, "
          f"classes shown: {', '.join(e.name for e in preview.legend) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
