"""Find a raw dataset folder from a path, a folder name, a numeric id or a name part."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from .. import paths
from ..errors import DatasetError

_NNUNET_NAME = re.compile(r"^Dataset(\d+)_(.+)$")
_MAX_LISTED = 30


def resolve_dataset_path(name_or_path: str | os.PathLike, raw_root: Optional[Path] = None) -> Path:
    """Folder of the dataset ``name_or_path``.

    An existing folder is used as it is. Otherwise ``name_or_path`` is a name looked up under ``raw_root``
    (default :func:`suprem_nn.paths.raw_root`, env ``SUPREM_RAW``): the exact folder name
    (``AbdomenAtlas``, ``Dataset101_RealCT``), a numeric id (``101``, ``1`` -> ``Dataset001_*``) or the name
    part of an nnU-Net folder (``RealCT`` -> ``Dataset101_RealCT``).

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A folder, or a dataset name or numeric id.
    raw_root : Path, optional
        Where names are looked up.

    Returns
    -------
    Path
        The dataset folder, resolved.

    Raises
    ------
    DatasetError
        Nothing or more than one folder matches (the message lists what the root holds), or a path that names
        a file or nothing.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise DatasetError("empty dataset name; pass a dataset folder, name or numeric id")
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if candidate.exists():
        raise DatasetError("is a file; a dataset is a folder (nnU-Net raw or AbdomenAtlas layout)", candidate)
    if _looks_like_path(text):
        raise DatasetError(
            f"no folder at {text!r}, and it cannot be a dataset name: names are plain folder names under the "
            "raw root, without '/', '\\' or '..'. Pass an existing folder or a dataset name or id")

    root = Path(raw_root).expanduser() if raw_root is not None else paths.raw_root()
    if not root.is_dir():
        raise DatasetError(f"dataset {text!r} is not an existing folder and the raw root does not exist (set "
                           "SUPREM_RAW or pass a dataset folder path)", root)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    matches = _match(text, folders)
    if len(matches) == 1:
        return (root / matches[0]).resolve()
    if not matches:
        raise DatasetError(f"no dataset {text!r} under the raw root; {_listing(folders)}", root)
    raise DatasetError(f"dataset {text!r} is ambiguous: it matches {', '.join(matches)}; pass the full folder "
                       "name or a path", root)


def _looks_like_path(text: str) -> bool:
    parts = re.split(r"[\\/]", text)
    return len(parts) > 1 or text in (".", "..") or os.path.isabs(text)


def _match(text: str, folders: list[str]) -> list[str]:
    if text in folders:
        return [text]
    ids = re.fullmatch(r"(?:Dataset)?(\d+)", text)
    if ids:
        wanted = int(ids.group(1))
        return [f for f in folders if (m := _NNUNET_NAME.match(f)) and int(m.group(1)) == wanted]
    by_part = [f for f in folders if (m := _NNUNET_NAME.match(f)) and m.group(2) == text]
    if by_part:
        return by_part
    low = text.lower()
    return [f for f in folders
            if f.lower() == low or ((m := _NNUNET_NAME.match(f)) and m.group(2).lower() == low)]


def _listing(folders: list[str]) -> str:
    if not folders:
        return "the raw root holds no dataset folder"
    shown = ", ".join(folders[:_MAX_LISTED])
    more = f" and {len(folders) - _MAX_LISTED} more" if len(folders) > _MAX_LISTED else ""
    return f"datasets there: {shown}{more}"
