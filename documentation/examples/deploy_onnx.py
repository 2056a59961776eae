"""Segment a CT with a model exported by ``suprem_export_onnx``, without suprem_nn.

Needs only numpy, scipy, nibabel and onnxruntime. Everything it does comes from ``MODEL.onnx.json``:

  reorient to the plan's orientation -> crop to voxels above the crop threshold -> normalise (HU window)
  -> resample to the target spacing -> Gaussian-weighted sliding windows (optionally mirrored) -> softmax or
  sigmoid -> probabilities resampled linearly back onto the cropped grid -> labels -> original grid and header.

Usage:  python deploy_onnx.py MODEL.onnx CT.nii.gz LABELS.nii.gz [--step-size 0.5] [--no-mirroring]
            [--largest-component] [--threads N]

Arrays are indexed [i, j, k] as nibabel reads them (i fastest on disk); spacings in mm; the network takes
float32 (batch, channel, x, y, z) windows, where x, y, z are the array axes after reorientation.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math

import nibabel as nib
import numpy as np
import onnxruntime as ort
from scipy import ndimage

# Anatomical direction of each orientation letter in nibabel's RAS+ world.
RAS_VECTORS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


# ---------------------------------------------------------------------------------------- geometry
def plan_reorientation(affine: np.ndarray, code: str):
    """(permutation, flips): new axis t takes old axis permutation[t], reversed where flips[t].

    The closest axis-aligned orientation (the permutation that maximises the summed alignment), as nibabel.
    """
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    align = np.array([RAS_VECTORS[c] for c in code.upper()], dtype=float) @ direction
    perm = max(itertools.permutations(range(3)), key=lambda p: sum(abs(align[t, p[t]]) for t in range(3)))
    return perm, [bool(align[t, perm[t]] < 0) for t in range(3)]


def reorient(a: np.ndarray, perm, flips) -> np.ndarray:
    out = np.transpose(a, perm)
    return np.flip(out, [t for t, f in enumerate(flips) if f]) if any(flips) else out


def undo_reorient(a: np.ndarray, perm, flips) -> np.ndarray:
    a = np.flip(a, [t for t, f in enumerate(flips) if f]) if any(flips) else a
    return np.transpose(a, np.argsort(perm))


# ---------------------------------------------------------------------------------------- resampling
def separate_axis(spacing_from, spacing_to, threshold):
    """The one coarsest axis when either grid is anisotropic beyond ``threshold``, else None."""
    for spacing in (spacing_from, spacing_to):
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.max() / sp.min() > threshold:
            coarse = np.flatnonzero(sp == sp.max())
            return int(coarse[0]) if len(coarse) == 1 else None
    return None


def linear_1d(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` to ``n_out`` voxels, voxel edges aligned (align_corners=False)."""
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * a.ndim
    shape[axis] = n_out
    w = (src - i0).astype(np.float32).reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def nearest_1d(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    n_in = a.shape[axis]
    src = np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)
    return np.take(a, src, axis=axis)


def resample(a: np.ndarray, shape, order: int, sep) -> np.ndarray:
    """One 3D float32 array to ``shape``: spline ``order`` (linear for <= 1), nearest slices along ``sep``."""
    shape = tuple(int(s) for s in shape)
    if a.shape == shape:
        return a
    axes = [ax for ax in range(3) if ax != sep]
    if order <= 1:
        for ax in axes:
            a = linear_1d(a, shape[ax], ax)
    elif sep is None:
        a = ndimage.zoom(a, [n / o for n, o in zip(shape, a.shape)], order=order, mode="nearest", grid_mode=True)
    else:
        moved = np.moveaxis(a, sep, 0)
        plane = tuple(shape[ax] for ax in axes)
        if moved.shape[1:] != plane:
            zoom = [p / o for p, o in zip(plane, moved.shape[1:])]
            moved = np.stack([ndimage.zoom(s, zoom, order=order, mode="nearest", grid_mode=True) for s in moved])
        a = np.moveaxis(moved, 0, sep)
    if sep is not None:
        a = nearest_1d(a, shape[sep], sep)
    return np.ascontiguousarray(a, dtype=np.float32)


