"""Image I/O with exact geometry; see :mod:`suprem_nn.io.geometry` for the axis convention."""
from .geometry import (Geometry, Reorientation, apply_reorientation, plan_reorientation, reoriented_geometry,
                       undo_reorientation)
from .image_io import (IMAGE_ENDINGS, image_ending, is_dicom_folder, read_geometry, read_image, strip_ending,
                       write_image)

__all__ = ["Geometry", "Reorientation", "apply_reorientation", "plan_reorientation", "reoriented_geometry",
           "undo_reorientation", "IMAGE_ENDINGS", "image_ending", "is_dicom_folder", "read_geometry", "read_image",
           "strip_ending", "write_image"]
