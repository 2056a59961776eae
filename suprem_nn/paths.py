"""Where raw datasets, preprocessed caches and trained models live.

Each root comes from an optional environment variable; none is mandatory.

===================  =======================  ===============================
root                 environment variable     default
===================  =======================  ===============================
raw datasets         ``SUPREM_RAW``           ``~/suprem_nn_data/raw``
preprocessed cache   ``SUPREM_PREPROCESSED``  ``~/suprem_nn_data/preprocessed``
trained models       ``SUPREM_RESULTS``       ``~/suprem_nn_data/results``
===================  =======================  ===============================
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_DEFAULT_BASE = Path("~/suprem_nn_data")


def _root(env: str, sub: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser() if value else (_DEFAULT_BASE / sub).expanduser()


def raw_root() -> Path:
    """Root of the raw datasets: ``$SUPREM_RAW``, else ``~/suprem_nn_data/raw`` (``~`` expanded)."""
    return _root("SUPREM_RAW", "raw")


def preprocessed_root() -> Path:
    """Root of the preprocessed caches: ``$SUPREM_PREPROCESSED``, else ``~/suprem_nn_data/preprocessed``."""
    return _root("SUPREM_PREPROCESSED", "preprocessed")


def results_root() -> Path:
    """Root of the trained models: ``$SUPREM_RESULTS``, else ``~/suprem_nn_data/results`` (``~`` expanded)."""
    return _root("SUPREM_RESULTS", "results")


def dataset_folder(root: Path, dataset: str) -> Path:
    """``root/<dataset folder>``: an exact folder name, a numeric id (``101`` -> ``Dataset101_*``) or the name part
    (``Liver`` -> ``Dataset101_Liver``), as in nnU-Net. Returns ``root/dataset`` when nothing else matches.

    Parameters
    ----------
    root : Path
        One of the roots (:func:`raw_root`, :func:`preprocessed_root`, :func:`results_root`).
    dataset : str
        Folder name, id of up to 3 digits, or name part; an id or name part must match exactly one folder.

    Returns
    -------
    Path
        The matching folder, or ``root/dataset`` (which need not exist).

    Raises
    ------
    DatasetError
        If ``dataset`` is empty, ``.``/``..`` or contains a path separator.
    """
    if "/" in dataset or "\\" in dataset or dataset in ("", ".", ".."):
        from .errors import DatasetError
        raise DatasetError(f"'{dataset}' is not a dataset name (names may not contain path parts like '/' or '..')")
    if (root / dataset).is_dir() or not root.is_dir():
        return root / dataset
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if re.fullmatch(r"\d{1,3}", dataset):
        hits = [f for f in folders if f.startswith(f"Dataset{int(dataset):03d}_")]
    else:
        hits = [f for f in folders if re.fullmatch(rf"Dataset\d{{3}}_{re.escape(dataset)}", f)]
    return root / hits[0] if len(hits) == 1 else root / dataset


def trained_datasets(root: Path) -> dict[str, list[str]]:
    """Dataset folder name -> its plans that hold a trained fold (``fold_*/checkpoint_*.pth``), under ``root``."""
    found: dict[str, list[str]] = {}
    if not root.is_dir():
        return found
    for ds in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        plans = [p.name for p in sorted(ds.iterdir()) if (p / "plans.json").is_file()
                 and any(p.glob("fold_*/checkpoint_*.pth"))]
        if plans:
            found[ds.name] = plans
    return found


def trained_listing(root: Path, limit: int = 20) -> str:
    """What -d can name instead, or why nothing (a new shell without the demo's export lines finds nothing).

    Parameters
    ----------
    root : Path
        The results root.
    limit : int
        Datasets listed at most; the rest are counted.

    Returns
    -------
    str
        One line for an error message.
    """
    found = trained_datasets(root)
    if not found:
        return (f"the results folder {root} holds no trained model (SUPREM_RESULTS sets it: export it as the "
                "command that trained the model had it, e.g. the export lines suprem_demo prints)")
    items = [f"{name} (plan {', '.join(plans)})" for name, plans in list(found.items())[:limit]]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return f"trained datasets in {root}: {', '.join(items)}{more}"
