"""Data classes of a raw dataset: :class:`RawCase`, :class:`RawDataset` and :class:`Problem`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import DatasetError

LAYOUT_NNUNET = "nnunet"
LAYOUT_ABDOMENATLAS = "abdomenatlas"

# AbdomenAtlas 1.1 class order (label value = position + 1). AbdomenAtlas mask names that appear here take
# these positions; other names follow alphabetically. The same order is
# ``suprem_nn.networks.class_maps.ABDOMENATLAS_1_1`` (a test checks they agree).
ABDOMENATLAS_ORDER = (
    "aorta", "gall_bladder", "kidney_left", "kidney_right", "liver", "pancreas", "postcava", "spleen", "stomach",
    "adrenal_gland_left", "adrenal_gland_right", "bladder", "celiac_trunk", "colon", "duodenum", "esophagus",
    "femur_left", "femur_right", "hepatic_vessel", "intestine", "lung_left", "lung_right",
    "portal_vein_and_splenic_vein", "prostate", "rectum",
)


@dataclass
class RawCase:
    """One case of a raw training dataset: its image files and its annotation files, before anything is read."""

    case_id: str
    images: list[Path]            # one per channel, in channel order (a DICOM series folder is allowed)
    label: Optional[Path] = None  # nnU-Net: exclusive label map
    masks: dict[str, Path] = field(default_factory=dict)  # AbdomenAtlas: class name -> binary mask file

    def annotated_classes(self) -> list[str]:
        """AbdomenAtlas: the classes this case has a mask for (a class without a mask is "not annotated")."""
        return list(self.masks)


@dataclass
class Problem:
    """One thing wrong with a dataset. ``case_id`` is None for problems of the dataset as a whole."""

    case_id: Optional[str]
    path: Optional[Path]
    message: str

    def format(self, root: Optional[Path] = None) -> str:
        """The problem as one line: ``"case X: <file>: <problem>"``.

        Parameters
        ----------
        root : Path, optional
            The dataset folder; a file inside it is shown relative to it.

        Returns
        -------
        str
        """
        who = f"case {self.case_id}" if self.case_id is not None else "dataset"
        if self.path is None:
            return f"{who}: {self.message}"
        return f"{who}: {display_path(self.path, root)}: {self.message}"

    def __str__(self) -> str:
        return self.format()


@dataclass
class RawDataset:
    """A raw dataset as found on disk, before any image is read.

    ``layout_problems`` and ``layout_warnings`` hold what was noticed while listing files (badly named files,
    duplicate case ids, labels without images...); :func:`~suprem_nn.datasets.verify_dataset` reports them
    together with the problems found by reading the files.
    """

    name: str
    path: Path
    layout: str                       # "nnunet" | "abdomenatlas"
    channel_names: list[str]
    class_names: list[str]            # foreground classes only
    label_values: list[int]           # nnU-Net: value in the label map per class; AbdomenAtlas: 1..K
    cases: list[RawCase]                 # training cases, sorted by id
    test_cases: list[RawCase]            # imagesTs (nnU-Net); [] for AbdomenAtlas
    file_ending: str
    num_training_declared: Optional[int] = None   # nnU-Net dataset.json numTraining
    layout_problems: list[Problem] = field(default_factory=list)
    layout_warnings: list[Problem] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Foreground classes."""
        return len(self.class_names)

    def case(self, case_id: str) -> RawCase:
        """The training case ``case_id``.

        Parameters
        ----------
        case_id : str

        Returns
        -------
        RawCase

        Raises
        ------
        DatasetError
            Naming the dataset and its number of cases, when there is no such case.
        """
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise DatasetError(f"no training case {case_id!r} in dataset {self.name} ({len(self.cases)} cases)",
                           self.path)


def display_path(path: Path, root: Optional[Path]) -> str:
    """How a path is shown in messages.

    Parameters
    ----------
    path : Path
        The path.
    root : Path, optional
        The dataset folder.

    Returns
    -------
    str
        ``path`` relative to ``root`` when inside it; the root itself and outside paths in full.
    """
    if root is not None:
        try:
            rel = Path(path).relative_to(root)
        except ValueError:
            pass
        else:
            if rel.parts:  # the root itself is shown in full
                return os.fspath(rel)
    return os.fspath(path)
