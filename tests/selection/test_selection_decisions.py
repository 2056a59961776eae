"""Configuration selection and the per-class post-processing decision on constructed out-of-fold predictions."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from suprem_nn.cli.find_best_configuration import main as find_best
from suprem_nn.evaluation.selection import find_best_configuration
from suprem_nn.io import write_image
from suprem_nn.paths import results_root
from tests.selection.oof_files import GEOMETRY, softmax_from_labels, write_oof_plan, write_reference

DATASET = "Dataset901_Constructed"
CASES = [f"case_{i}" for i in range(5)]
LIVER, KIDNEYS = 1, 2
LIVER_BOX = np.s_[5:20, 5:20, 4:14]                              # 2250 voxels
KIDNEY_BOXES = [np.s_[25:31, 5:11, 4:10], np.s_[25:31, 25:31, 4:10]]  # 216 + 216 voxels, 14 voxels apart
STRAY_A, STRAY_B = np.s_[33:36, 15:18, 15:18], np.s_[8:11, 28:31, 15:18]  # 27 voxels each, far from every organ


def reference_map() -> np.ndarray:
    lab = np.zeros(GEOMETRY.shape, dtype=np.uint8)
    lab[LIVER_BOX] = LIVER
    for box in KIDNEY_BOXES:
        lab[box] = KIDNEYS  # one class, two pieces: a split organ
    return lab


def probabilities(stray) -> np.ndarray:
    """Correct everywhere (0.9 on the reference label), plus a stray liver island believed at 0.6."""
    probs = softmax_from_labels(reference_map(), 2)
    if stray is not None:
        probs[(slice(None),) + stray] = np.array([0.2, 0.6, 0.2], dtype=np.float32)[:, None, None, None]
    return probs


@pytest.fixture
def references(tmp_path):
    return {c: write_reference(tmp_path / "labels", c, reference_map()) for c in CASES}


def test_postprocessing_removes_the_stray_component_and_keeps_the_split_organ(references):
    write_oof_plan(results_root(), DATASET, "plan_a", {c: probabilities(STRAY_A) for c in CASES}, references)
    sel = find_best_configuration(DATASET, progress=False)
    assert sel.chosen.members == ["plan_a"]
    liver, kidneys = sel.postprocessing["liver"], sel.postprocessing["kidneys"]
    # liver: 2250 true voxels + a 27-voxel island -> Dice 4500 / 4527; the largest component drops the island
    assert liver["dice_without"] == pytest.approx(4500 / 4527)
    assert liver["dice_with"] == pytest.approx(1.0)
    assert liver["largest_component"] is True
    # kidneys: both pieces are right (Dice 1); the largest component would drop one piece -> 2*216 / 648
    assert kidneys["dice_without"] == pytest.approx(1.0)
    assert kidneys["dice_with"] == pytest.approx(432 / 648)
    assert kidneys["largest_component"] is False
    assert sel.largest_component == ["liver"]
    assert sel.chosen.mean_dice(sel.class_names, ["liver"]) == pytest.approx(1.0)


def test_ensemble_chosen_when_it_beats_both_members_and_files_written(references, capsys):
    write_oof_plan(results_root(), DATASET, "plan_a", {c: probabilities(STRAY_A) for c in CASES}, references)
    write_oof_plan(results_root(), DATASET, "plan_b", {c: probabilities(STRAY_B) for c in CASES}, references)
    assert find_best([DATASET, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "chosen: plan_a + plan_b; keep the largest component for: no class" in out
    folder = results_root() / DATASET
    instr = json.loads((folder / "inference_instructions.json").read_text())
    assert [m["plan"] for m in instr["members"]] == ["plan_a", "plan_b"]
    assert all(m["folds"] == [0, 1, 2, 3, 4] for m in instr["members"])
    assert instr["postprocessing"]["largest_component"] == []
    cv = instr["cross_validation"]
    means = {c["name"]: c["mean_dice"] for c in cv["configurations"]}
    # each member has its island in the liver; averaged, each island is outvoted by the other member's background
    assert means["plan_a + plan_b"] == pytest.approx(1.0)
    assert means["plan_a"] == pytest.approx((4500 / 4527 + 1) / 2)
    assert cv["chosen"]["mean_dice_after_postprocessing"] >= max(means.values())
    assert cv["num_cases"] == 5 and sorted(cv["cases"].values()) == [0, 1, 2, 3, 4]
    rows = (folder / "cv_report.csv").read_text().splitlines()
    assert rows[0] == "configuration,class,cv_dice,chosen"
    assert "plan_a + plan_b,mean,1.000000,yes" in rows and "plan_a,liver,0.994036,"[:-1] in "\n".join(rows)
    md = (folder / "cv_report.md").read_text()
    assert "**Chosen: plan_a + plan_b**" in md and "| liver | 0.9940 | 0.9940 | 1.0000 | 1.0000 |" in md
    assert (folder / "cv_dice_by_configuration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_folds_are_refused_by_plan_and_fold_number(references, capsys):
    a = write_oof_plan(results_root(), DATASET, "plan_a", {c: probabilities(STRAY_A) for c in CASES}, references)
    b = write_oof_plan(results_root(), DATASET, "plan_b", {c: probabilities(STRAY_B) for c in CASES}, references)
    shutil.rmtree(b / "fold_3")
    shutil.rmtree(b / "fold_1")
    (a / "fold_4" / "checkpoint_final.pth").unlink()
    assert find_best([DATASET, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("suprem_find_best_configuration: error: ")
    assert "plan_a fold 4: training not finished" in err and "plan_b folds 1, 3: not trained" in err
    assert not (results_root() / DATASET / "inference_instructions.json").exists()
    # leaving the incomplete plan out works
    (a / "fold_4" / "checkpoint_final.pth").write_bytes(b"x")
    assert find_best([DATASET, "-p", "plan_a", "--quiet"]) == 0


def test_mixed_softmax_and_sigmoid_plans_are_compared_but_not_averaged(references, tmp_path, capsys):
    write_oof_plan(results_root(), DATASET, "plan_a", {c: probabilities(STRAY_A) for c in CASES}, references)
    masks = {}
    lab = reference_map()
    for c in CASES:
        masks[c] = {}
        for name, v in (("liver", LIVER), ("kidneys", KIDNEYS)):
            masks[c][name] = tmp_path / "masks" / c / f"{name}.nii.gz"
            write_image((lab == v).astype(np.uint8), GEOMETRY, masks[c][name])
    sig = np.stack([(lab == LIVER), (lab == KIDNEYS)]).astype(np.float32) * 0.8 + 0.1
    write_oof_plan(results_root(), DATASET, "plan_sig", {c: sig for c in CASES}, masks, multilabel=True)
    assert find_best([DATASET, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "plan_a + plan_sig: not averaged: plan_a is softmax (exclusive labels), plan_sig is sigmoid" in out
    assert "refused (not converted)" in out
    instr = json.loads((results_root() / DATASET / "inference_instructions.json").read_text())
    assert [m["plan"] for m in instr["members"]] == ["plan_sig"] and instr["activation"] == "sigmoid"
    assert [c["name"] for c in instr["cross_validation"]["configurations"]] == ["plan_a", "plan_sig"]
    assert "## Ensembles not evaluated" in (results_root() / DATASET / "cv_report.md").read_text()


def test_plans_with_different_classes_are_refused(references, capsys):
    write_oof_plan(results_root(), DATASET, "plan_a", {c: probabilities(STRAY_A) for c in CASES}, references)
    write_oof_plan(results_root(), DATASET, "plan_c", {c: probabilities(None) for c in CASES}, references,
                   classes=("liver", "spleen"))
    assert find_best([DATASET, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "plans plan_a and plan_c predict different classes (only in plan_a: kidneys; only in plan_c: spleen)" in err
