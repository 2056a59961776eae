"""Planning: the dataset fingerprint, the backbone presets and the plan (``plans.json``).

The orchestration of a whole run lives in :mod:`suprem_nn.planning.api` (not imported
here, so that preprocessing can import the plan contract without a cycle).
"""
from .locate import dataset_preprocessed_folder, find_plan, list_plans
from .plans import Normalization, Plan
from .presets import PRESET_NAMES, load_preset

__all__ = ["Normalization", "Plan", "PRESET_NAMES", "load_preset", "find_plan", "list_plans",
           "dataset_preprocessed_folder"]
