"""The dataset layouts suprem_nn reads, in the order they are tried; a new layout is one module and one entry."""
from __future__ import annotations

from .abdomenatlas import ABDOMENATLAS
from .layout import DatasetLayout
from .model import RawDataset
from .nnunet import NNUNET_RAW

# nnU-Net first: its marks (dataset.json, imagesTr/) are the more specific ones, so a raw folder is never
# mistaken for AbdomenAtlas case folders.
LAYOUTS: tuple[DatasetLayout, ...] = (NNUNET_RAW, ABDOMENATLAS)


def layout_of(dataset: RawDataset) -> DatasetLayout:
    """The layout object of a loaded dataset.

    Parameters
    ----------
    dataset : RawDataset
        A dataset returned by :func:`suprem_nn.datasets.load_dataset`.

    Returns
    -------
    DatasetLayout
        The entry of :data:`LAYOUTS` whose ``name`` is ``dataset.layout``.

    Raises
    ------
    ValueError
        ``dataset.layout`` names no known layout.
    """
    for layout in LAYOUTS:
        if layout.name == dataset.layout:
            return layout
    raise ValueError(f"unknown dataset layout {dataset.layout!r}; known: {', '.join(l.name for l in LAYOUTS)}")
