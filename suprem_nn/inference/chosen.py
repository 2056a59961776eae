"""``suprem_predict -d DATASET`` without ``-p`` when ``inference_instructions.json`` exists: predict with the chosen
configuration (or each member of the chosen ensemble), then average and post-process as cross-validation decided.

Each member predicts into ``<output>/.members/<plan>/`` with its probabilities saved (a re-run skips what is
there, so an interrupted run continues); :func:`~suprem_nn.inference.ensemble.ensemble_folders` then writes
the outputs, the same code path whose labels configuration selection scored. The member folder is removed
after a run without failures unless probabilities were asked for (``--save-probabilities`` keeps it).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Optional, Sequence

from ..errors import SupremError
from ..io.image_io import image_ending
from ..model_folder import FINAL_CHECKPOINT, is_model_folder
from ..paths import dataset_folder, results_root
from ..utils.atomic import atomic_write_json
from .instructions import InferenceInstructions
from .run import RunSummary
from .settings import PredictionSettings

log = logging.getLogger("suprem_nn.predict")

MEMBERS_FOLDER = ".members"


def predict_with_instructions(input, output, instructions: InferenceInstructions, settings: PredictionSettings,
                              folds: Optional[Sequence] = None,
                              checkpoint_name: str = FINAL_CHECKPOINT) -> RunSummary:
    """Run the instructions' members on ``input`` and write the ensembled, post-processed labels to ``output``.

    ``folds`` (None: each member's folds from the instructions) overrides the folds of every member. Every member
    predicts with ``settings`` (device, step size, ...), which must leave classes, post-processing, statistics,
    previews and parts unset: the instructions decide the classes and the post-processing. Returns the
    :class:`~suprem_nn.inference.run.RunSummary` of the whole run.
    """
    from .cases import find_cases
    from .ensemble import ensemble_folders
    from .sources import predict_with_model_folder

    per_class, save_probabilities = settings.per_class, settings.save_probabilities
    overwrite, progress = settings.overwrite, settings.progress
    unsupported = {"--classes": settings.classes, "--fast": settings.fast, "--postprocess": settings.postprocess,
                   "--statistics": settings.statistics, "--preview": settings.preview, "--part": settings.part}
    given = [name for name, value in unsupported.items() if value]
    if given:
        raise SupremError(f"{', '.join(given)} cannot be combined with the chosen configuration of "
                          f"{instructions.path} (it fixes classes and post-processing); add -p PLAN to predict "
                          "with one plan and these options")
    output = Path(output)
    single_file = image_ending(output) is not None
    report_dir = output.parent if single_file else output
    work = report_dir / (MEMBERS_FOLDER if not single_file else f".{output.name}{MEMBERS_FOLDER}")
    cases = find_cases(input, output)  # validates the input before any network is loaded
    summary = RunSummary()
    if not overwrite and all(c.output.exists() for c in cases):
        summary.skipped = [c.case_id for c in cases]
        log.info("%d case(s) already predicted, skipped (use --overwrite to redo them)", len(cases))
        summary.report_path = report_dir / "run_report.json"
        return summary
    models = dataset_folder(results_root(), instructions.dataset)
    member_reports = {}
    for m in instructions.members:  # all checked before the first member spends time predicting
        if not is_model_folder(models / m.plan):
            raise SupremError(f"the chosen plan '{m.plan}' has no trained model folder here ({models / m.plan}); "
                              "train it or run suprem_find_best_configuration again", instructions.path)
    # each member writes its probabilities and labels only; ensembling writes the per-class files
    member_settings = settings.replace(save_probabilities=True, per_class=False)
    for m in instructions.members:
        s = predict_with_model_folder(input, work / m.plan, models / m.plan, member_settings,
                                      list(folds) if folds else m.folds, checkpoint_name,
                                      source=f"model folder {models / m.plan}")
        summary.failures += [f for f in s.failures if f not in summary.failures]
        member_reports[m.plan] = str(s.report_path)
    failed = {f["case"] for f in summary.failures}
    # the members' files are named like the outputs (CASE.nii.gz, or NAME_seg.nii.gz for plain names: cases.py)
    case_of = {_stem(c.output): c.case_id for c in find_cases(input, work)}
    if len(failed) < len(cases):  # ensemble the cases every member finished
        e = ensemble_folders([work / m.plan for m in instructions.members], output,
                             largest_component=instructions.largest_component, per_class=per_class,
                             overwrite=overwrite, progress=progress,
                             skip_cases=failed | {stem for stem, cid in case_of.items() if cid in failed})
        summary.cases = [case_of.get(Path(c).parts[0], Path(c).parts[0]) for c in e.cases]
        summary.skipped = [case_of.get(Path(c).parts[0], Path(c).parts[0]) for c in e.skipped]
    summary.report_path = report_dir / "run_report.json"
    atomic_write_json(summary.report_path, {
        "source": f"inference instructions {instructions.path}", "configuration": instructions.describe(),
        # class name -> value of the written label maps: suprem_evaluate matches classes by these names
        "labels": dict(zip(instructions.class_names, (int(v) for v in instructions.label_values))),
        "members": [{"plan": m.plan, "folds": list(folds) if folds else m.folds,
                     "run_report": member_reports.get(m.plan)} for m in instructions.members],
        "largest_component": instructions.largest_component, "cases_predicted": summary.cases,
        "cases_skipped": summary.skipped, "failures": summary.failures})
    if not summary.failures and not save_probabilities:
        shutil.rmtree(work, ignore_errors=True)
    elif save_probabilities:
        log.info("member predictions and probabilities kept in %s", work)
    return summary


def _stem(path: Path) -> str:
    """``ct_seg.nii.gz`` -> ``ct_seg``: the name ensemble_folders gives a case."""
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem

