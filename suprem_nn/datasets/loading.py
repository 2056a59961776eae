"""Load a raw dataset (layout detected automatically) and read one case's arrays."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DatasetError
from ..io.geometry import Geometry
from ..io.image_io import read_image
from .abdomenatlas import is_abdomenatlas_folder, load_abdomenatlas
from .checks import describe_values, grid_difference, is_binary, to_integer_labels
from .discovery import resolve_dataset_path
from .model import LAYOUT_ABDOMENATLAS, LAYOUT_NNUNET, Case, RawDataset
from .nnunet import is_nnunet_folder, load_nnunet

LAYOUTS_EXPLAINED = (
    "Expected either (1) an nnU-Net v2 raw dataset: dataset.json, imagesTr/CASE_0000.nii.gz (one file per "
    "channel), labelsTr/CASE.nii.gz and optionally imagesTs/; or (2) an AbdomenAtlas dataset: "
    "CASE/ct.nii.gz with CASE/segmentations/<organ>.nii.gz, one binary mask per organ")


def load_dataset(name_or_path: str | os.PathLike, raw_root: Optional[Path] = None) -> RawDataset:
    """Find the dataset (see :func:`resolve_dataset_path`), detect its layout and list its cases.

    Only dataset.json and the folder listing are read here. Problems of individual files (missing channels,
    duplicate case ids, badly named files) are collected in ``layout_problems`` and reported by
    :func:`verify_dataset`; a dataset.json with a wrong schema or a folder of neither layout raises
    :class:`DatasetError` at once.
    """
    folder = resolve_dataset_path(name_or_path, raw_root)
    if is_nnunet_folder(folder):
        return load_nnunet(folder, folder.name)
    if is_abdomenatlas_folder(folder):
        return load_abdomenatlas(folder, folder.name)
    if not any(not p.name.startswith(".") for p in folder.iterdir()):
        raise DatasetError(f"dataset folder is empty. {LAYOUTS_EXPLAINED}", folder)
    raise DatasetError(f"is neither an nnU-Net raw dataset nor an AbdomenAtlas dataset. {LAYOUTS_EXPLAINED}",
                       folder)


def read_case(case: Case, dataset: RawDataset, with_label: bool = True
              ) -> tuple[list[np.ndarray], Geometry, Optional[np.ndarray]]:
    """Arrays of one case: ``(images, geometry, label)``.

    ``images`` holds one array per channel in the stored dtype, indexed ``[i, j, k]``. ``label`` is, for
    nnU-Net, an integer map ``(X, Y, Z)`` with the dataset's raw values (None for a case without label or with
    ``with_label=False``); for AbdomenAtlas a uint8 stack ``(K, X, Y, Z)`` in ``dataset.class_names`` order,
    zeros where the case has no mask for a class (``case.masks`` says which classes are annotated).
    Raises DatasetError or ImageReadError naming the file when a file is unreadable or not on the grid of
    channel 0, or a label is not integer / a mask not binary.
    """
    images: list[np.ndarray] = []
    geometry: Optional[Geometry] = None
    for ch, path in enumerate(case.images):
        arr, geom = read_image(path)
        if geometry is None:
            geometry = geom
        else:
            _require_same_grid(geometry, geom, path, f"case {case.case_id}: channel {ch} is not on the grid of "
                                                     f"channel 0 ({case.images[0].name})")
        images.append(arr)
    if geometry is None:
        raise DatasetError(f"case {case.case_id} has no image file")
    label = None
    if with_label and dataset.layout == LAYOUT_NNUNET and case.label is not None:
        arr, geom = read_image(case.label)
        _require_same_grid(geometry, geom, case.label, f"case {case.case_id}: label is not on the image grid")
        label = to_integer_labels(arr, case.label)
    elif with_label and dataset.layout == LAYOUT_ABDOMENATLAS:
        label = np.zeros((len(dataset.class_names),) + tuple(geometry.shape), dtype=np.uint8)
        for k, name in enumerate(dataset.class_names):
            path = case.masks.get(name)
            if path is None:
                continue
            arr, geom = read_image(path)
            _require_same_grid(geometry, geom, path, f"case {case.case_id}: mask {name!r} is not on the CT grid")
            if not is_binary(arr):
                raise DatasetError(f"case {case.case_id}: mask {name!r} is not binary: values "
                                   f"{describe_values(np.unique(arr))}; expected 0 and 1", path)
            label[k] = arr != 0
    return images, geometry, label


def _require_same_grid(reference: Geometry, other: Geometry, path: Path, what: str) -> None:
    diff = grid_difference(reference, other)
    if diff:
        raise DatasetError(f"{what}: {diff}", path)
