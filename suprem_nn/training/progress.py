"""Run logs of a fold folder: ``training_log.txt``, ``metrics.jsonl`` and ``progress.png``.

Only rank 0 creates a :class:`RunLog` that writes; other ranks get a silent one.
The metric history is also stored in every checkpoint, so ``--continue`` rewrites
``metrics.jsonl`` and the plot from the checkpoint (epochs after it, from a killed
run, are dropped: they are about to be trained again).
"""
from __future__ import annotations

import datetime
import json
import math
import sys
from pathlib import Path
from typing import Optional

from ..utils.atomic import atomic_write_text, atomic_write_with

LOG_FILE, METRICS_FILE, PLOT_FILE = "training_log.txt", "metrics.jsonl", "progress.png"


class RunLog:
    def __init__(self, folder: Optional[Path], echo: bool = True):
        self.folder, self.echo = folder, echo
        self.history: list[dict] = []

    @property
    def writes(self) -> bool:
        """Whether this log writes files: it has a folder (the trainer gives ranks other than 0 none)."""
        return self.folder is not None

    def line(self, text: str) -> None:
        """Append a time-stamped line to the text log (and print it)."""
        if not self.writes:
            return
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.folder / LOG_FILE, "a", encoding="utf-8") as f:
            for part in str(text).splitlines() or [""]:
                f.write(f"{stamp}  {part}\n")
        if self.echo:
            print(text, file=sys.stderr, flush=True)

    def restore(self, history: list[dict]) -> None:
        """Replace the epoch history (on resume) and, when writing, rewrite metrics.jsonl and progress.png from it."""
        self.history = [dict(h) for h in history]
        if self.writes:
            atomic_write_text(self.folder / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in self.history))
            self.plot()

    def epoch(self, record: dict) -> None:
        """Record one finished epoch: append to metrics.jsonl and redraw progress.png."""
        self.history.append(record)
        if not self.writes:
            return
        with open(self.folder / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.plot()

    def plot(self) -> None:
        """Draw loss, pseudo-Dice and learning rate per epoch into progress.png in the folder (nothing without
        history).
        """
        if not self.history:
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [h["epoch"] for h in self.history]
        fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
        axes[0].plot(ep, [h["train_loss"] for h in self.history], "b-", label="train loss")
        axes[0].plot(ep, [_nan(h.get("val_loss")) for h in self.history], "r-", label="validation loss")
        axes[0].set_ylabel("loss")
        axes[1].plot(ep, [_nan(h.get("val_dice")) for h in self.history], "g.", label="pseudo-Dice (patches)")
        axes[1].plot(ep, [_nan(h.get("ema_dice")) for h in self.history], "g-", label="pseudo-Dice EMA")
        axes[1].set_ylabel("foreground Dice")
        axes[2].plot(ep, [h["lr"] for h in self.history], "k-", label="learning rate")
        axes[2].set_ylabel("learning rate")
        axes[2].set_xlabel("epoch")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        fig.tight_layout()
        atomic_write_with(self.folder / PLOT_FILE, lambda p: fig.savefig(p, format="png", dpi=80), suffix=".png")
        plt.close(fig)


def _nan(v):
    return float("nan") if v is None or (isinstance(v, float) and math.isnan(v)) else v
