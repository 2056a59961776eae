"""The AbdomenAtlas layout: CASE/ct.nii.gz + CASE/segmentations/<organ>.nii.gz (one binary mask per organ).

The same layout serves as training data, as prediction input (outputs mirror it: ``<out>/CASE/combined_labels``
+ ``segmentations/``) and as evaluation reference or prediction (``CASE/segmentations/`` or
``CASE/combined_labels``). A case's CT is found by one rule, :func:`find_ct`, for all three.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DatasetError, SupremError
from ..io.geometry import Geometry
from ..io.image_io import image_ending, is_dicom_folder, read_image, strip_ending
from .checks import describe_values, is_binary, require_same_grid
from .layout import CaseSegmentation, DatasetLayout, PredictionCase
from .model import ABDOMENATLAS_ORDER, LAYOUT_ABDOMENATLAS, Problem, RawCase, RawDataset

SEGMENTATIONS = "segmentations"
COMBINED_LABELS = "combined_labels"
OUTPUT_ENDING = ".nii.gz"


def order_class_names(names) -> list[str]:
    """Class names in AbdomenAtlas 1.1 order for the names it knows, then the remaining names alphabetically.

    Parameters
    ----------
    names : iterable of str
        Mask names (duplicates allowed).

    Returns
    -------
    list of str
        Each name once; label value = position + 1.
    """
    names = set(names)
    known = [n for n in ABDOMENATLAS_ORDER if n in names]
    return known + sorted(names - set(known))


def ct_entries(case_dir: Path) -> list[Path]:
    """Every entry of a case folder that can be its CT: ``ct`` with any image ending, or a ``ct/`` DICOM folder.

    Parameters
    ----------
    case_dir : Path
        One case folder of an AbdomenAtlas dataset.

    Returns
    -------
    list of Path
        Sorted by name; more than one entry is a duplicate CT.
    """
    out = [p for p in case_dir.iterdir() if p.is_file() and image_ending(p.name) and strip_ending(p.name) == "ct"]
    if (case_dir / "ct").is_dir():
        out.append(case_dir / "ct")  # a DICOM series folder
    return sorted(out)


def find_ct(case_dir: Path) -> Optional[Path]:
    """The CT of an AbdomenAtlas case folder: ``ct.nii.gz`` when present, else the first of :func:`ct_entries`.

    Parameters
    ----------
    case_dir : Path
        One case folder.

    Returns
    -------
    Path or None
        ``ct.nii.gz``, ``ct.nii``, ``ct.nrrd``, ``ct.nhdr``, ``ct.mha``, ``ct.mhd`` or the DICOM folder ``ct/``;
        None when the folder holds no CT.
    """
    cts = ct_entries(case_dir)
    return sorted(cts, key=lambda p: p.name != "ct.nii.gz")[0] if cts else None


def _case_folders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def is_abdomenatlas_folder(folder: Path) -> bool:
    """Whether ``folder`` holds AbdomenAtlas case folders (a CT or a ``segmentations/`` folder inside one).

    Parameters
    ----------
    folder : Path
        An existing folder.

    Returns
    -------
    bool
        True when at least one non-hidden subfolder looks like an AbdomenAtlas case.
    """
    return any(ct_entries(d) or (d / SEGMENTATIONS).is_dir() for d in _case_folders(folder))


def load_abdomenatlas(folder: Path, name: str) -> RawDataset:
    """List the cases of the AbdomenAtlas dataset in ``folder``.

    Parameters
    ----------
    folder : Path
        The dataset folder, holding ``CASE/ct.nii.gz`` and ``CASE/segmentations/<organ>.nii.gz``.
    name : str
        The dataset's name.

    Returns
    -------
    RawDataset
        One :class:`RawCase` per case folder (CT as the single channel, masks in class order); the classes are
        every mask name found, in AbdomenAtlas 1.1 order (:func:`order_class_names`). Duplicate CTs or masks
        are listed in ``layout_problems``, folders without CT or masks in ``layout_warnings``.
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    cases: list[RawCase] = []
    for case_dir in _case_folders(folder):
        cid = case_dir.name
        cts = ct_entries(case_dir)
        seg_dir = case_dir / SEGMENTATIONS
        if not cts and not seg_dir.is_dir():
            warnings.append(Problem(cid, case_dir, "folder ignored: it holds neither ct.nii.gz nor "
                                                   f"{SEGMENTATIONS}/"))
            continue
        if not cts:
            ct = case_dir / "ct.nii.gz"  # missing; verification reports it
        else:
            ct = find_ct(case_dir)
            if len(cts) > 1:
                problems.append(Problem(cid, ct, f"duplicate CT: {len(cts)} entries: "
                                                 f"{', '.join(p.name for p in cts)}"))
        masks: dict[str, Path] = {}
        if seg_dir.is_dir():
            found: dict[str, list[Path]] = {}
            for p in sorted(seg_dir.iterdir()):
                if p.name.startswith(".") or not p.is_file() or image_ending(p.name) is None:
                    continue
                found.setdefault(strip_ending(p.name), []).append(p)
            for organ, files in sorted(found.items()):
                files = sorted(files, key=lambda p: not p.name.endswith(".nii.gz"))
                if len(files) > 1:
                    problems.append(Problem(cid, files[0], f"duplicate mask {organ!r}: "
                                                           f"{', '.join(p.name for p in files)}"))
                masks[organ] = files[0]
        if not masks:
            warnings.append(Problem(cid, seg_dir, "case has no masks: no class is annotated"))
        cases.append(RawCase(cid, [ct], None, masks))

    class_names = order_class_names({organ for c in cases for organ in c.masks})
    # Each case's masks in dataset class order, so iteration order is the same everywhere.
    for c in cases:
        c.masks = {n: c.masks[n] for n in class_names if n in c.masks}
    endings = Counter(image_ending(c.images[0].name) or "" for c in cases if not is_dicom_folder(c.images[0]))
    file_ending = endings.most_common(1)[0][0] if endings else ".nii.gz"
    return RawDataset(name=name, path=folder, layout=LAYOUT_ABDOMENATLAS, channel_names=["CT"],
                      class_names=class_names, label_values=list(range(1, len(class_names) + 1)), cases=cases,
                      test_cases=[], file_ending=file_ending, layout_problems=problems, layout_warnings=warnings)


