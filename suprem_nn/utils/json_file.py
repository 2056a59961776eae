"""Read a user-facing JSON file; a missing or malformed file becomes one error naming it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Type

from ..errors import SupremError


def read_json(path: str | os.PathLike, error: Type[SupremError] = SupremError, missing: str = "file not found",
              hint: str = "") -> Any:
    """The parsed contents of ``path`` (UTF-8). Raises ``error(missing, path)`` when there is no such file and
    ``error("not valid JSON (...)<hint>", path)`` when it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise error(missing, path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"not valid JSON ({exc}){hint}", path) from None
