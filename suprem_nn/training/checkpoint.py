"""Checkpoint files of a fold folder and the random-number states they carry.

The file names, keys, and atomic weights_only writing and reading belong to :mod:`suprem_nn.model_folder`;
this module adds what only training needs: the RNG states a checkpoint carries and which file ``--continue``
resumes from.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..model_folder import FINAL_CHECKPOINT, LATEST_CHECKPOINT


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
    """Restore the random generators saved by :func:`capture_rng_state`.

    torch CPU, numpy's global and Python's ``random`` always; the CUDA generators only when the state has them,
    CUDA is available and this machine has as many GPUs as were saved (else they are left as they are).

    Parameters
    ----------
    state : dict
        ``{"torch", "numpy", "python"[, "cuda"]}`` as returned by :func:`capture_rng_state`.
    """
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


def find_resume_checkpoint(fold_folder: Path) -> Optional[Path]:
    """The checkpoint ``--continue`` starts from: final if training finished, else latest; None when the fold
    folder has neither.
    """
    for name in (FINAL_CHECKPOINT, LATEST_CHECKPOINT):
        p = Path(fold_folder) / name
        if p.is_file():
            return p
    return None
