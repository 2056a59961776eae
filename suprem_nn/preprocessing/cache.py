"""The preprocessed cache: one folder of cases in network space, ready for patch sampling.

Per case ``<id>``: ``<id>_data.npy`` (C, x, y, z) float32, ``<id>_seg.npy`` (see
:func:`~suprem_nn.preprocessing.pipeline.preprocess_case`), ``<id>_locs.npz``
(foreground coordinates per class) and ``<id>.json`` (properties). Every file is
written atomically and the ``.json`` last: a case is complete exactly when its
``.json`` exists and carries the current plan's cache hash. An interrupted run
therefore leaves no case that looks complete but is not.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import SupremError
from ..utils.atomic import atomic_write_json, atomic_write_with, remove_stale_temporaries
from ..utils.json_file import read_json
from .pipeline import CaseProperties


class PreprocessedCache:
    """Read and write the cases of one plan's data folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _path(self, case_id: str, suffix: str) -> Path:
        return self.folder / f"{case_id}{suffix}"

    def is_complete(self, case_id: str, cache_hash: Optional[str] = None) -> bool:
        """Whether a case is completely in the cache.

        Parameters
        ----------
        case_id : str
            The case.
        cache_hash : str, optional
            :meth:`Plan.cache_hash` the case must have been made for.

        Returns
        -------
        bool
            True when its properties file (written last) and all its arrays are there, for ``cache_hash`` if
            given.
        """
        meta = self._path(case_id, ".json")
        if not meta.is_file():
            return False
        try:
            props = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if cache_hash is not None and props.get("cache_hash") != cache_hash:
            return False
        return all(self._path(case_id, s).is_file() for s in ("_data.npy", "_seg.npy", "_locs.npz"))

    def case_ids(self, cache_hash: Optional[str] = None) -> list[str]:
        """Ids of the complete cases, sorted.

        Parameters
        ----------
        cache_hash : str, optional
            Only cases made for this :meth:`Plan.cache_hash`.

        Returns
        -------
        list of str
        """
        if not self.folder.is_dir():
            return []
        ids = [p.name[:-5] for p in self.folder.glob("*.json") if not p.name.startswith(".")]
        return sorted(i for i in ids if self.is_complete(i, cache_hash))

    def write(self, case_id: str, data: np.ndarray, seg: np.ndarray, props: CaseProperties,
              locations: dict[int, np.ndarray]) -> None:
        """Write one case; the properties file goes last and marks the case complete.

        Parameters
        ----------
        case_id : str
            The case.
        data : numpy.ndarray
            float32 ``(C, x, y, z)`` network input.
        seg : numpy.ndarray
            ``(1, x, y, z)`` class indices or ``(K, x, y, z)`` masks (:func:`preprocess_case`).
        props : CaseProperties
            The case's properties.
        locations : dict
            Class index -> ``(N, 3)`` foreground voxel indices (:func:`sample_class_locations`).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self.invalidate(case_id)
        atomic_write_with(self._path(case_id, "_data.npy"), lambda p: _save_npy(p, data), suffix=".npy")
        atomic_write_with(self._path(case_id, "_seg.npy"), lambda p: _save_npy(p, seg), suffix=".npy")
        atomic_write_with(self._path(case_id, "_locs.npz"),
                          lambda p: _save_npz(p, {f"class_{k}": v for k, v in locations.items()}), suffix=".npz")
        atomic_write_json(self._path(case_id, ".json"), props.to_json())

    def invalidate(self, case_id: str) -> None:
        """Remove the completion marker first, so a half-replaced case never looks complete."""
        marker = self._path(case_id, ".json")
        if marker.exists():
            marker.unlink()

    def clean_interrupted_writes(self) -> int:
        """Remove temporary files left by writes that were killed (never a finished file).

        Returns
        -------
        int
            How many files were removed.
        """
        return remove_stale_temporaries(self.folder)

    def load(self, case_id: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, CaseProperties]:
        """Read one complete case.

        Parameters
        ----------
        case_id : str
            The case.
        mmap : bool
            Memory-map the arrays read-only instead of reading them.

        Returns
        -------
        data : numpy.ndarray
            float32 ``(C, x, y, z)``.
        seg : numpy.ndarray
            ``(1, x, y, z)`` class indices or ``(K, x, y, z)`` masks.
        props : CaseProperties

        Raises
        ------
        SupremError
            The case is missing, incomplete or unreadable (the message says to re-run preprocessing).
        """
        if not self.is_complete(case_id):
            raise SupremError(f"case '{case_id}' is missing or incomplete in the preprocessed cache; "
                              "re-run suprem_plan_and_preprocess", self.folder)
        mode = "r" if mmap else None
        try:
            data = np.load(self._path(case_id, "_data.npy"), mmap_mode=mode)
            seg = np.load(self._path(case_id, "_seg.npy"), mmap_mode=mode)
        except (ValueError, OSError) as exc:
            raise SupremError(f"cached case '{case_id}' is unreadable ({exc}); delete it and re-run "
                              "suprem_plan_and_preprocess", self._path(case_id, "_data.npy")) from None
        return data, seg, self.properties(case_id)

    def properties(self, case_id: str) -> CaseProperties:
        """The stored :class:`CaseProperties` of ``case_id`` (what maps its arrays back to the original grid)."""
        path = self._path(case_id, ".json")
        return CaseProperties.from_json(read_json(path, SupremError, "case properties missing; re-run "
                                                  "suprem_plan_and_preprocess"), path)

    def class_locations(self, case_id: str) -> dict[int, np.ndarray]:
        """Stored foreground voxel coordinates per class of ``case_id``, for foreground oversampling.

        Parameters
        ----------
        case_id : str
            A complete case of the cache.

        Returns
        -------
        dict
            Class index 0..K-1 -> int32 array ``(N, 3)`` of voxel indices ``(x, y, z)`` in network space (see
            :func:`~suprem_nn.preprocessing.pipeline.sample_class_locations`).
        """
        with np.load(self._path(case_id, "_locs.npz")) as z:
            return {int(k.split("_", 1)[1]): z[k] for k in z.files}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _save_npz(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
