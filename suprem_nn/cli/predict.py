"""``suprem_predict -i INPUT -o OUTPUT``: wraps :func:`suprem_nn.inference.predict`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..model_folder import FINAL_CHECKPOINT
from ..networks.backbones import released_backbones
from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_predict`` (segment CT images); ``--debug`` and ``--quiet`` included."""
    p = argparse.ArgumentParser(
        prog="suprem_predict",
        description="Segment CT images with a trained suprem_nn model or a released SuPreM checkpoint. Outputs "
                    "land on the input's exact grid (shape, spacing, origin, direction).")
    p.add_argument("-i", "--input", required=True,
                   help="image file, folder of images (CASE_0000.nii.gz or plain names), DICOM series folder, or "
                        "AbdomenAtlas folder (CASE/ct.nii.gz)")
    p.add_argument("-o", "--output", required=True, help="output folder (or a .nii.gz file for a single input)")
    src = p.add_argument_group("model (choose one)")
    src.add_argument("-m", "--model-folder", help="trained model folder holding plans.json and fold_<k>/")
    src.add_argument("-d", "--dataset", help="dataset name or id; the model is looked up under SUPREM_RESULTS")
    src.add_argument("-p", "--plan", help="plan name with -d (needed when the dataset has several)")
    src.add_argument("--suprem", choices=released_backbones(),
                     help="run a released SuPreM checkpoint with SuPreM's direct-inference recipe (without "
                          "--checkpoint: the released file from $SUPREM_WEIGHTS, downloaded on first use)")
    src.add_argument("--checkpoint", metavar="FILE",
                     help="a SuPreM-layout .pth file for direct inference; its family is read from the file "
                          "(--suprem, when also given, must match it)")
    src.add_argument("--nnunet-model", metavar="RESULTS_FOLDER",
                     help="a trained nnU-Net v2 model folder (nnUNet_results/DatasetXXX/Trainer__Plans__config), "
                          "run with nnU-Net's preprocessing and export")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to ensemble (default: 0; with --nnunet-model 0 1 2 3 4 as nnU-Net); 'all' allowed")
    p.add_argument("--checkpoint-name", default=FINAL_CHECKPOINT, help="checkpoint file inside fold_<k>/")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--step-size", type=float, default=None,
                   help="window spacing as a fraction of the patch (default 0.5; 0.25 with --suprem)")
    p.add_argument("--disable-tta", action="store_true", help="no mirroring test-time augmentation (up to 8x faster)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp32", action="store_true",
                      help="force float32 (default: bfloat16 autocast on CUDA and on CPUs with native bfloat16, "
                           "which changes about 0.01%% of the voxels; see documentation/prediction.md)")
    prec.add_argument("--bf16", action="store_true", help="force bfloat16 autocast (also on CPUs that emulate it)")
    p.add_argument("--engine", choices=["torch", "openvino"], default=None,
                   help="what runs the network pass (default: openvino on the CPU when installed, torch otherwise "
                        "or when OpenVINO cannot convert the model; see documentation/prediction.md, Engines)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last_3d memory format for the network (default: where measured faster)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write <case>.npz (float16 probabilities in network space) and <case>.json")
    p.add_argument("--per-class", action="store_true", help="also write <out>/<case>/segmentations/<class>.nii.gz")
    p.add_argument("--classes", help="comma-separated class names to output (default: all; with --suprem the 9 "
                                     "AbdomenAtlas-1.0 organs)")
    p.add_argument("--fast", action="store_true", help="predict at twice the planned spacing (preview quality)")
    p.add_argument("--postprocess", choices=["largest-component"], default=None,
                   help="keep the largest 26-connected component per class (default with --suprem)")
    p.add_argument("-np", "--num-workers", type=int, default=1,
                   help="background threads for reading/preprocessing the next cases and writing the previous "
                        "one while the network runs (0: everything in sequence)")
    p.add_argument("--overwrite", action="store_true", help="re-predict cases whose output already exists")
    p.add_argument("--part", metavar="K/N",
                   help="predict only part K of N (1..N) of the input cases, sorted by case id, every N-th from K: "
                        "N processes, GPUs or nodes (e.g. a SLURM array) can fill one output folder at once; each "
                        "writes run_report_partKofN.json and the last to finish merges them into run_report.json")
    p.add_argument("--statistics", action="store_true", help="write statistics.json (volume in ml, mean HU per class)")
    p.add_argument("--preview", action="store_true",
                   help="write <case>_preview.png: radiological-convention slices with orientation letters and a "
                        "legend of the classes shown (documentation/prediction.md)")
    add_common_arguments(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from ..inference import predict

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if args.dataset and not args.plan:  # say which configuration -d uses when cross-validation chose one
        from ..inference.instructions import find_instructions

        chosen = find_instructions(args.dataset)
        if chosen is not None:
            print(f"suprem_predict: using the {chosen.describe()}", file=sys.stderr)
    summary = predict(args.input, args.output, args.model_folder, dataset=args.dataset, plan=args.plan,
                      folds=args.folds, checkpoint_name=args.checkpoint_name, suprem=args.suprem,
                      checkpoint=args.checkpoint, device=args.device, step_size=args.step_size,
                      disable_tta=args.disable_tta, save_probabilities=args.save_probabilities,
                      per_class=args.per_class, classes=classes, fast=args.fast, postprocess=args.postprocess,
                      num_workers=args.num_workers, overwrite=args.overwrite, bf16=args.bf16, fp32=args.fp32,
                      channels_last=args.channels_last, statistics=args.statistics, preview=args.preview,
                      progress=not args.quiet, nnunet_model=args.nnunet_model, part=args.part,
                      engine=args.engine)
    done = len(summary.cases)
    print(f"suprem_predict: {done} case(s) predicted, {len(summary.skipped)} already done, "
          f"{len(summary.failures)} failed; report: {summary.report_path}", file=sys.stderr)
    for f in summary.failures:
        print(f"suprem_predict: failed: {f['case']}: {f['file']}: {f['problem']}", file=sys.stderr)
    return 1 if summary.failures else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_predict`` (segment CT images) with ``argv`` (default ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead), or when any case failed (each
    listed on stderr); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_predict", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
