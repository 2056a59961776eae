"""suprem_predict -d with inference_instructions.json: what is refused before any network runs."""
from __future__ import annotations

import json

import pytest

from suprem_nn.cli.predict import main as predict
from suprem_nn.paths import results_root

DATASET = "Dataset903_Chosen"


def write_instructions(text=None, plans=("plan_a", "plan_b")) -> None:
    folder = results_root() / DATASET
    for p in plans:
        (folder / p).mkdir(parents=True, exist_ok=True)
        (folder / p / "plans.json").write_text("{}")
    body = text if text is not None else json.dumps({
        "format_version": 1, "dataset": DATASET, "activation": "softmax",
        "members": [{"plan": "plan_a", "folds": [0, 1, 2, 3, 4]}, {"plan": "plan_gone", "folds": [0, 1]}],
        "postprocessing": {"largest_component": ["liver"]}, "class_names": ["liver", "spleen"],
        "label_values": [1, 2], "cross_validation": {"chosen": {"mean_dice_after_postprocessing": 0.91}}})
    (folder / "inference_instructions.json").write_text(body)


def run(capsys, *args):
    rc = predict(list(args))
    return rc, capsys.readouterr().err


def test_prints_the_choice_and_refuses_options_it_fixes(real_ct, tmp_path, capsys):
    write_instructions()
    ct = str(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    rc, err = run(capsys, "-i", ct, "-o", str(tmp_path / "out"), "-d", DATASET, "--classes", "liver", "--quiet")
    assert rc == 1
    assert ("suprem_predict: using the ensemble of plan_a (folds 0,1,2,3,4) + plan_gone (folds 0,1); largest "
            "component kept for: liver, CV Dice 0.9100") in err
    assert "--classes cannot be combined with the chosen configuration" in err and "add -p PLAN" in err
    # a member whose model folder is gone: named, with the instructions file
    rc, err = run(capsys, "-i", ct, "-o", str(tmp_path / "out"), "-d", DATASET, "--quiet")
    assert rc == 1 and "the chosen plan 'plan_gone' has no trained model folder" in err
    assert str(results_root() / DATASET / "inference_instructions.json") in err


@pytest.mark.parametrize("text, problem", [("{not json", "not valid JSON"),
                                           ('{"format_version": 1, "dataset": "x"}', "malformed instructions"),
                                           ('{"format_version": 7}', "format version 1"),
                                           ('{"format_version": 1, "dataset": "x", "members": [{"plan": "a", '
                                            '"folds": [0]}], "activation": "softmax", "class_names": ["liver"], '
                                            '"label_values": [1], "cross_validation": []}',
                                            "malformed instructions (AttributeError")])
def test_broken_instructions_name_the_file(tmp_path, capsys, text, problem):
    write_instructions(text)
    rc, err = run(capsys, "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", DATASET, "--quiet")
    assert rc == 1 and problem in err and "inference_instructions.json" in err and "run suprem_find_best" in err
    assert len(err.strip().splitlines()) == 1


def test_without_instructions_several_plans_point_to_the_selection(tmp_path, capsys):
    write_instructions()
    (results_root() / DATASET / "inference_instructions.json").unlink()
    rc, err = run(capsys, "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", DATASET, "--quiet")
    assert rc == 1 and f"choose one with -p, or let cross-validation choose: suprem_find_best_configuration " \
                       f"{DATASET}" in err
