"""The offline demo: synthetic abdominal CT phantoms (:mod:`.phantom`) and ``suprem_demo`` (:mod:`.run`)."""
from .phantom import CLASS_NAMES, LABELS, Phantom, make_phantom, phantom_geometry, write_phantom_dataset
from .run import DemoResult, DemoSettings, run_demo

__all__ = ["CLASS_NAMES", "LABELS", "Phantom", "make_phantom", "phantom_geometry", "write_phantom_dataset",
           "DemoResult", "DemoSettings", "run_demo"]
