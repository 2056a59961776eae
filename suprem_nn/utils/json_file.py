"""Read a user-facing JSON file; a missing or malformed file becomes one error naming it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Type

from ..errors import SupremError


def read_json(path: str | os.PathLike, error: Type[SupremError] = SupremError, missing: str = "file not found",
              hint: str = "") -> Any:
    """The parsed contents of a JSON file.

    Parameters
    ----------
    path : str or os.PathLike
        A UTF-8 JSON file.
    error : type
        The :class:`SupremError` subclass to raise.
    missing : str
        The message when there is no such file.
    hint : str
        Appended to the message when the file does not parse (what to do about it).

    Returns
    -------
    object
        The parsed JSON value.

    Raises
    ------
    SupremError
        ``error(missing, path)`` for a missing file, ``error("not valid JSON (...)<hint>", path)`` otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise error(missing, path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"not valid JSON ({exc}){hint}", path) from None
