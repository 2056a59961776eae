"""What ``suprem_evaluate`` is given on each side: a folder of cases, one case folder, or one segmentation file.

Accepted inputs (reference and prediction alike, mixed freely):

* a folder of cases, in any of these layouts (mixed freely; cases are matched by case id):

  * ``FOLDER/<case>.nii.gz`` (any ending of :data:`suprem_nn.io.image_io.IMAGE_ENDINGS`): one integer label
    map per case (nnU-Net ``labelsTr`` / prediction folders). The case id is the file name without its ending.
  * ``FOLDER/<case>/segmentations/<class name>.nii.gz``: AbdomenAtlas / SuPreM layout, one binary mask per
    class (masks may overlap). The case id is the folder name; classes are matched by name.
  * ``FOLDER/<case>/combined_labels.nii.gz``: an AbdomenAtlas label map, used when ``segmentations/`` is absent.

  Files that are not images (``summary.json``, ``*.npz``, ``plans.json``...) and hidden files are ignored.
* one case folder (``<case>/segmentations/`` or ``<case>/combined_labels.nii.gz`` inside it);
* one segmentation file (``ref.nii.gz``).

One file or case folder on one side and a folder of cases on the other evaluates that one case; one file on
each side pairs the two whatever their names.

Which entry of a folder is a case, and where its segmentation lies, is each dataset layout's
:meth:`~suprem_nn.datasets.layout.DatasetLayout.segmentation_of` (label map files: nnU-Net; case folders:
AbdomenAtlas), the same layout objects that read training data and prediction inputs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..datasets import layouts
from ..datasets.layout import CaseSegmentation
from ..errors import SupremError
from ..io.image_io import image_ending, strip_ending


@dataclass(frozen=True)
class Side:
    """One side of an evaluation as given: its cases, where its label names are looked for, and its form."""

    path: Path                       # what the user gave
    cases: dict                      # case id -> CaseSegmentation
    label_folder: Path               # the folder whose (and whose parents') label files describe this side
    single: bool                     # one file or one case folder, not a folder of cases


def find_side(path: Union[str, os.PathLike], role: str) -> Side:
    """Read one side of an evaluation as given (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        A folder of cases, one case folder or one segmentation file.
    role : str
        ``"reference"`` or ``"prediction"``, used in messages.

    Returns
    -------
    Side
        Its cases by id, the folder its label names are looked for in, and whether it is a single case.

    Raises
    ------
    SupremError
        Naming ``path`` when nothing fits.
    """
    path = Path(path)
    if not path.exists():
        raise SupremError(f"{role} {'file' if image_ending(path) else 'folder'} not found", path)
    if path.is_file():
        if not image_ending(path):
            raise SupremError(f"{role} file is not a segmentation image (expected .nii.gz, .nii, .nrrd, .mha, ...)",
                              path)
        case_id = path.parent.name if strip_ending(path) == "combined_labels" else strip_ending(path)
        return Side(path, {case_id: CaseSegmentation(case_id, label_map=path)}, path.parent, True)
    if not path.is_dir():
        raise SupremError(f"{role} path is neither a file nor a folder", path)
    single = _segmentation_of(path)   # a folder that is itself one case (AbdomenAtlas CASE/)
    if single is not None:
        # a case folder's label names sit beside the folder of cases holding it (AbdomenAtlas: none)
        return Side(path, {single.case_id: single}, path.parent, True)
    return Side(path, discover_cases(path, role), path, False)


# suprem_nn.inference.cases.SEG_SUFFIX (not imported: that package loads torch); tests/inference/test_output_names.py
# evaluates suprem_predict's outputs of plain-named images, so the two cannot drift apart
SEG_SUFFIX = "_seg"


def pair_sides(ref: Side, pred: Side) -> tuple[dict, dict]:
    """The cases of both sides to match by id.

    A single case on one side meets its namesake on the other, two single files are one case (named after the
    reference) whatever their names, and a prediction ``NAME_seg`` is the prediction of reference ``NAME``.

    Parameters
    ----------
    ref, pred : Side
        The reference and prediction sides (:func:`find_side`).

    Returns
    -------
    refs, preds : dict
        Case id -> :class:`CaseSegmentation` for each side.

    Raises
    ------
    SupremError
        A single case has no namesake on the other side.
    """
    refs, preds = dict(ref.cases), dict(pred.cases)
    if ref.single and pred.single:
        (rid, rsrc), (pid, psrc) = next(iter(refs.items())), next(iter(preds.items()))
        return {rid: rsrc}, {rid: CaseSegmentation(rid, psrc.label_map, psrc.masks, psrc.folder)}
    # suprem_predict names the label map of a plain-named image NAME_seg.nii.gz (inference/cases.py): it is the
    # prediction of reference NAME when the reference side has NAME and no NAME_seg
    for pid in [p for p in preds if p.endswith(SEG_SUFFIX)]:
        rid = pid[: -len(SEG_SUFFIX)]
        if rid in refs and pid not in refs and rid not in preds:
            src = preds.pop(pid)
            preds[rid] = CaseSegmentation(rid, src.label_map, src.masks, src.folder)
    for one, other, role in ((ref, pred, "prediction"), (pred, ref, "reference")):
        if one.single and not other.single:
            case_id = next(iter(refs if one is ref else preds))   # after the NAME_seg renaming above
            if case_id not in other.cases:
                raise SupremError(f"no {role} for case '{case_id}' ({one.path}); the {role} folder holds "
                                  f"{_preview(sorted(other.cases))}", other.path)
            if other is pred:
                preds = {case_id: preds[case_id]}
            else:
                refs = {case_id: refs[case_id]}
    return refs, preds


def discover_cases(folder: Union[str, os.PathLike], role: str = "reference") -> dict[str, CaseSegmentation]:
    """Every case segmentation in a folder of cases (see the module docstring).

    Parameters
    ----------
    folder : str or os.PathLike
        A folder of label map files and/or AbdomenAtlas case folders.
    role : str
        ``"reference"`` or ``"prediction"``, used in messages.

    Returns
    -------
    dict
        Case id -> :class:`CaseSegmentation`.

    Raises
    ------
    SupremError
        The folder is missing, holds no segmentation, or holds one case twice.
    """
    folder = Path(folder)
    if not folder.exists():
        raise SupremError(f"{role} folder not found", folder)
    if not folder.is_dir():
        raise SupremError(f"{role} path is not a folder", folder)
    found: dict[str, CaseSegmentation] = {}

    def add(src: CaseSegmentation, where: Path) -> None:
        if src.case_id in found:
            raise SupremError(f"case '{src.case_id}' appears twice in the {role} folder "
                              f"({found[src.case_id].display} and {where}); keep one", folder)
        found[src.case_id] = src

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        src = _segmentation_of(entry)
        if src is not None:
            add(src, src.folder / "segmentations" if src.masks else src.label_map)
    if not found:
        raise SupremError(f"no {role} segmentations found (expected <case>.nii.gz files, <case>/segmentations/"
                          "<class>.nii.gz or <case>/combined_labels.nii.gz)", folder)
    return found


def _segmentation_of(entry: Path):
    """The case segmentation at ``entry`` in the first layout that reads one there, or None."""
    return next((s for s in (layout.segmentation_of(entry) for layout in layouts.LAYOUTS) if s is not None), None)


def _preview(items: list, n: int = 5) -> str:
    if not items:
        return "none"
    head = ", ".join(items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")
