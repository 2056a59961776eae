"""Real CTs end to end: two tiny configurations x five folds -> suprem_find_best_configuration -> suprem_predict -d.

Run as a user runs it (subprocesses of the installed modules). Tiny budgets: 1 epoch of 2 iterations per fold,
no pseudo-Dice batches, so the numbers are low; what is checked is the plumbing and the selection's properties.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.conftest import make_cv_dataset, plan_tiny

REPO = Path(__file__).resolve().parents[2]
DATASET = "Dataset102_RealCV"
PLANS = ("tiny_segresnet", "tiny_segresnet_shallow")
BUDGET = ["--from-scratch", "--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations", "0",
          "--num-workers", "0", "--seed", "3", "--device", "cpu", "--quiet"]


def _run(module, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", f"suprem_nn.cli.{module}", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{module} {' '.join(args)}\n{p.stdout}\n{p.stderr}"
    return p


def _add_shallow_plan(preprocessed: Path) -> None:
    """A second configuration on the same cache: the tiny SegResNet with three resolution levels instead of four."""
    shutil.copytree(preprocessed / PLANS[0], preprocessed / PLANS[1])
    plan = json.loads((preprocessed / PLANS[1] / "plans.json").read_text())
    plan["plan_name"] = PLANS[1]
    plan["network_kwargs"] = {**plan["network_kwargs"], "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
    (preprocessed / PLANS[1] / "plans.json").write_text(json.dumps(plan))


def _train_all_folds(plan: str) -> None:
    _run("train", DATASET, "cv", "--plan", plan, *BUDGET)


def test_two_configurations_five_folds_select_and_predict(real_ct, tmp_path):
    raw = Path(os.environ["SUPREM_RAW"])
    results = Path(os.environ["SUPREM_RESULTS"])
    t0 = time.perf_counter()
    make_cv_dataset(raw, DATASET, n_cases=6)
    preprocessed = plan_tiny(DATASET)
    _add_shallow_plan(preprocessed)
    for plan in PLANS:
        _train_all_folds(plan)
    t_train = time.perf_counter()

    p = _run("find_best_configuration", DATASET)
    t_select = time.perf_counter()
    folder = results / DATASET
    instr = json.loads((folder / "inference_instructions.json").read_text())
    cv = instr["cross_validation"]
    assert cv["num_cases"] == 6 and sorted(set(cv["cases"].values())) == [0, 1, 2, 3, 4]
    assert [c["name"] for c in cv["configurations"]] == [*PLANS, " + ".join(PLANS)]
    # the selection's property, read from the report: the chosen result is at least as good as every member
    with open(folder / "cv_report.csv") as f:
        rows = list(csv.DictReader(f))
    means = {r["configuration"]: float(r["cv_dice"]) for r in rows if r["class"] == "mean"}
    chosen = [r["configuration"] for r in rows if r["class"] == "mean" and r["chosen"] == "yes"]
    assert len(chosen) == 2 and chosen[1] == chosen[0] + " (post-processed)"
    for plan in PLANS:
        assert means[chosen[1]] >= means[chosen[0]] >= means[plan] - 1e-6
    assert chosen[0] == instr["cross_validation"]["chosen"]["name"]
    assert f"chosen: {chosen[0]};" in p.stdout
    assert (folder / "cv_dice_by_configuration.png").stat().st_size > 5000

    # suprem_predict -d without -p uses the instructions and says so
    images = tmp_path / "images"
    images.mkdir()
    case = sorted((raw / DATASET / "imagesTr").iterdir())[0]
    shutil.copyfile(case, images / case.name)
    out = tmp_path / "pred"
    p = _run("predict", "-i", str(images), "-o", str(out), "-d", DATASET, "--disable-tta")
    t_predict = time.perf_counter()
    members = " + ".join(f"{m['plan']} (folds 0,1,2,3,4)" for m in instr["members"])
    kind = "ensemble of" if len(instr["members"]) > 1 else "configuration"
    assert f"suprem_predict: using the {kind} {members}; largest component kept for: " in p.stderr
    case_id = case.name[: -len("_0000.nii.gz")]
    from suprem_nn.io import read_image

    labels, geo = read_image(out / f"{case_id}.nii.gz")
    ct_geo = read_image(case)[1]
    assert geo.same_grid(ct_geo, atol=1e-5)
    assert not (out / ".members").exists()
    report = json.loads((out / "run_report.json").read_text())
    assert [m["plan"] for m in report["members"]] == [m["plan"] for m in instr["members"]]

    # the same result by hand: each member with all folds and saved probabilities, then suprem_ensemble with the
    # instructions' post-processing
    by_hand = []
    for m in instr["members"]:
        _run("predict", "-i", str(images), "-o", str(tmp_path / m["plan"]), "-d", DATASET, "-p", m["plan"],
             "-f", "0", "1", "2", "3", "4", "--disable-tta", "--save-probabilities", "--quiet")
        by_hand.append(str(tmp_path / m["plan"]))
    _run("ensemble", "-i", *by_hand, "-o", str(tmp_path / "by_hand"), "--postprocess-from",
         str(folder / "inference_instructions.json"), "--quiet")
    assert np.array_equal(read_image(tmp_path / "by_hand" / f"{case_id}.nii.gz")[0], labels)
    print(f"\nCPU seconds: data+plan+train {t_train - t0:.1f}, select {t_select - t_train:.1f}, "
          f"predict -d {t_predict - t_select:.1f}")
