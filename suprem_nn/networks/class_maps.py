"""Class orders of SuPreM output channels, keyed by the checkpoint's class count C.

Channel i of the network output holds class ``SUPREM_CLASS_MAPS[C][i]``.

* 32: the Universal-Model template of the released ``*_2100.pth`` files
  (12 abdominal organs ..., femurs, celiac trunk, 7 tumour classes).  The name
  ``celiac_truck`` is kept as spelled in the SuPreM file names.
* 25: AbdomenAtlas 1.1 order (SuPreM's re-pretraining code, no tumours).
* 9: AbdomenAtlas 1.0 order.

The 32- and 25-class orders differ: a file's C, not its name, decides which applies.
"""

from __future__ import annotations

__all__ = ["SUPREM_CLASS_MAPS", "UNIVERSAL_TEMPLATE_32", "ABDOMENATLAS_1_1", "ABDOMENATLAS_1_0",
           "DIRECT_INFERENCE_TARGETS", "class_names_for"]

UNIVERSAL_TEMPLATE_32 = (
    "spleen", "kidney_right", "kidney_left", "gall_bladder", "esophagus", "liver", "stomach", "aorta",
    "postcava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right", "adrenal_gland_left",
    "duodenum", "hepatic_vessel", "lung_right", "lung_left", "colon", "intestine", "rectum", "bladder",
    "prostate", "femur_left", "femur_right", "celiac_truck", "kidney_tumor", "liver_tumor", "pancreas_tumor",
    "hepatic_vessel_tumor", "lung_tumor", "colon_tumor", "kidney_cyst",
)

ABDOMENATLAS_1_1 = (
    "aorta", "gall_bladder", "kidney_left", "kidney_right", "liver", "pancreas", "postcava", "spleen", "stomach",
    "adrenal_gland_left", "adrenal_gland_right", "bladder", "celiac_trunk", "colon", "duodenum", "esophagus",
    "femur_left", "femur_right", "hepatic_vessel", "intestine", "lung_left", "lung_right",
    "portal_vein_and_splenic_vein", "prostate", "rectum",
)

ABDOMENATLAS_1_0 = ABDOMENATLAS_1_1[:9]

SUPREM_CLASS_MAPS: dict[int, list[str]] = {
    32: list(UNIVERSAL_TEMPLATE_32),
    25: list(ABDOMENATLAS_1_1),
    9: list(ABDOMENATLAS_1_0),
}

# 1-based labels of the 32-class template that SuPreM's direct inference saves
# (the AbdomenAtlas 1.0 organs).
DIRECT_INFERENCE_TARGETS = (1, 2, 3, 4, 6, 7, 8, 9, 11)


def class_names_for(num_classes: int) -> list[str] | None:
    """Class names for a checkpoint with ``num_classes`` output channels, or None if the count is unknown."""
    names = SUPREM_CLASS_MAPS.get(int(num_classes))
    return list(names) if names is not None else None
