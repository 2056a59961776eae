"""Checkpoint files of a fold folder and the random-number states they carry.

Every checkpoint is a plain dict of tensors, numbers, strings and lists, so it
loads with ``torch.load(path, weights_only=True)`` (no pickled objects). Writes
go to a temporary file in the same folder and are renamed into place, so a
``kill -9`` during a save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import SupremError
from ..utils.atomic import atomic_path
from ..utils.safe_load import load_weights_only

LATEST, BEST, FINAL = "checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth"


def capture_rng_state() -> dict:
    """torch (CPU and CUDA), numpy's global and Python's ``random`` states as tensors and lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": np_state[1].tolist(), "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "internal": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare network inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (which must be weights_only-loadable) to ``path``."""
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise SupremError("checkpoint not found", path)
    return load_weights_only(path, map_location=map_location)  # refuses pickled code; one line for broken files


def find_resume_checkpoint(fold_folder: Path) -> Optional[Path]:
    """The checkpoint ``--continue`` starts from: final if training finished, else latest."""
    for name in (FINAL, LATEST):
        p = Path(fold_folder) / name
        if p.is_file():
            return p
    return None
