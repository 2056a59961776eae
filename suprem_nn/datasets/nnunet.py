"""The nnU-Net v2 raw layout: dataset.json, imagesTr/CASE_XXXX{ending}, labelsTr/CASE{ending}, imagesTs/.

The same layout serves as training data, as prediction input (a folder of ``CASE_XXXX`` images, as
``imagesTs/``; outputs ``<out>/CASE.nii.gz``) and as evaluation reference or prediction (``CASE.nii.gz`` label
maps, as ``labelsTr/``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DatasetError, SupremError
from ..io.geometry import Geometry
from ..io.image_io import IMAGE_ENDINGS, image_ending, read_image, strip_ending
from .checks import require_same_grid, to_integer_labels
from .layout import CaseSegmentation, DatasetLayout, PredictionCase, image_files
from .model import LAYOUT_NNUNET, Problem, RawCase, RawDataset

OUTPUT_ENDING = ".nii.gz"

_CHANNEL_FILE = re.compile(r"^(.+)_(\d{4})$")


@dataclass
class DatasetJson:
    channel_names: list[str]
    class_names: list[str]
    label_values: list[int]
    num_training: int
    file_ending: str


def is_nnunet_folder(folder: Path) -> bool:
    """Whether ``folder`` is an nnU-Net raw dataset: it holds ``dataset.json`` or ``imagesTr/``.

    Parameters
    ----------
    folder : Path
        An existing folder.

    Returns
    -------
    bool
        True for an nnU-Net raw dataset folder (complete or not; :func:`load_nnunet` reports what is missing).
    """
    return (folder / "dataset.json").is_file() or (folder / "imagesTr").is_dir()


def parse_dataset_json(path: Path) -> DatasetJson:
    """Read and check an nnU-Net ``dataset.json`` (v2, and v1's ``modality`` key).

    Parameters
    ----------
    path : Path
        The ``dataset.json`` file.

    Returns
    -------
    DatasetJson
        Channel names, foreground class names with their label values (sorted by value), numTraining and the
        file ending.

    Raises
    ------
    DatasetError
        Every schema error, naming the file and the field.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError("is not a UTF-8 text file (expected JSON)", path) from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", path) from None
    if not isinstance(d, dict):
        raise DatasetError(f"must hold a JSON object, got {_json_type(d)}", path)

    v1 = "channel_names" not in d and "modality" in d
    key = "modality" if v1 else "channel_names"
    if key not in d:
        raise DatasetError("missing field 'channel_names' (a mapping like {\"0\": \"CT\"}; the nnU-Net v1 key "
                           "'modality' is accepted too)", path)
    channel_names = _parse_channels(d[key], key, path)

    if "labels" not in d:
        raise DatasetError("missing field 'labels' (a mapping like {\"background\": 0, \"liver\": 1})", path)
    if "regions_class_order" in d:
        raise DatasetError("field 'regions_class_order' is present: region-based labels are not supported; "
                           "give every class one integer value in 'labels'", path)
    class_names, label_values = _parse_labels(d["labels"], path)

    if "numTraining" not in d:
        raise DatasetError("missing field 'numTraining' (the number of training cases, an integer)", path)
    num_training = d["numTraining"]
    if isinstance(num_training, bool) or not isinstance(num_training, int) or num_training < 0:
        raise DatasetError(f"field 'numTraining' must be a non-negative integer, got {num_training!r}", path)

    if "file_ending" in d:
        file_ending = d["file_ending"]
    elif v1:
        file_ending = ".nii.gz"  # nnU-Net v1 datasets are always .nii.gz
    else:
        raise DatasetError("missing field 'file_ending' (for example \".nii.gz\")", path)
    if not isinstance(file_ending, str):
        raise DatasetError(f"field 'file_ending' must be a string like \".nii.gz\", got {_json_type(file_ending)}",
                           path)
    if file_ending.lower() not in IMAGE_ENDINGS:
        raise DatasetError(f"field 'file_ending' is {file_ending!r}; supported 3D formats: "
                           f"{', '.join(IMAGE_ENDINGS)}", path)
    return DatasetJson(channel_names, class_names, label_values, num_training, file_ending)


def _parse_channels(value: Any, key: str, path: Path) -> list[str]:
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"field '{key}' must be a non-empty mapping from channel index to name like "
                           f"{{\"0\": \"CT\"}}, got {_json_type(value)}", path)
    indices = {}
    for k, name in value.items():
        if not (isinstance(k, str) and k.isdigit()):
            raise DatasetError(f"field '{key}': key {k!r} is not a channel index (\"0\", \"1\", ...)", path)
        if not isinstance(name, str):
            raise DatasetError(f"field '{key}': channel {k} must be named by a string, got {_json_type(name)}", path)
        indices[int(k)] = name
    if sorted(indices) != list(range(len(indices))):
        raise DatasetError(f"field '{key}': channel indices must be 0..{len(indices) - 1} without gaps, got "
                           f"{sorted(indices)}", path)
    return [indices[i] for i in range(len(indices))]