# ---------------------------------------------------------------------------------------- preprocessing
def normalise(x: np.ndarray, n: dict) -> np.ndarray:
    x = x.astype(np.float32, copy=True)
    if n["scheme"] in ("ct_window", "ct_clip_zscore"):
        np.clip(x, n["lower"], n["upper"], out=x)
    if n["scheme"] == "ct_window":
        return (x - np.float32(n["lower"])) * np.float32(1.0 / (n["upper"] - n["lower"]))
    if n["scheme"] == "ct_clip_zscore":
        return (x - np.float32(n["mean"])) * np.float32(1.0 / max(n["std"], 1e-8))
    if n["scheme"] == "zscore":
        return (x - np.float32(x.mean())) * np.float32(1.0 / max(float(x.std()), 1e-8))
    return x


def crop_box(image: np.ndarray, threshold):
    mask = image > threshold if threshold is not None else image != 0
    box = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if len(present) == 0:
            return [(0, s) for s in image.shape]
        box.append((int(present[0]), int(present[-1]) + 1))
    return box


# ---------------------------------------------------------------------------------------- sliding window
def window_starts(size: int, patch: int, step_size: float) -> list[int]:
    span = size - patch
    if span == 0:
        return [0]
    n = int(math.ceil(span / (step_size * patch))) + 1
    if n % 2 == 1 and span % 2 == 1:
        n += 1  # a middle window cannot sit symmetrically on an odd span
    exact = [span * i / (n - 1) for i in range(n)]
    steps = [0] * n
    for i in range((n + 1) // 2):
        steps[i] = int(math.floor(exact[i] + 0.5))
        steps[n - 1 - i] = span - steps[i]
    return steps


def gaussian(patch, sigma_scale: float) -> np.ndarray:
    maps = []
    for p in patch:
        x = np.arange(p, dtype=np.float64)
        sigma = max(p * sigma_scale, 1e-6)
        maps.append(np.exp(-((x - (p - 1) / 2.0) ** 2) / (2 * sigma ** 2)))
    g = maps[0][:, None, None] * maps[1][None, :, None] * maps[2][None, None, :]
    g /= g.max()
    return np.maximum(g, g[g > 0].min()).astype(np.float32)


def sliding_window(session, data: np.ndarray, meta: dict, step_size: float, mirror_axes) -> np.ndarray:
    """(C, x, y, z) network input -> (K, x, y, z) averaged logits."""
    win, io = meta["sliding_window"], meta["onnx"]
    patch = win["patch_size"]
    spatial = data.shape[1:]
    pad_lo = [max(p - s, 0) // 2 for s, p in zip(spatial, patch)]
    pads = [(0, 0)] + [(lo, max(p - s, 0) - lo) for s, p, lo in zip(spatial, patch, pad_lo)]
    data = np.pad(data, pads, constant_values=meta["preprocessing"]["pad_value"])
    g = gaussian(patch, win["importance_map"]["sigma_scale"])
    accum = np.zeros([io["output"]["shape"][1]] + list(data.shape[1:]), dtype=np.float32)
    weights = np.zeros(data.shape[1:], dtype=np.float32)
    flips = [c for r in range(len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]
    for s in itertools.product(*(window_starts(n, p, step_size) for n, p in zip(data.shape[1:], patch))):
        box = tuple(slice(a, a + p) for a, p in zip(s, patch))
        x = data[(slice(None),) + box][None]
        logits = 0
        for axes in flips:  # test-time mirroring: flip the window, run it, flip the logits back, average
            dims = tuple(2 + a for a in axes)
            xf = np.ascontiguousarray(np.flip(x, dims)) if dims else x
            y = session.run([io["output"]["name"]], {io["input"]["name"]: xf})[0]
            logits = logits + (np.flip(y, dims) if dims else y)
        accum[(slice(None),) + box] += (logits[0] / len(flips)) * g
        weights[box] += g
    accum /= weights
    return accum[(slice(None),) + tuple(slice(lo, lo + n) for lo, n in zip(pad_lo, spatial))]


# ---------------------------------------------------------------------------------------- the case
def segment(model: str, ct_path: str, out_path: str, step_size=None, mirroring=True, largest_component=False,
            threads: int = 0) -> np.ndarray:
    with open(model + ".json", encoding="utf-8") as f:
        meta = json.load(f)
    pre, out = meta["preprocessing"], meta["output"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

    img = nib.load(ct_path)
    spacing = np.linalg.norm(img.affine[:3, :3], axis=0)
    raw = np.asarray(img.dataobj, dtype=np.float32)  # scl_slope/scl_inter applied, as ITK reads it
    perm, flips = plan_reorientation(img.affine, pre["orientation"]) if pre["orientation"] else ((0, 1, 2), [0] * 3)
    raw, spacing = reorient(raw, perm, flips), spacing[list(perm)]
    box = crop_box(raw, pre["crop"]["threshold"])
    cropped = raw[tuple(slice(lo, hi) for lo, hi in box)]
    x = normalise(cropped, pre["channels"][0]["normalization"])  # one CT channel
    target, rs = pre["target_spacing_mm"], pre["resampling"]
    new_shape = [max(1, int(round(s * sp / t))) for s, sp, t in zip(cropped.shape, spacing, target)]
    x = resample(x, new_shape, rs["image_spline_order"], separate_axis(spacing, target, rs["anisotropy_threshold"]))

    mirror = meta["sliding_window"]["mirror_axes"] if mirroring else []
    logits = sliding_window(session, x[None], meta, step_size or meta["sliding_window"]["step_size_default"], mirror)
    if out["activation"] == "softmax":
        e = np.exp(logits - logits.max(0, keepdims=True))
        probs = e / e.sum(0, keepdims=True)
    else:
        probs = 1.0 / (1.0 + np.exp(-logits))

    # Back onto the cropped grid one channel at a time, deciding labels there (everything outside is background).
    sep = separate_axis(target, spacing, rs["anisotropy_threshold"])
    values = np.array([c["label_value"] for c in out["classes"]])
    index = best = None
    for c in range(probs.shape[0]):
        p = resample(probs[c], cropped.shape, 1, sep)
        if out["activation"] == "softmax":  # argmax, ties to the lower channel
            if best is None:
                best, index = p, np.zeros(p.shape, dtype=np.int64)
            else:
                better = p > best
                best, index[better] = np.where(better, p, best), c
        else:  # sigmoid: channel c wherever p > 0.5, later channels overwrite earlier ones
            index = np.full(p.shape, -1, dtype=np.int64) if index is None else index
            index[p > 0.5] = c
    labels_block = np.where(index >= 0, values[np.maximum(index, 0)], 0)
    dtype = np.uint8 if values.max() < 256 else np.uint16
    labels = np.zeros(raw.shape, dtype=dtype)
    labels[tuple(slice(lo, hi) for lo, hi in box)] = labels_block
    if largest_component:
        for v in values[values > 0]:
            comp, n = ndimage.label(labels == v, structure=np.ones((3, 3, 3)))
            if n > 1:
                sizes = np.bincount(comp.ravel())
                sizes[0] = 0
                labels[(comp > 0) & (comp != sizes.argmax())] = 0
    labels = np.ascontiguousarray(undo_reorient(labels, perm, flips))
    header = img.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1, 0)
    nib.save(nib.Nifti1Image(labels, img.affine, header), out_path)
    return labels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="MODEL.onnx written by suprem_export_onnx (MODEL.onnx.json beside it)")
    p.add_argument("ct", help="input CT, NIfTI")
    p.add_argument("output", help="label map to write, NIfTI (the input's grid and header)")
    p.add_argument("--step-size", type=float, help="window spacing as a fraction of the patch (default: the "
                                                   "record's step_size_default)")
    p.add_argument("--no-mirroring", action="store_true", help="skip test-time mirroring (up to 8x faster)")
    p.add_argument("--largest-component", action="store_true", help="keep each label's largest component")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    a = p.parse_args(argv)
    labels = segment(a.model, a.ct, a.output, a.step_size, not a.no_mirroring, a.largest_component, a.threads)
    print(f"wrote {a.output}: labels {sorted(int(v) for v in np.unique(labels))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
