"""Training: fine-tune a SuPreM backbone (or train from scratch) on a planned, preprocessed dataset.

Public API: :func:`train` (what ``suprem_train`` runs), :class:`TrainingConfig` (every knob),
:class:`Trainer`. See documentation/training.md.
"""
from .api import train
from .config import TrainingConfig
from .trainer import Trainer

__all__ = ["train", "TrainingConfig", "Trainer"]