def _parse_labels(value: Any, path: Path) -> tuple[list[str], list[int]]:
    if not isinstance(value, dict) or not value:
        raise DatasetError("field 'labels' must be a non-empty mapping from class name to integer value like "
                           f"{{\"background\": 0, \"liver\": 1}}, got {_json_type(value)}", path)
    if all(isinstance(k, str) and k.isdigit() for k in value) and all(isinstance(v, str) for v in value.values()):
        value = {name: int(k) for k, name in value.items()}  # nnU-Net v1: {"0": "background", "1": "liver"}
    by_value: dict[int, str] = {}
    for name, v in value.items():
        if isinstance(v, (list, tuple)):
            raise DatasetError(f"field 'labels': class {name!r} maps to {v!r}: region-based labels are not "
                               "supported; give every class one integer value", path)
        if isinstance(v, bool) or not isinstance(v, int):
            raise DatasetError(f"field 'labels': class {name!r} must map to an integer label value, got {v!r} "
                               f"({_json_type(v)})", path)
        if v < 0:
            raise DatasetError(f"field 'labels': class {name!r} has negative value {v}", path)
        if name == "ignore":
            raise DatasetError("field 'labels': the nnU-Net 'ignore' label is not supported; remove it or "
                               "rename the class", path)
        if v in by_value:
            raise DatasetError(f"field 'labels': classes {by_value[v]!r} and {name!r} share value {v}", path)
        by_value[v] = name
    if 0 not in by_value:
        raise DatasetError("field 'labels' has no class with value 0; declare the background as "
                           "\"background\": 0", path)
    if "background" in value and value["background"] != 0:
        raise DatasetError(f"field 'labels': 'background' must be 0, got {value['background']}", path)
    fg = sorted(v for v in by_value if v != 0)
    if not fg:
        raise DatasetError("field 'labels' declares only the background; at least one class is needed", path)
    return [by_value[v] for v in fg], fg


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def load_nnunet(folder: Path, name: str) -> RawDataset:
    """List the cases of the nnU-Net raw dataset in ``folder``.

    Parameters
    ----------
    folder : Path
        The dataset folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, optionally ``imagesTs/``).
    name : str
        The dataset's name.

    Returns
    -------
    RawDataset
        Training cases from ``imagesTr/`` with their ``labelsTr/`` files, test cases from ``imagesTs/``;
        badly named or duplicate files are listed in ``layout_problems``.

    Raises
    ------
    DatasetError
        ``dataset.json`` or ``imagesTr/`` is missing, or ``dataset.json`` is invalid.
    """
    json_path = folder / "dataset.json"
    if not json_path.is_file():
        raise DatasetError("looks like an nnU-Net raw dataset (it has imagesTr/) but dataset.json is missing",
                           folder)
    meta = parse_dataset_json(json_path)
    if not (folder / "imagesTr").is_dir():
        raise DatasetError("nnU-Net raw dataset has no imagesTr/ folder (expected imagesTr/CASE_0000"
                           f"{meta.file_ending})", folder)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    cases = _scan_images(folder / "imagesTr", meta, problems, test=False)
    labels_dir = folder / "labelsTr"
    labels = _scan_labels(labels_dir, meta, problems) if labels_dir.is_dir() else {}
    case_ids = {c.case_id for c in cases}
    for c in cases:
        found = labels.get(c.case_id)
        c.label = found if found is not None else labels_dir / f"{c.case_id}{meta.file_ending}"
    for cid, p in sorted(labels.items()):
        if cid not in case_ids:
            hint = ""
            m = _CHANNEL_FILE.match(cid)
            if m and m.group(1) in case_ids:
                hint = f" (label files are named CASE{meta.file_ending}, without the _XXXX channel suffix)"
            problems.append(Problem(cid, p, f"label file has no image in imagesTr/{hint}"))
    test_cases = (_scan_images(folder / "imagesTs", meta, problems, test=True)
                  if (folder / "imagesTs").is_dir() else [])
    if meta.num_training != len(cases):
        warnings.append(Problem(None, json_path, f"numTraining is {meta.num_training} but imagesTr/ holds "
                                                 f"{len(cases)} cases"))
    return RawDataset(name=name, path=folder, layout=LAYOUT_NNUNET, channel_names=meta.channel_names,
                      class_names=meta.class_names, label_values=meta.label_values, cases=cases,
                      test_cases=test_cases, file_ending=meta.file_ending, num_training_declared=meta.num_training,
                      layout_problems=problems, layout_warnings=warnings)


