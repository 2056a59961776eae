"""``suprem_train DATASET FOLD``: fine-tune SuPreM (or train from scratch) on one fold of a planned dataset;
``suprem_train DATASET cv``: every cross-validation fold (:mod:`suprem_nn.training.cross_validation`)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..networks.backbones import released_backbones
from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_train`` (train one fold, or every fold with FOLD ``cv``); ``--debug`` and
    ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_train",
        description="Train one cross-validation fold, or all of them with FOLD 'cv'. Every setting is also a field "
                    "of a --config JSON file; all of them are recorded in "
                    "<results>/<dataset>/<plan>/fold_<k>/config.json.")
    p.add_argument("dataset", help="dataset name (Dataset101_X), numeric id (101) or raw folder path")
    p.add_argument("fold", help="0-4, 'all' to train on every case, or 'cv' for every cross-validation fold: in "
                                "turn (one per GPU on a multi-GPU node), skipping finished folds and continuing "
                                "interrupted ones, then a per-fold and mean Dice summary")
    p.add_argument("--folds", nargs="+", type=int, metavar="K",
                   help="with FOLD 'cv': only these folds (default: all folds of splits_final.json)")
    p.add_argument("--parallel-folds", type=int, metavar="N",
                   help="with FOLD 'cv': folds trained at once as separate processes (default: one per GPU when "
                        "training on CUDA, else 1; on the CPU the cores are shared between them)")
    p.add_argument("--plan", dest="plan_name", help="plan name (default: suprem_<backbone> with --pretrained, "
                                                    "else the dataset's only plan)")
    init = p.add_mutually_exclusive_group()
    init.add_argument("--pretrained", choices=released_backbones(),
                      help="initialise from the SuPreM backbone (default when the plan was planned --pretrained)")
    init.add_argument("--from-scratch", action="store_true", default=None, help="random initialisation")
    p.add_argument("--pretrained-checkpoint", metavar="PATH",
                   help="weights file: a released SuPreM file or a suprem_export_backbone file; initialises any plan "
                        "(default with --pretrained: $SUPREM_WEIGHTS/<file> or ~/suprem_nn_data/weights/<file>)")
    p.add_argument("--allow-unsafe-checkpoint", action="store_true", default=None,
                   help="allow unpickling a legacy weights file that plain tensors cannot describe (trusted files only)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="training length in epochs (default: the plan's training recipe, 200 for the SuPreM "
                        "presets); the learning-rate schedule is stretched to it, and --continue with a new value "
                        "extends or shortens a run")
    p.add_argument("--iterations-per-epoch", type=int, metavar="N",
                   help="training steps (batches) per epoch (default: the plan's recipe, 250 as nnU-Net); an epoch "
                        "ends with validation, a checkpoint and a line in training_log.txt")
    p.add_argument("--val-iterations", type=int, help="validation batches per epoch for the pseudo-Dice (0: none)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-4 adamw_cosine, 1e-2 sgd_poly)")
    p.add_argument("--batch-size", type=int, help="patches per process and step (default: the plan's)")
    p.add_argument("--recipe", choices=["adamw_cosine", "sgd_poly"],
                   help="optimiser and schedule: adamw_cosine (SuPreM's fine-tuning: AdamW, warm-up then cosine; "
                        "the default) or sgd_poly (nnU-Net's: SGD momentum 0.99 Nesterov, polynomial decay)")
    p.add_argument("--freeze-encoder-epochs", type=int, help="keep the pretrained encoder frozen for N epochs")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--num-gpus", type=int, help="data-parallel processes on this node (torchrun sets its own)")
    p.add_argument("--num-workers", type=int, help="data-loading processes per training process (0: in-process)")
    p.add_argument("--seed", type=int, help="random seed of weights, sampling and augmentation (default 12345)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    p.add_argument("--no-final-validation", dest="final_validation", action="store_false", default=None,
                   help="skip the sliding-window validation of whole cases at the end")
    p.add_argument("--config", dest="config_file", metavar="FILE", help="JSON object of training settings")
    p.add_argument("--continue", dest="continue_training", action="store_true",
                   help="resume this fold from its last complete epoch")
    add_common_arguments(p)
    return p


_OPTION_NAMES = ("plan_name", "pretrained", "from_scratch", "pretrained_checkpoint", "allow_unsafe_checkpoint",
                 "epochs", "iterations_per_epoch", "val_iterations", "lr", "batch_size", "recipe",
                 "freeze_encoder_epochs", "device", "num_gpus", "num_workers", "seed", "compile", "final_validation")


def _body(args: argparse.Namespace) -> int:
    from ..errors import SupremError
    from ..training import train
    options = {k: getattr(args, k) for k in _OPTION_NAMES if getattr(args, k) is not None}
    if args.fold == "cv":
        return _cross_validate(args, options)
    if args.folds is not None or args.parallel_folds is not None:
        raise SupremError(f"--folds and --parallel-folds go with FOLD 'cv' (got FOLD {args.fold!r}); "
                          f"e.g. suprem_train {args.dataset} cv --folds 0 1 2")
    record = train(args.dataset, args.fold, config_file=args.config_file, continue_training=args.continue_training,
                   echo=not args.quiet, **options)
    if record and record.get("final_validation_mean_dice") is not None:
        print(f"final validation mean Dice: {record['final_validation_mean_dice']:.4f}")
    return 0


def _cross_validate(args: argparse.Namespace, options: dict) -> int:
    from ..training.cross_validation import cross_validate, format_summary
    # cv always continues interrupted folds, so --continue changes nothing here
    result = cross_validate(args.dataset, folds=args.folds, parallel_folds=args.parallel_folds,
                            config_file=args.config_file, echo=not args.quiet, **options)
    print(format_summary(result))
    return 1 if result.failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_train`` (train one fold, or every fold with FOLD ``cv``) with ``argv`` (default ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead), or when a fold of ``cv`` failed;
    130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_train", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
