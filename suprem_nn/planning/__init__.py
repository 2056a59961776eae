"""Planning: the dataset fingerprint, the backbone presets and the plan (``plans.json``).

Planning never imports preprocessing: the whole run (fingerprint, plan, then the preprocessed cache) is
:func:`suprem_nn.preprocessing.api.plan_and_preprocess`, which reads the plan from here.
"""
from .locate import dataset_preprocessed_folder, find_plan, list_plans
from .plans import Normalization, Plan, describe_plan
from .presets import PRESET_NAMES, load_preset

__all__ = ["Normalization", "Plan", "PRESET_NAMES", "load_preset", "find_plan", "list_plans",
           "dataset_preprocessed_folder", "describe_plan"]