def test_case_id(case_id: str) -> str:
    """How a test case (imagesTs) is named in problem reports.

    Parameters
    ----------
    case_id : str

    Returns
    -------
    str
        ``"<case_id> (imagesTs)"``.
    """
    return f"{case_id} (imagesTs)"


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _scan_images(folder: Path, meta: DatasetJson, problems: list[Problem], test: bool) -> list[RawCase]:
    n_channels = len(meta.channel_names)
    found: dict[str, dict[int, list[Path]]] = {}
    report_id = test_case_id if test else (lambda s: s)
    for p in _entries(folder):
        ending = image_ending(p.name)
        if p.is_dir():
            stem = p.name  # a DICOM series folder named CASE_XXXX
        elif ending is None:
            continue  # not an image (README, .json...), nnU-Net ignores these too
        else:
            stem = strip_ending(p.name)
        m = _CHANNEL_FILE.match(stem)
        if not m:
            what = "folder" if p.is_dir() else "file"
            problems.append(Problem(report_id(stem), p, f"{what} name lacks the _XXXX channel suffix (expected "
                                                       f"CASE_0000{meta.file_ending})"))
            continue
        cid, ch = m.group(1), int(m.group(2))
        if ch >= n_channels:
            problems.append(Problem(report_id(cid), p, f"channel {ch:04d} does not exist: dataset.json declares "
                                                       f"{n_channels} channel(s) ({', '.join(meta.channel_names)})"))
            continue
        found.setdefault(cid, {}).setdefault(ch, []).append(p)
    cases = []
    for cid in sorted(found):
        images = []
        for ch in range(n_channels):
            files = found[cid].get(ch, [])
            if not files:
                images.append(folder / f"{cid}_{ch:04d}{meta.file_ending}")  # missing; verification reports it
                continue
            files = sorted(files, key=lambda f: f.name.lower().endswith(meta.file_ending.lower()), reverse=True)
            if len(files) > 1:
                problems.append(Problem(report_id(cid), files[0], "duplicate case id: channel "
                                        f"{ch:04d} is given by {len(files)} entries: "
                                        f"{', '.join(f.name for f in files)}"))
            elif files[0].is_file() and not files[0].name.lower().endswith(meta.file_ending.lower()):
                problems.append(Problem(report_id(cid), files[0], "file ending differs from dataset.json "
                                        f"file_ending {meta.file_ending!r}"))
            images.append(files[0])
        cases.append(RawCase(cid, images))
    return cases