class AbdomenAtlasLayout(DatasetLayout):
    """AbdomenAtlas: ``CASE/ct.nii.gz`` + ``CASE/segmentations/<organ>.nii.gz``, one binary mask per organ."""

    name = LAYOUT_ABDOMENATLAS
    multilabel_masks = True   # masks may overlap; SuPreM trains them with one sigmoid per class
    no_cases_hint = "no CASE/ct.nii.gz"

    def is_dataset(self, folder: Path) -> bool:
        """See :meth:`DatasetLayout.is_dataset`: :func:`is_abdomenatlas_folder`."""
        return is_abdomenatlas_folder(folder)

    def load(self, folder: Path, name: str) -> RawDataset:
        """See :meth:`DatasetLayout.load`: :func:`load_abdomenatlas`."""
        return load_abdomenatlas(folder, name)

    def read_annotation(self, case: RawCase, dataset: RawDataset, geometry: Geometry) -> np.ndarray:
        """The case's masks as a uint8 stack ``(K, i, j, k)`` in ``dataset.class_names`` order.

        Parameters
        ----------
        case : RawCase
            A case of ``dataset``.
        dataset : RawDataset
            The dataset (its class names fix the stack order).
        geometry : Geometry
            The CT's grid; every mask must lie on it.

        Returns
        -------
        numpy.ndarray
            uint8, 1 inside a mask; all zeros for a class the case has no mask for (``case.masks`` says which
            classes are annotated).

        Raises
        ------
        DatasetError
            A mask off the CT grid or not binary, naming the file.
        """
        label = np.zeros((len(dataset.class_names),) + tuple(geometry.shape), dtype=np.uint8)
        for k, name in enumerate(dataset.class_names):
            path = case.masks.get(name)
            if path is None:
                continue
            arr, geom = read_image(path)
            require_same_grid(geometry, geom, path, f"case {case.case_id}: mask {name!r} is not on the CT grid")
            if not is_binary(arr):
                raise DatasetError(f"case {case.case_id}: mask {name!r} is not binary: values "
                                   f"{describe_values(np.unique(arr))}; expected 0 and 1", path)
            label[k] = arr != 0
        return label

    def prediction_cases(self, folder: Path, output: Path) -> Optional[list[PredictionCase]]:
        """Case folders holding a CT (:func:`find_ct`); outputs go to ``<output>/CASE/combined_labels.nii.gz``
        with per-class masks in ``<output>/CASE/segmentations/``. See :meth:`DatasetLayout.prediction_cases`."""
        found = [(d, find_ct(d)) for d in _case_folders(folder)]
        cases = [PredictionCase(d.name, [ct], output / d.name / f"{COMBINED_LABELS}{OUTPUT_ENDING}", output / d.name,
                                atlas=True) for d, ct in found if ct is not None]
        return cases or None

    def segmentation_of(self, entry: Path) -> Optional[CaseSegmentation]:
        """A case folder's ``segmentations/<class>.*`` masks, else its ``combined_labels.*`` label map.
        See :meth:`DatasetLayout.segmentation_of`.

        Raises
        ------
        SupremError
            Two mask files for one class name (``liver.nii.gz`` and ``liver.nrrd``).
        """
        if not entry.is_dir():
            return None
        seg_dir = entry / SEGMENTATIONS
        masks: dict[str, Path] = {}
        if seg_dir.is_dir():
            for m in sorted(seg_dir.iterdir()):
                if m.is_file() and image_ending(m) and not m.name.startswith("."):
                    name = strip_ending(m)
                    if name in masks:
                        raise SupremError(f"two mask files for class '{name}' ({masks[name].name} and {m.name})",
                                          seg_dir)
                    masks[name] = m
        if masks:
            return CaseSegmentation(entry.name, masks=masks, folder=entry)
        combined = [p for p in sorted(entry.iterdir()) if p.is_file() and strip_ending(p) == COMBINED_LABELS
                    and image_ending(p)]
        if combined:
            return CaseSegmentation(entry.name, label_map=combined[0], folder=entry)
        return None


ABDOMENATLAS = AbdomenAtlasLayout()
