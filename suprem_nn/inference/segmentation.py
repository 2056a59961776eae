"""Labels from class probabilities on the original grid, and largest-component post-processing per class.

Shared by ``suprem_ensemble``, ``suprem_predict -d`` with inference instructions, and configuration selection,
so the labels that cross-validation scored are exactly the labels that get written.

Arrays are on the original file's grid in its axis order (``[i, j, k]``, see :mod:`suprem_nn.io.geometry`):

* exclusive (softmax) probabilities ``(K + 1, i, j, k)``, background first -> argmax (ties go to the lower
  channel, as :class:`~suprem_nn.inference.Predictor` does);
* multi-label (sigmoid) probabilities ``(K, i, j, k)`` -> one mask per class at ``> 0.5``; in the combined
  label map the higher class index wins where masks overlap (the predictor's rule).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from .components import keep_largest_component

SOFTMAX, SIGMOID = "softmax", "sigmoid"


@dataclass
class Segmentation:
    """One case's predicted classes: ``index`` (exclusive: int16 ``(i, j, k)``, 0 background, ``c + 1`` class c)
    or ``masks`` (multi-label: bool ``(K, i, j, k)``)."""

    class_names: list[str]
    label_values: list[int]
    index: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray, activation: str, class_names, label_values
                           ) -> "Segmentation":
        """The segmentation of per-class probabilities.

        Parameters
        ----------
        probabilities : np.ndarray
            ``(C, i, j, k)``: softmax with background as channel 0, or one sigmoid channel per class.
        activation : str
            ``"softmax"`` (argmax over channels -> int16 ``index``) or ``"sigmoid"`` (``> 0.5`` -> bool ``masks``).
        class_names, label_values : sequence
            The predicted classes (without background) and the label value of each.

        Raises
        ------
        ValueError
            For another activation.
        """
        if activation == SOFTMAX:
            return cls(list(class_names), list(label_values), index=np.argmax(probabilities, axis=0).astype(np.int16))
        if activation == SIGMOID:
            return cls(list(class_names), list(label_values), masks=probabilities > 0.5)
        raise ValueError(f"unknown activation {activation!r}")

    @property
    def multilabel(self) -> bool:
        """True for multi-label ``masks``, False for an exclusive ``index``."""
        return self.masks is not None

    def mask(self, c: int) -> np.ndarray:
        """Bool ``(i, j, k)`` mask of class index ``c`` (position in ``class_names``)."""
        return self.masks[c] if self.masks is not None else self.index == c + 1

    def keep_largest_component(self, classes: Iterable[str]) -> "Segmentation":
        """A copy where each named class keeps only its largest 26-connected component; an exclusive map turns
        the removed voxels into background (nnU-Net's ``remove_all_but_largest_component`` per label)."""
        index = None if self.index is None else self.index.copy()
        masks = None if self.masks is None else self.masks.copy()
        for name in classes:
            c = self.class_names.index(name)
            mask = self.mask(c)
            kept = largest_component(mask)
            if masks is not None:
                masks[c] = kept
            else:
                index[mask & ~kept] = 0
        return Segmentation(self.class_names, self.label_values, index, masks)

    def label_map(self) -> np.ndarray:
        """``(i, j, k)`` label map holding ``label_values``; uint8 when every value is < 256, else uint16."""
        dtype = np.uint8 if max(self.label_values + [0]) < 256 else np.uint16
        lut = np.asarray([0] + list(self.label_values), dtype=dtype)
        if self.index is not None:
            return lut[self.index]
        top = np.zeros(self.masks.shape[1:], dtype=np.int16)
        for c in range(len(self.masks)):
            top[self.masks[c]] = c + 1  # later (higher-index) classes overwrite earlier ones
        return lut[top]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Bool mask of the largest 26-connected component of ``mask``, computed inside its bounding box only
    (a small organ in a large CT costs only its box).

    Parameters
    ----------
    mask : np.ndarray
        Bool or numeric ``[i, j, k]`` mask (nonzero = inside).

    Returns
    -------
    np.ndarray
        Bool, same shape; all False for an empty mask.
    """
    from scipy import ndimage

    boxes = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == np.bool_ else (mask > 0).view(np.uint8),
                                 max_label=1)
    out = np.zeros(mask.shape, dtype=bool)
    if not boxes or boxes[0] is None:
        return out
    box = boxes[0]
    out[box] = keep_largest_component(mask[box]).astype(bool)
    return out
