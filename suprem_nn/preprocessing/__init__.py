"""From raw arrays to network space and back: reorient, crop, normalise, resample; and the cache on disk."""
from .cache import PreprocessedCache
from .pipeline import (CaseProperties, preprocess_case, preprocess_images, restore_block, restore_to_original,
                       sample_class_locations)

__all__ = ["PreprocessedCache", "CaseProperties", "preprocess_case", "preprocess_images", "restore_block",
           "restore_to_original", "sample_class_locations"]
