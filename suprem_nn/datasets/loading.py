"""Load a raw dataset (layout detected automatically) and read one case's arrays."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DatasetError
from ..io.geometry import Geometry
from ..io.image_io import read_image
from .checks import require_same_grid
from .discovery import resolve_dataset_path
from . import layouts
from .model import RawCase, RawDataset

LAYOUTS_EXPLAINED = (
    "Expected either (1) an nnU-Net v2 raw dataset: dataset.json, imagesTr/CASE_0000.nii.gz (one file per "
    "channel), labelsTr/CASE.nii.gz and optionally imagesTs/; or (2) an AbdomenAtlas dataset: "
    "CASE/ct.nii.gz with CASE/segmentations/<organ>.nii.gz, one binary mask per organ")


def load_dataset(name_or_path: str | os.PathLike, raw_root: Optional[Path] = None) -> RawDataset:
    """Find the dataset (see :func:`resolve_dataset_path`), detect its layout and list its cases.

    Only dataset.json and the folder listing are read here. Problems of individual files (missing channels,
    duplicate case ids, badly named files) are collected in ``layout_problems`` and reported by
    :func:`verify_dataset`.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A dataset folder, or a name / numeric id looked up under ``raw_root``.
    raw_root : Path, optional
        Where names are looked up (default: ``SUPREM_RAW``).

    Returns
    -------
    RawDataset
        The dataset in the first layout of :data:`~suprem_nn.datasets.layouts.LAYOUTS` that recognises the folder.

    Raises
    ------
    DatasetError
        No such dataset, a dataset.json with a wrong schema, or a folder of no known layout.
    """
    folder = resolve_dataset_path(name_or_path, raw_root)
    for layout in layouts.LAYOUTS:   # read at call time: the list is the one place layouts are named
        if layout.is_dataset(folder):
            return layout.load(folder, folder.name)
    if not any(not p.name.startswith(".") for p in folder.iterdir()):
        raise DatasetError(f"dataset folder is empty. {LAYOUTS_EXPLAINED}", folder)
    raise DatasetError(f"is neither an nnU-Net raw dataset nor an AbdomenAtlas dataset. {LAYOUTS_EXPLAINED}",
                       folder)


def read_case(case: RawCase, dataset: RawDataset, with_label: bool = True
              ) -> tuple[list[np.ndarray], Geometry, Optional[np.ndarray]]:
    """Arrays of one case: ``(images, geometry, label)``.

    Parameters
    ----------
    case : RawCase
        A case of ``dataset``.
    dataset : RawDataset
        The dataset; its layout reads the annotation (:meth:`DatasetLayout.read_annotation`).
    with_label : bool
        False skips the annotation (``label`` is None).

    Returns
    -------
    images : list of numpy.ndarray
        One array per channel in the stored dtype, indexed ``[i, j, k]``.
    geometry : Geometry
        The grid of channel 0 (spacing and origin in mm).
    label : numpy.ndarray or None
        nnU-Net: an integer map ``(i, j, k)`` with the dataset's raw values (None for a case without label);
        AbdomenAtlas: a uint8 stack ``(K, i, j, k)`` in ``dataset.class_names`` order, zeros where the case has
        no mask for a class (``case.masks`` says which classes are annotated).

    Raises
    ------
    DatasetError or ImageReadError
        Naming the file, when a file is unreadable or not on the grid of channel 0, or a label is not integer /
        a mask not binary.
    """
    images: list[np.ndarray] = []
    geometry: Optional[Geometry] = None
    for ch, path in enumerate(case.images):
        arr, geom = read_image(path)
        if geometry is None:
            geometry = geom
        else:
            require_same_grid(geometry, geom, path, f"case {case.case_id}: channel {ch} is not on the grid of "
                                                    f"channel 0 ({case.images[0].name})")
        images.append(arr)
    if geometry is None:
        raise DatasetError(f"case {case.case_id} has no image file")
    label = layouts.layout_of(dataset).read_annotation(case, dataset, geometry) if with_label else None
    return images, geometry, label
