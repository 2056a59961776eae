"""Cross-validation splits: ``<preprocessed>/<dataset>/splits_final.json`` (nnU-Net's format).

The file is a JSON list of ``{"train": [case ids], "val": [case ids]}``, one entry
per fold. It is written once (5 folds, shuffled with ``RandomState(12345)`` like
nnU-Net's ``KFold(5, shuffle=True, random_state=12345)``) and then respected as is,
so a user may edit it to choose their own folds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..errors import SupremError
from ..utils.atomic import atomic_write_json
from ..utils.json_file import read_json

SPLITS_FILE = "splits_final.json"
NUM_FOLDS = 5
SPLIT_SEED = 12345

Fold = Union[int, str]


def kfold_splits(case_ids: Sequence[str], n_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    """Shuffle the sorted ids with ``RandomState(seed)`` and cut them into ``n_folds`` folds.

    Fold sizes follow sklearn's KFold: the first ``n % n_folds`` folds get one extra case.
    With fewer cases than folds, there are only ``len(case_ids)`` folds.

    Parameters
    ----------
    case_ids : sequence of str
        The cases to split.
    n_folds : int
        Folds wanted.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    list of dict
        ``[{"train": [...], "val": [...]}, ...]``, each list in sorted id order.

    Raises
    ------
    SupremError
        With fewer than 2 cases.
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise SupremError(f"cross-validation needs at least 2 cases, found {len(ids)}; train fold 'all' instead")
    n_folds = min(n_folds, len(ids))
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, len(ids) // n_folds, dtype=int)
    sizes[: len(ids) % n_folds] += 1
    splits, start = [], 0
    for size in sizes:
        val_idx = set(order[start:start + size].tolist())
        start += size
        splits.append({"train": [ids[i] for i in range(len(ids)) if i not in val_idx],
                       "val": [ids[i] for i in sorted(val_idx)]})
    return splits


def load_or_create_splits(dataset_folder: Path, case_ids: Sequence[str]) -> list[dict]:
    """Read ``splits_final.json`` from ``dataset_folder``, or write it from ``case_ids`` first.

    A user-edited file must only name cases that exist in the cache.

    Parameters
    ----------
    dataset_folder : Path
        The dataset's preprocessed folder holding ``splits_final.json``.
    case_ids : sequence of str
        The preprocessed cases.

    Returns
    -------
    list of dict
        ``[{"train": [...], "val": [...]}, ...]`` as stored.

    Raises
    ------
    SupremError
        If the file is not valid JSON, not a list of such objects, or names cases not in ``case_ids``.
    """
    path = Path(dataset_folder) / SPLITS_FILE
    if not path.is_file():
        atomic_write_json(path, kfold_splits(case_ids))
    splits = read_json(path, hint="; fix it or delete it to get a fresh 5-fold split")
    if not isinstance(splits, list) or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list)
            for s in splits):
        raise SupremError('expected a list of {"train": [...], "val": [...]} objects', path)
    known = set(case_ids)
    for k, s in enumerate(splits):
        unknown = sorted((set(s["train"]) | set(s["val"])) - known)
        if unknown:
            raise SupremError(f"fold {k} names cases that are not in the preprocessed cache: {unknown[:5]}", path)
    return splits


def cases_for_fold(dataset_folder: Path, case_ids: Sequence[str], fold: Fold) -> tuple[list[str], list[str]]:
    """(training cases, validation cases) of ``fold``; fold ``"all"`` trains and validates on every case.

    Parameters
    ----------
    dataset_folder : Path
        Where ``splits_final.json`` is read or created (:func:`load_or_create_splits`).
    case_ids : sequence of str
        The preprocessed cases.
    fold : int or "all"
        Fold index into the splits, or ``"all"``.

    Raises
    ------
    SupremError
        If the fold is not in the splits, has an empty train or val list, or the splits file is invalid.
    """
    if fold == "all":
        ids = sorted(case_ids)
        return ids, ids
    splits = load_or_create_splits(dataset_folder, case_ids)
    if not 0 <= int(fold) < len(splits):
        raise SupremError(f"fold {fold} does not exist; {Path(dataset_folder) / SPLITS_FILE} "
                          f"defines folds 0-{len(splits) - 1}")
    s = splits[int(fold)]
    if not s["train"] or not s["val"]:
        raise SupremError(f"fold {fold} has an empty train or val list", Path(dataset_folder) / SPLITS_FILE)
    return list(s["train"]), list(s["val"])


def parse_fold(text: str) -> Fold:
    """``"0"``..``"4"`` -> int, ``"all"`` -> ``"all"``."""
    if str(text) == "all":
        return "all"
    # 'cv' is handled before a single fold is parsed (suprem_train DATASET cv); name it for users who mistype it
    problem = f"FOLD must be a number 0-4, 'all' (every case) or 'cv' (every fold in turn), got {text!r}"
    try:
        k = int(text)
    except ValueError:
        raise SupremError(problem) from None
    if k < 0:
        raise SupremError(problem)
    return k
