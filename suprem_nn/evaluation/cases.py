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
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..errors import SupremError
from ..io.image_io import image_ending, strip_ending


@dataclass(frozen=True)
class CaseSource:
    """Where one case's segmentation lives: a label map file, or one mask file per class name."""

    case_id: str
    label_map: Optional[Path] = None
    masks: dict = field(default_factory=dict)   # class name -> Path (AbdomenAtlas segmentations/)
    folder: Optional[Path] = None               # the case folder for the AbdomenAtlas layouts

    @property
    def display(self) -> str:
        return str(self.label_map) if self.label_map is not None else str(self.folder / "segmentations")


@dataclass(frozen=True)
class Side:
    """One side of an evaluation as given: its cases, where its label names are looked for, and its form."""

    path: Path                       # what the user gave
    cases: dict                      # case id -> CaseSource
    label_folder: Path               # the folder whose (and whose parents') label files describe this side
    single: bool                     # one file or one case folder, not a folder of cases


def find_side(path: Union[str, os.PathLike], role: str) -> Side:
    """Read one side as given (see the module docstring); SupremError naming ``path`` when nothing fits."""
    path = Path(path)
    if not path.exists():
        raise SupremError(f"{role} {'file' if image_ending(path) else 'folder'} not found", path)
    if path.is_file():
        if not image_ending(path):
            raise SupremError(f"{role} file is not a segmentation image (expected .nii.gz, .nii, .nrrd, .mha, ...)",
                              path)
        case_id = path.parent.name if strip_ending(path) == "combined_labels" else strip_ending(path)
        return Side(path, {case_id: CaseSource(case_id, label_map=path)}, path.parent, True)
    if not path.is_dir():
        raise SupremError(f"{role} path is neither a file nor a folder", path)
    single = _case_folder(path)
    if single is not None:
        # a case folder's label names sit beside the folder of cases holding it (AbdomenAtlas: none)
        return Side(path, {single.case_id: single}, path.parent, True)
    return Side(path, discover_cases(path, role), path, False)


# suprem_nn.inference.cases.SEG_SUFFIX (not imported: that package loads torch); tests/inference/test_output_names.py
# evaluates suprem_predict's outputs of plain-named images, so the two cannot drift apart
SEG_SUFFIX = "_seg"


def pair_sides(ref: Side, pred: Side) -> tuple[dict, dict]:
    """The cases of both sides to match by id: a single case on one side meets its namesake on the other, and
    two single files are one case (named after the reference) whatever their names."""
    refs, preds = dict(ref.cases), dict(pred.cases)
    if ref.single and pred.single:
        (rid, rsrc), (pid, psrc) = next(iter(refs.items())), next(iter(preds.items()))
        return {rid: rsrc}, {rid: CaseSource(rid, psrc.label_map, psrc.masks, psrc.folder)}
    # suprem_predict names the label map of a plain-named image NAME_seg.nii.gz (inference/cases.py): it is the
    # prediction of reference NAME when the reference side has NAME and no NAME_seg
    for pid in [p for p in preds if p.endswith(SEG_SUFFIX)]:
        rid = pid[: -len(SEG_SUFFIX)]
        if rid in refs and pid not in refs and rid not in preds:
            src = preds.pop(pid)
            preds[rid] = CaseSource(rid, src.label_map, src.masks, src.folder)
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


def discover_cases(folder: Union[str, os.PathLike], role: str = "reference") -> dict[str, CaseSource]:
    """Case id -> :class:`CaseSource` for every segmentation in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    if not folder.exists():
        raise SupremError(f"{role} folder not found", folder)
    if not folder.is_dir():
        raise SupremError(f"{role} path is not a folder", folder)
    found: dict[str, CaseSource] = {}

    def add(src: CaseSource, where: Path) -> None:
        if src.case_id in found:
            raise SupremError(f"case '{src.case_id}' appears twice in the {role} folder "
                              f"({found[src.case_id].display} and {where}); keep one", folder)
        found[src.case_id] = src

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and image_ending(entry):
            add(CaseSource(strip_ending(entry), label_map=entry), entry)
        elif entry.is_dir():
            src = _case_folder(entry)
            if src is not None:
                add(src, src.folder / "segmentations" if src.masks else src.label_map)
    if not found:
        raise SupremError(f"no {role} segmentations found (expected <case>.nii.gz files, <case>/segmentations/"
                          "<class>.nii.gz or <case>/combined_labels.nii.gz)", folder)
    return found


def _case_folder(entry: Path) -> Optional[CaseSource]:
    """The AbdomenAtlas case in folder ``entry`` (mask files, else ``combined_labels``), or None."""
    seg_dir = entry / "segmentations"
    masks: dict[str, Path] = {}
    if seg_dir.is_dir():
        for m in sorted(seg_dir.iterdir()):
            if m.is_file() and image_ending(m) and not m.name.startswith("."):
                name = strip_ending(m)
                if name in masks:
                    raise SupremError(f"two mask files for class '{name}' ({masks[name].name} and {m.name})", seg_dir)
                masks[name] = m
    if masks:
        return CaseSource(entry.name, masks=masks, folder=entry)
    combined = [p for p in sorted(entry.iterdir()) if p.is_file() and strip_ending(p) == "combined_labels"
                and image_ending(p)]
    if combined:
        return CaseSource(entry.name, label_map=combined[0], folder=entry)
    return None


def _preview(items: list, n: int = 5) -> str:
    if not items:
        return "none"
    head = ", ".join(items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")
