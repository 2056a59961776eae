"""Optimisers and learning-rate schedules (the two recipes).

``adamw_cosine`` (SuPreM's fine-tuning recipe): AdamW, linear warm-up then cosine decay to 0.
``sgd_poly`` (nnU-Net's): SGD momentum 0.99 Nesterov, ``lr * (1 - t/T)^0.9``.

A schedule counts *steps*: epochs when ``step_per="epoch"`` (SuPreM and nnU-Net
both step once per epoch) or iterations when ``step_per="iteration"`` (smoother
warm-up on short runs). Its whole state is the step counter, so resuming is exact.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from ..errors import SupremError

RECIPES = {
    "adamw_cosine": {"optimizer": "adamw", "schedule": "warmup_cosine"},
    "sgd_poly": {"optimizer": "sgd", "schedule": "poly"},
}


def make_optimizer(name: str, params: Iterable, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimiser of a recipe.

    Parameters
    ----------
    name : str
        ``"adamw"`` (AdamW) or ``"sgd"`` (SGD, momentum 0.99, Nesterov).
    params : iterable
        Parameters (or parameter groups) to optimise.
    lr : float
        Base learning rate.
    weight_decay : float
        Weight decay.

    Raises
    ------
    SupremError
        For another name.
    """
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.99, nesterov=True)
    raise SupremError(f"unknown optimizer {name!r}; choose 'adamw' or 'sgd'")


def lr_factor(kind: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps.

    Parameters
    ----------
    kind : str
        ``"warmup_cosine"`` (linear warm-up to 1 over ``warmup`` steps, never 0, then cosine decay to 0 at
        ``total``), ``"poly"`` (``(1 - step/total) ** 0.9``) or ``"constant"`` (1).
    step, total, warmup : int
        Current step, total steps and warm-up steps (``warmup`` used by ``warmup_cosine`` only).

    Raises
    ------
    SupremError
        For another kind.
    """
    if kind == "warmup_cosine":
        if step < warmup:
            return (step + 1) / (warmup + 1)      # never 0: the first step already learns something
        span = max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    if kind == "poly":
        return (1 - min(step, total) / max(1, total)) ** 0.9
    if kind == "constant":
        return 1.0
    raise SupremError(f"unknown schedule {kind!r}; choose 'warmup_cosine', 'poly' or 'constant'")


class LRSchedule:
    """Sets every parameter group's lr to ``base_lr * lr_factor(step)``; ``step()`` advances one step."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, base_lr: float, total_steps: int,
                 warmup_steps: int = 0):
        lr_factor(kind, 0, max(1, total_steps), warmup_steps)  # validates the name
        self.optimizer, self.kind, self.base_lr = optimizer, kind, float(base_lr)
        self.total_steps, self.warmup_steps = max(1, int(total_steps)), int(warmup_steps)
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def current_lr(self) -> float:
        """The learning rate at the current step: ``base_lr * lr_factor(kind, last_step, total_steps,
        warmup_steps)``.
        """
        return self.base_lr * lr_factor(self.kind, self.last_step, self.total_steps, self.warmup_steps)

    def step(self) -> None:
        """Advance one step and set every parameter group's lr."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict:
        """The step counter and the settings, for the checkpoint."""
        return {"last_step": self.last_step, "kind": self.kind, "base_lr": self.base_lr,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        """Resume at the saved step and set the lr; only ``last_step`` is read, the settings stay this schedule's."""
        self.last_step = int(state["last_step"])
        self._apply()