def _scan_labels(folder: Path, meta: DatasetJson, problems: list[Problem]) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for p in _entries(folder):
        if p.is_dir() or image_ending(p.name) is None:
            continue
        found.setdefault(strip_ending(p.name), []).append(p)
    labels = {}
    for cid, files in found.items():
        files = sorted(files, key=lambda f: f.name.lower().endswith(meta.file_ending.lower()), reverse=True)
        if len(files) > 1:
            problems.append(Problem(cid, files[0], f"duplicate case id: {len(files)} label files: "
                                                   f"{', '.join(f.name for f in files)}"))
        elif not files[0].name.lower().endswith(meta.file_ending.lower()):
            problems.append(Problem(cid, files[0], f"file ending differs from dataset.json file_ending "
                                                   f"{meta.file_ending!r}"))
        labels[cid] = files[0]
    return labels


class NnUNetRawLayout(DatasetLayout):
    """nnU-Net v2 raw: ``imagesTr/CASE_XXXX{ending}`` (one file per channel) and ``labelsTr/CASE{ending}`` maps."""

    name = LAYOUT_NNUNET
    multilabel_masks = False   # one exclusive label map per case
    no_cases_hint = "imagesTr/ holds no CASE_0000 image"

    def is_dataset(self, folder: Path) -> bool:
        """See :meth:`DatasetLayout.is_dataset`: :func:`is_nnunet_folder`."""
        return is_nnunet_folder(folder)

    def load(self, folder: Path, name: str) -> RawDataset:
        """See :meth:`DatasetLayout.load`: :func:`load_nnunet`."""
        return load_nnunet(folder, name)

    def read_annotation(self, case: RawCase, dataset: RawDataset, geometry: Geometry) -> Optional[np.ndarray]:
        """The case's label map ``(i, j, k)`` with the dataset's raw label values, or None without a label.

        Parameters
        ----------
        case : RawCase
            A case of ``dataset``.
        dataset : RawDataset
            The dataset (unused: a label map carries its own values).
        geometry : Geometry
            The grid of channel 0; the label map must lie on it.

        Returns
        -------
        numpy.ndarray or None
            An integer array ``(i, j, k)``.

        Raises
        ------
        DatasetError
            The label is off the image grid or holds non-integer values, naming the file.
        """
        if case.label is None:
            return None
        arr, geom = read_image(case.label)
        require_same_grid(geometry, geom, case.label, f"case {case.case_id}: label is not on the image grid")
        return to_integer_labels(arr, case.label)

    def prediction_cases(self, folder: Path, output: Path) -> Optional[list[PredictionCase]]:
        """A folder of ``CASE_XXXX`` images (as ``imagesTs/``); channels of a case are grouped and each case's
        label map goes to ``<output>/CASE.nii.gz``. See :meth:`DatasetLayout.prediction_cases`.

        Raises
        ------
        SupremError
            A case's channels have a gap (``_0000`` and ``_0002`` without ``_0001``).
        """
        groups: dict[str, list[tuple[int, Path]]] = {}
        for f in image_files(folder):
            m = _CHANNEL_FILE.match(strip_ending(f))
            if not m:
                return None  # plain names: not this layout
            groups.setdefault(m.group(1), []).append((int(m.group(2)), f))
        cases = []
        for cid in sorted(groups):
            chans = sorted(groups[cid])
            if [c for c, _ in chans] != list(range(len(chans))):
                raise SupremError(f"case '{cid}' has channels {[c for c, _ in chans]}; expected _0000.._"
                                  f"{len(chans) - 1:04d} without gaps", folder)
            cases.append(PredictionCase(cid, [f for _, f in chans], output / f"{cid}{OUTPUT_ENDING}", output))
        return cases or None

    def segmentation_of(self, entry: Path) -> Optional[CaseSegmentation]:
        """An image file is one case's label map, its case id the name without ending (as ``labelsTr/``).
        See :meth:`DatasetLayout.segmentation_of`."""
        if entry.is_file() and image_ending(entry):
            return CaseSegmentation(strip_ending(entry), label_map=entry)
        return None


NNUNET_RAW = NnUNetRawLayout()
