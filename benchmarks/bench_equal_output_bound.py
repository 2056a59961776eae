"""What bounds "identical labels to nnUNetv2_predict, faster": how much of a case a faster engine leaves undecided.

usage: python benchmarks/bench_equal_output_bound.py MODEL_FOLDER [--fold all] [--mirroring] [--cases ...]

MODEL_FOLDER is a trained nnU-Net v2 model folder (the benchmark model of predict_bench.py). For each real CT of
shared/data/real_ct the script preprocesses the case as ``suprem_predict --nnunet-model`` does, then runs the
network pass twice through the production code (NnunetPredictor.network_pass: nnU-Net's windows, Gaussian and
float16 sums): once with torch float32, which reproduces nnU-Net's labels bit for bit, once with OpenVINO f32.
It prints, in network space:

* the voxels whose label differs and the voxels whose float16 sum differs in any class;
* near-ties: voxels whose top two classes in torch's sums are at most 0, 1 or 4 float16 steps (ulps) apart;
* **the windows a repair would have to recompute with torch**, at the least: every window that covers a voxel
  whose label differs. A voxel's sum is the float16 sum over every window covering it, in window order, so
  restoring nnU-Net's label needs each of those windows from nnU-Net's own kernels. And it needs more in
  practice: which voxels differ is only known after running torch, so a repair would have to recompute the
  windows of every near-tie voxel;
* the network seconds of both passes and what a repair of at least those windows would cost on top of
  OpenVINO's pass (``openvino + fraction x torch``), against torch's pass alone.

Reading: if that lower bound is most of the windows, no engine that sums in another order can give nnU-Net's
labels faster than nnU-Net's own kernels, and the equal-output speed-up is bounded by the torch network pass
(documentation/benchmarks.md, "Equal output: what bounds it").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CASES = ["ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm", "ts_upper_abdomen_ce_dicom"]


def float16_steps(values):
    """Size of one float16 step (ulp) at each value's magnitude (subnormals: the smallest step)."""
    import torch

    mag = values.abs().clamp(min=2.0 ** -14)
    return torch.exp2(torch.floor(torch.log2(mag)) - 10)


def windows_covering(mask, starts, pad_lo, patch) -> int:
    """How many windows hold at least one voxel of ``mask`` (network-space bool tensor)."""
    count = 0
    for s in starts:
        lo = [max(a - b, 0) for a, b in zip(s, pad_lo)]
        hi = [a + p - b for a, p, b in zip(s, patch, pad_lo)]
        if bool(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].any()):
            count += 1
    return count


def measure_case(predictor, openvino_networks, torch_networks, image_path: Path) -> dict:
    import torch

    from suprem_nn.inference.nnunet.predictor import nnunet_steps
    from suprem_nn.inference.sliding_window import window_layout
    from suprem_nn.io.image_io import read_image

    image, geometry = read_image(image_path)
    case = predictor.prepare([image], geometry, image_path.parent.name)
    sums, seconds = {}, {}
    for name, nets in (("torch", torch_networks), ("openvino", openvino_networks)):
        predictor.networks = nets
        t0 = time.perf_counter()
        sums[name] = predictor.network_pass(case).float()
        seconds[name] = time.perf_counter() - t0
    ref, ov = sums["torch"], sums["openvino"]
    differ = ref.argmax(0) != ov.argmax(0)
    top2 = torch.topk(ref, 2, dim=0).values
    steps_apart = (top2[0] - top2[1]) / float16_steps(top2[0])
    patch = list(predictor.prep.patch_size)
    pad_lo, _, starts = window_layout(list(ref.shape[1:]), patch, predictor.step_size, nnunet_steps)
    out = {"voxels": int(differ.numel()), "windows": len(starts),
           "labels_differ": int(differ.sum()), "sums_differ": int((ref != ov).any(0).sum()),
           "windows_with_differing_labels": windows_covering(differ, starts, pad_lo, patch),
           "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    for k in (0, 1, 4):
        near = steps_apart <= k
        out[f"near_ties_{k}_ulp"] = int(near.sum())
        out[f"windows_with_near_ties_{k}_ulp"] = windows_covering(near, starts, pad_lo, patch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_folder", type=Path)
    ap.add_argument("--fold", default="all")
    ap.add_argument("--mirroring", action="store_true", help="mirror over the model's axes (8 passes per window)")
    ap.add_argument("--cases", nargs="+", default=CASES)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "real_ct")
    args = ap.parse_args()

    import torch

    from suprem_nn.inference.engines import prepare_engine
    from suprem_nn.inference.nnunet.predictor import NnunetPredictor

    predictor = NnunetPredictor.from_folder(args.model_folder, folds=[args.fold], use_mirroring=args.mirroring)
    torch_networks = list(predictor.networks)
    window = [1, predictor.model.num_inputs, *predictor.prep.patch_size]
    openvino_networks, report = prepare_engine(torch_networks, "openvino", torch.device("cpu"), window, None)
    print(f"model {args.model_folder.name}, patch {predictor.prep.patch_size}, mirroring "
          f"{'on' if args.mirroring else 'off'}, OpenVINO {report['version']} ({report['precision']}), "
          f"{torch.get_num_threads()} threads")
    total = {"torch": 0.0, "openvino": 0.0, "windows": 0, "repair_windows": 0}
    for name in args.cases:
        image = args.shared / name / "ct.nii.gz"
        r = measure_case(predictor, openvino_networks, torch_networks, image)
        print(f"{name}: {r['voxels']:,} voxels, {r['windows']} windows | labels differ {r['labels_differ']}, "
              f"float16 sums differ {r['sums_differ']:,} ({100 * r['sums_differ'] / r['voxels']:.1f} %) | "
              f"near-ties <= 0/1/4 ulp: {r['near_ties_0_ulp']}/{r['near_ties_1_ulp']}/{r['near_ties_4_ulp']} "
              f"voxels in {r['windows_with_near_ties_0_ulp']}/{r['windows_with_near_ties_1_ulp']}/"
              f"{r['windows_with_near_ties_4_ulp']} windows | windows holding a differing label: "
              f"{r['windows_with_differing_labels']}/{r['windows']} | network torch {r['seconds']['torch']} s, "
              f"OpenVINO {r['seconds']['openvino']} s")
        total["torch"] += r["seconds"]["torch"]
        total["openvino"] += r["seconds"]["openvino"]
        total["windows"] += r["windows"]
        total["repair_windows"] += r["windows_with_differing_labels"]
    fraction = total["repair_windows"] / max(total["windows"], 1)
    repaired = total["openvino"] + fraction * total["torch"]
    print(f"all cases: a repair recomputes at least {total['repair_windows']}/{total['windows']} windows "
          f"({100 * fraction:.0f} %): network at least {repaired:.1f} s (OpenVINO {total['openvino']:.1f} s + "
          f"{100 * fraction:.0f} % of torch's {total['torch']:.1f} s) against torch alone {total['torch']:.1f} s "
          f"({total['torch'] / repaired:.2f}x at best)")


if __name__ == "__main__":
    main()
