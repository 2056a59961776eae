"""Largest 26-connected component per class: pure functions on ``[i, j, k]`` arrays.

Used by the predictor's ``largest-component`` post-processing, by ``suprem_apply_postprocessing`` on finished label
maps, by ensembling and by nnU-Net-model prediction, so all of them keep exactly the same voxels.
"""
from __future__ import annotations

import numpy as np

__all__ = ["keep_largest_component", "keep_largest_component_per_label"]


def keep_largest_component_per_label(label_map: np.ndarray, values) -> None:
    """In place: for each label value, clear every voxel outside its largest 26-connected component.

    Parameters
    ----------
    label_map : np.ndarray
        Integer ``[i, j, k]`` label map, modified in place (cleared voxels become 0).
    values : iterable of int
        Label values to process; absent ones are skipped.
    """
    for v in values:
        m = label_map == v
        if m.any():
            label_map[m & ~keep_largest_component(m).astype(bool)] = 0


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary mask, as uint8 0/1 of the same shape.

    An empty mask or one with a single component comes back unchanged (as uint8).
    """
    import cc3d

    if not mask.any():
        return mask.astype(np.uint8)
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if n <= 1:
        return mask.astype(np.uint8)
    counts = np.bincount(labels.reshape(-1))
    counts[0] = 0
    return (labels == int(np.argmax(counts))).astype(np.uint8)
