"""Training: fine-tune a SuPreM backbone (or train from scratch) on a planned, preprocessed dataset.

Public API: :func:`train` (what ``suprem_train`` runs), :class:`TrainingConfig` (every knob),
:class:`Trainer`, :func:`time_training_step` (to size a run to a time budget). See documentation/training.md.
"""
from .api import train
from .config import TrainingConfig
from .step_time import time_training_step
from .trainer import Trainer

__all__ = ["train", "TrainingConfig", "Trainer", "time_training_step"]
