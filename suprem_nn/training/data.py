"""Training batches from the preprocessed cache: random patches, foreground oversampling, augmentation, workers.

Every batch is a pure function of ``(seed, epoch, iteration, stream, rank)``:
the cases of a *global* batch (all ranks) are drawn from one generator and rank
``r`` takes its own slice (disjoint, like ``DistributedSampler``); the patch
positions and augmentation of that slice use a generator that also includes the
rank. So ``--continue`` replays exactly the batches an uninterrupted run would
have seen, whatever the number of workers.

Arrays are in network space, channels first: data ``(B, C, X, Y, Z)`` float32;
target ``(B, 1, X, Y, Z)`` int16 labels 0..K (exclusive plans) or
``(B, K, X, Y, Z)`` uint8 masks (multi-label plans).
"""
from __future__ import annotations

import os
from typing import Optional, Protocol, Sequence

import numpy as np
import torch

from ..errors import SupremError
from .augmentation import build_transforms, enlarged_patch_size

TRAIN, VAL = 0, 1


class CaseSource(Protocol):
    """What the sampler needs from :class:`suprem_nn.preprocessing.cache.PreprocessedCache`."""

    def load(self, case_id: str, mmap: bool = True):
        """``(data, seg, properties)`` of one preprocessed case; ``mmap`` memory-maps the arrays read-only."""
        ...

    def class_locations(self, case_id: str) -> dict:
        """``{class index 0..K-1: int32 (N, 3) voxel indices in network space}``: foreground samples of ``case_id``."""
        ...


class DataWorkerError(SupremError):
    """A batch could not be built; the message carries the original exception and traceback."""


