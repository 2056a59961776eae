"""suprem_nn: self-configuring 3D CT segmentation that starts every model from the SuPreM backbones.

Stages, one package each, in the order a CT flows through them:
``io`` -> ``datasets`` -> ``planning`` -> ``preprocessing`` -> ``training`` (with ``networks``)
-> ``inference`` -> ``evaluation``. ``cli`` only wraps library functions; ``model_folder`` owns the trained-model
folder that training writes and inference reads.

Public Python API (documentation/python_api.md), one function per command, at the same depth
(``suprem_nn.<stage>.api``)::

    from suprem_nn import plan_and_preprocess, train, predict, evaluate, Predictor

They are imported on first use, so ``import suprem_nn`` stays fast (it does not import torch).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
_PUBLIC = {
    "plan_and_preprocess": "suprem_nn.preprocessing.api",
    "train": "suprem_nn.training.api",
    "predict": "suprem_nn.inference.api",
    "evaluate": "suprem_nn.evaluation.api",
    "Predictor": "suprem_nn.inference.predictor",
    "PredictionSettings": "suprem_nn.inference.settings",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    """Import a public API name on first access (PEP 562) and keep it as a module attribute."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'suprem_nn' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
