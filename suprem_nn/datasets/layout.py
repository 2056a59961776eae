"""What a dataset layout answers for every stage: one subclass of :class:`DatasetLayout` per layout.

A layout is a way of storing CT cases and their annotations on disk (nnU-Net raw, AbdomenAtlas). Three stages
read cases in a layout, and each asks its layout object rather than testing the layout's name:

* training data (planning, preprocessing): :meth:`DatasetLayout.is_dataset`, :meth:`DatasetLayout.load`,
  :meth:`DatasetLayout.read_annotation` and :attr:`DatasetLayout.multilabel_masks`;
* prediction inputs (``suprem_predict``): :meth:`DatasetLayout.prediction_cases`;
* evaluation references and predictions (``suprem_evaluate``): :meth:`DatasetLayout.segmentation_of`.

Adding a third layout is one new module with one subclass, listed in :data:`suprem_nn.datasets.layouts.LAYOUTS`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..errors import SupremError
from ..io.image_io import image_ending, strip_ending

if TYPE_CHECKING:  # the data classes import nothing from here; annotations only
    from ..io.geometry import Geometry
    from .model import RawCase, RawDataset


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (any ending of ``IMAGE_ENDINGS``; hidden files skipped).

    Parameters
    ----------
    folder : Path
        A prediction input folder.

    Returns
    -------
    list of Path
        Sorted by name.

    Raises
    ------
    SupremError
        Two files of the same case (``case.nii.gz`` beside ``case.nrrd``): both would write the same output.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and image_ending(p) and not p.name.startswith("."))
    seen: dict[str, Path] = {}
    for f in files:
        s = strip_ending(f)
        if s in seen:
            raise SupremError(f"two files for the same case '{s}' ({seen[s].name} and {f.name}); keep one", folder)
        seen[s] = f
    return files


@dataclass
class PredictionCase:
    """One case of a prediction input and where its outputs go."""

    case_id: str
    images: list[Path]      # one file (or DICOM folder) per channel, in channel order
    output: Path            # the label map; its existence marks the case finished
    case_folder: Path       # where per-class masks, probabilities, previews of this case go
    atlas: bool = False     # AbdomenAtlas layout (segmentations/ beside combined_labels)

    def segmentation_folder(self) -> Path:
        """Folder of the per-class mask files of this case.

        Returns
        -------
        Path
            ``case_folder/segmentations`` for AbdomenAtlas outputs (beside ``combined_labels``), else
            ``case_folder/<case_id>/segmentations``.
        """
        return self.case_folder / "segmentations" if self.atlas else self.case_folder / self.case_id / "segmentations"


@dataclass(frozen=True)
class CaseSegmentation:
    """Where one case's segmentation lives: a label map file, or one mask file per class name."""

    case_id: str
    label_map: Optional[Path] = None
    masks: dict = field(default_factory=dict)   # class name -> Path (AbdomenAtlas segmentations/)
    folder: Optional[Path] = None               # the case folder for the AbdomenAtlas layouts

    @property
    def display(self) -> str:
        """The path to show for this case in messages: the label map, else the case's ``segmentations/``."""
        return str(self.label_map) if self.label_map is not None else str(self.folder / "segmentations")


class DatasetLayout(ABC):
    """The questions every stage asks about one dataset layout; each layout module subclasses this."""

    #: The layout's name, stored in :attr:`RawDataset.layout` and in the dataset fingerprint.
    name: str = ""
    #: True when annotations are one binary mask per class (they may overlap), False for one label map per case.
    multilabel_masks: bool = False
    #: What a dataset of this layout without training cases lacks, for the verification message.
    no_cases_hint: str = ""

    @abstractmethod
    def is_dataset(self, folder: Path) -> bool:
        """Whether ``folder`` is a raw training dataset in this layout.

        Parameters
        ----------
        folder : Path
            An existing folder.

        Returns
        -------
        bool
            True when the folder's structure is this layout's; its files are not read.
        """

    @abstractmethod
    def load(self, folder: Path, name: str) -> "RawDataset":
        """List the training (and test) cases of the dataset in ``folder``.

        Parameters
        ----------
        folder : Path
            The dataset folder (for which :meth:`is_dataset` is True).
        name : str
            The dataset's name (its folder name).

        Returns
        -------
        RawDataset
            Cases sorted by id; naming problems collected in ``layout_problems`` / ``layout_warnings``.
        """

    @abstractmethod
    def read_annotation(self, case: "RawCase", dataset: "RawDataset", geometry: "Geometry") -> Optional[np.ndarray]:
        """Read one case's annotation on the grid of its images.

        Parameters
        ----------
        case : RawCase
            A case of ``dataset``.
        dataset : RawDataset
            The dataset (for its class names and label values).
        geometry : Geometry
            The grid of the case's channel 0; every annotation file must lie on it.

        Returns
        -------
        numpy.ndarray or None
            A label map ``(i, j, k)`` (:attr:`multilabel_masks` False) or a uint8 stack of masks ``(K, i, j, k)``
            in ``dataset.class_names`` order; None when the case has no annotation.
        """

    @abstractmethod
    def prediction_cases(self, folder: Path, output: Path) -> Optional[list[PredictionCase]]:
        """The cases of a prediction input folder stored in this layout, and their output locations.

        Parameters
        ----------
        folder : Path
            The input folder given to ``suprem_predict``.
        output : Path
            The output folder; outputs mirror the layout of the input.

        Returns
        -------
        list of PredictionCase or None
            None when ``folder`` is not in this layout.
        """

    @abstractmethod
    def segmentation_of(self, entry: Path) -> Optional[CaseSegmentation]:
        """The segmentation stored at ``entry``, one entry of a folder of cases, when it is in this layout.

        Parameters
        ----------
        entry : Path
            A file or folder inside a folder of cases (a reference or a prediction of ``suprem_evaluate``).

        Returns
        -------
        CaseSegmentation or None
            None when ``entry`` is not a case of this layout.
        """