class PatchSampler:
    """Builds batches of ``patch_size`` patches from ``case_ids``.

    ``oversample_foreground``: the last ``round(B * p)`` samples of each rank's batch
    are centred on a stored foreground location of a class drawn uniformly among
    the classes present in the case (nnU-Net's rule; with B = 2 that is 1 of 2).
    """

    def __init__(self, cache: CaseSource, case_ids: Sequence[str], patch_size: Sequence[int], batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, oversample_foreground: float = 0.33,
                 augmentation: Optional[dict] = None, mirror_axes: Sequence[int] = (0, 1, 2)):
        if not case_ids:
            raise SupremError("no cases to sample patches from")
        self.cache, self.case_ids = cache, list(case_ids)
        self.patch_size = [int(v) for v in patch_size]
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.n_forced = int(round(self.batch_size * oversample_foreground))
        self.augmentation = augmentation if augmentation and augmentation.get("enabled", True) else None
        self.mirror_axes = list(mirror_axes)
        self._transforms = None

    # -- one batch -------------------------------------------------------------------------------------------
    def batch(self, epoch: int, iteration: int, stream: int = TRAIN) -> dict:
        """The batch ``iteration`` of ``epoch`` for this rank; ``stream`` VAL skips augmentation.

        Cases are drawn from a generator seeded by ``(seed, epoch, iteration, stream)``, so a batch depends on these
        numbers alone (resuming and any worker count give the same batches); each rank takes its own slice.

        Parameters
        ----------
        epoch, iteration : int
            Position of the batch in training.
        stream : int
            ``TRAIN`` (augmented when augmentation is on) or ``VAL`` (plain crops).

        Returns
        -------
        dict
            ``"data"``: float32 ``(B, C, X, Y, Z)`` network-space patches of ``patch_size``; ``"target"``: ``(B, 1, X,
            Y, Z)`` labels (exclusive plans) or ``(B, K, X, Y, Z)`` masks (multi-label) in the cache's dtype, with the
            augmentation's -1 border set to background 0.

        Raises
        ------
        DataWorkerError
            If a patch of a case cannot be built (names the case and the original exception).
        """
        global_rng = np.random.default_rng([self.seed, epoch, iteration, stream])
        cases = global_rng.choice(len(self.case_ids), size=self.batch_size * self.world_size, replace=True)
        mine = cases[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, iteration, stream, self.rank])
        augment = self.augmentation is not None and stream == TRAIN
        crop = enlarged_patch_size(self.patch_size, self.augmentation) if augment else self.patch_size
        data, seg = [], []
        for b, ci in enumerate(mine):
            case_id = self.case_ids[int(ci)]
            force_fg = b >= self.batch_size - self.n_forced
            try:
                d, s = self._crop_case(case_id, crop, force_fg, rng)
            except Exception as exc:
                # the worker's traceback travels with this exception (torch's DataLoader adds it)
                raise DataWorkerError(f"failed to build a patch of case {case_id!r}: "
                                      f"{type(exc).__name__}: {exc}") from exc
            data.append(d)
            seg.append(s)
        out = {"data": np.stack(data), "seg": np.stack(seg)}
        if augment:
            if self._transforms is None:
                self._transforms = build_transforms(self.patch_size, self.mirror_axes, self.augmentation)
            # batchgenerators draws from numpy's global generator: seed it from this batch's generator
            np.random.seed(int(rng.integers(2 ** 31)))
            out = self._transforms(**out)
        target = out["seg"]
        target = np.where(target < 0, 0, np.rint(target)).astype(seg[0].dtype)   # -1 border -> background
        return {"data": np.ascontiguousarray(out["data"], dtype=np.float32), "target": target}

    def _crop_case(self, case_id: str, crop: Sequence[int], force_fg: bool, rng: np.random.Generator):
        data, seg, _ = self.cache.load(case_id, mmap=True)
        shape = np.asarray(data.shape[1:])
        crop = np.asarray(crop)
        need = np.maximum(crop - shape, 0)
        lb = -(need // 2)                                  # lowest allowed patch start (may be negative: padding)
        ub = shape + need // 2 + need % 2 - crop           # highest allowed patch start
        start = None
        if force_fg:
            locs = {k: v for k, v in self.cache.class_locations(case_id).items() if len(v)}
            if locs:
                cls = list(locs)[int(rng.integers(len(locs)))]
                pts = locs[cls]
                centre = np.asarray(pts[int(rng.integers(len(pts)))])
                start = np.clip(centre - crop // 2, lb, ub)
        if start is None:
            start = np.array([int(rng.integers(lo, hi + 1)) for lo, hi in zip(lb, ub)])
        return _crop_pad(data, start, crop, 0), _crop_pad(seg, start, crop, 0)


def _crop_pad(arr: np.ndarray, start: np.ndarray, size: np.ndarray, fill) -> np.ndarray:
    """``arr[:, start:start+size]`` with voxels outside the array set to ``fill``."""
    out = np.full((arr.shape[0], *size), fill, dtype=arr.dtype)
    src = tuple(slice(max(0, s), min(n, s + z)) for s, z, n in zip(start, size, arr.shape[1:]))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
    out[(slice(None), *dst)] = arr[(slice(None), *src)]
    return out


class _EpochBatches(torch.utils.data.Dataset):
    def __init__(self, sampler: PatchSampler, epoch: int, first: int, count: int, stream: int):
        self.sampler, self.epoch, self.first, self.count, self.stream = sampler, epoch, first, count, stream

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        b = self.sampler.batch(self.epoch, self.first + i, self.stream)
        return {"data": torch.from_numpy(b["data"]), "target": torch.from_numpy(b["target"])}


def _worker_init(_worker_id: int) -> None:
    # Workers do numpy/scipy work on one patch at a time; more threads per worker only oversubscribe the CPU.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def epoch_loader(sampler: PatchSampler, epoch: int, count: int, stream: int = TRAIN, num_workers: int = 0,
                 first: int = 0, pin_memory: bool = False):
    """Iterate the ``count`` batches ``first..first+count-1`` of ``epoch``, built by ``num_workers`` processes.

    A failing worker re-raises in the main process with the worker's traceback
    (torch's DataLoader carries it); :func:`next_batch` turns it into a
    :class:`DataWorkerError` that names the case and the original exception.
    """
    return iter(torch.utils.data.DataLoader(
        _EpochBatches(sampler, epoch, first, count, stream), batch_size=None, shuffle=False,
        num_workers=num_workers, worker_init_fn=_worker_init if num_workers else None, pin_memory=pin_memory,
        prefetch_factor=2 if num_workers else None, persistent_workers=False))


def next_batch(iterator) -> dict:
    """The next batch of an :func:`epoch_loader` iterator.

    Raises
    ------
    DataWorkerError
        When a data-loading worker failed: the message carries the worker's traceback.
    StopIteration
        When the iterator is exhausted.
    """
    try:
        return next(iterator)
    except DataWorkerError:
        raise
    except StopIteration:
        raise
    except Exception as exc:
        text = str(exc)
        if "DataLoader worker" in text or "Original Traceback" in text:
            raise DataWorkerError(f"a data-loading worker failed:\n{text}") from None
        raise
