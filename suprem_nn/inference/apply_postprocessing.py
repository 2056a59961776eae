"""``suprem_apply_postprocessing``: keep the largest 26-connected component of chosen labels in finished label maps.

For predictions that kept no probabilities (``nnUNetv2_apply_postprocessing`` works the same way, on
segmentation files). Inputs: ``<case>.nii.gz`` (or .nii/.nrrd/.mha) label maps in a folder, or AbdomenAtlas
``<CASE>/combined_labels.nii.gz``; each output mirrors the input's relative path and header. Voxels outside a
label's largest component become background (0), as in :mod:`suprem_nn.inference.segmentation`. Per-class mask
folders of multi-label predictions are not read here: overlaps live only in them, so post-process those from
their probabilities with ``suprem_ensemble --postprocess-from``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import SupremError
from ..io.image_io import image_ending, read_image, write_image
from ..utils.atomic import remove_stale_temporaries
from .components import keep_largest_component_per_label

log = logging.getLogger("suprem_nn.postprocess")


@dataclass
class PostprocessSummary:
    cases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def find_label_maps(folder: str | Path) -> dict[str, Path]:
    """Relative path -> file for every label map in ``folder`` (top level) and ``<CASE>/combined_labels.*``.

    Hidden entries are skipped.

    Raises
    ------
    SupremError
        If ``folder`` does not exist or holds no label map.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SupremError("input folder not found", folder)
    found = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and image_ending(p):
            found[p.name] = p
        elif p.is_dir():
            for q in sorted(p.iterdir()):
                if q.is_file() and image_ending(q) and q.name[: -len(image_ending(q))] == "combined_labels":
                    found[f"{p.name}/{q.name}"] = q
    if not found:
        raise SupremError("no label maps here (<case>.nii.gz files or <CASE>/combined_labels.nii.gz)", folder)
    return found


def postprocess_folder(input: str | Path, output: str | Path, label_values: Sequence[int], overwrite: bool = False,
                       progress: bool = True) -> PostprocessSummary:
    """Write every label map of ``input`` to ``output`` with ``label_values`` reduced to their largest component.

    Parameters
    ----------
    input : str or Path
        Folder of ``<case>.nii.gz`` label maps or ``<CASE>/combined_labels.nii.gz``; never modified.
    output : str or Path
        Output folder (must differ from ``input``); the same relative paths, each on its input's grid.
    label_values : sequence of int
        Labels that keep only their largest 26-connected component (the rest of each becomes 0).
    overwrite : bool
        Redo outputs that exist; without it they are skipped.
    progress : bool
        Show a progress bar.

    Returns
    -------
    PostprocessSummary
        Relative paths written (``cases``) and skipped (``skipped``).

    Raises
    ------
    SupremError
        If input and output are the same folder, the input holds no label map, or a file holds non-integer or
        negative values.
    """
    from ..utils.progress import track

    inp, out = Path(input), Path(output)
    if inp.resolve() == out.resolve():
        raise SupremError("the output folder must differ from the input folder (inputs are never overwritten)", out)
    values = [int(v) for v in label_values]
    summary = PostprocessSummary()
    for rel, path in track(find_label_maps(inp).items(), "post-processing", "case", enabled=progress):
        target = out / rel
        if target.exists() and not overwrite:
            summary.skipped.append(rel)
            continue
        remove_stale_temporaries(target.parent)
        arr, geometry = read_image(path)
        if arr.dtype.kind not in "iub" and not np.array_equal(arr, np.round(arr)):
            raise SupremError("holds non-integer values; expected a label map", path)
        if arr.size and float(arr.min()) < 0:
            raise SupremError(f"holds negative value {arr.min()}; expected a label map", path)
        labels = np.asarray(arr).astype(_label_dtype(arr), copy=True)
        keep_largest_component_per_label(labels, values)
        write_image(labels, geometry, target)
        summary.cases.append(rel)
    if summary.skipped:
        log.info("%d case(s) already post-processed, skipped (use --overwrite to redo them)", len(summary.skipped))
    return summary


def _label_dtype(arr: np.ndarray) -> type:
    top = int(arr.max(initial=0)) if arr.size else 0
    return np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int64


def values_for_classes(names: Sequence[str], class_names: Sequence[str], label_values: Sequence[int],
                       where: Optional[Path] = None) -> list[int]:
    """Label values of ``names`` given the class list of an instructions file or plan.

    Parameters
    ----------
    names : sequence of str
        Classes to look up.
    class_names, label_values : sequence
        The class list and the label value of each class.
    where : Path, optional
        File named in the error.

    Raises
    ------
    SupremError
        If a name is not in ``class_names``.
    """
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise SupremError(f"unknown classes {unknown} (known: {', '.join(class_names)})", where)
    return [int(label_values[list(class_names).index(n)]) for n in names]
