"""Load a checkpoint written by suprem_nn (tensors, numbers, strings only) without ever running pickled code."""
from __future__ import annotations

import os
import pickle
from typing import Type

import torch

from ..errors import SupremError


def load_weights_only(path: str | os.PathLike, error: Type[SupremError] = SupremError,
                      map_location: str = "cpu") -> object:
    """``torch.load(path, weights_only=True)``; any failure becomes one line naming the file.

    A file that needs arbitrary Python objects (a crafted pickle whose ``__reduce__`` runs a command, or a legacy
    checkpoint holding ``argparse.Namespace``) is refused, and the message does not suggest unsafe loading:
    suprem_nn writes nothing that needs it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pth`` file.
    error : type
        The :class:`SupremError` subclass to raise.
    map_location : str
        Device the tensors are loaded to.

    Returns
    -------
    object
        What the file holds (tensors, dicts, lists, numbers, strings).

    Raises
    ------
    SupremError
        ``error`` with one line naming the file.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = next((ln.strip().replace("WeightsUnpickler error: ", "") for ln in str(exc).splitlines()
                       if "GLOBAL" in ln), None)
        if unsafe:
            raise error(f"refused to load: the file needs arbitrary Python objects to be unpickled ({unsafe}), "
                        "which can execute code; suprem_nn checkpoints hold only tensors and numbers", path) from None
        raise error(f"cannot load checkpoint (corrupt or not written by torch.save: {_first_line(exc)})", path) \
            from None
    except Exception as exc:  # truncated or foreign files: one line, not a zip/pickle traceback
        raise error(f"cannot load checkpoint, the file is truncated or corrupt ({type(exc).__name__}: "
                    f"{_first_line(exc)})", path) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
