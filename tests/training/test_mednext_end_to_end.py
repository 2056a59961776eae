"""MedNeXt, the backbone without SuPreM weights, through every command on real CT: plan -> train -> predict ->
evaluate, as a user runs them (real subprocesses), at a size a 2-core machine runs in about a minute."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from suprem_nn.io import read_image
from tests.conftest import make_nnunet_dataset

REPO = Path(__file__).resolve().parents[2]
DATASET = "Dataset101_RealCT"
CASES = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]


def command(name: str, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", f"suprem_nn.cli.{name}", *map(str, args)], capture_output=True,
                       text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, f"suprem_{name} exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_mednext_plan_train_predict_evaluate(real_ct, tmp_path):
    raw = make_nnunet_dataset(Path(os.environ["SUPREM_RAW"]), cases=CASES)

    # plan: nnU-Net's rules for a from-scratch network; 8 mm and a 32^3 patch keep every step small
    out = command("plan_and_preprocess", "-d", DATASET, "--from-scratch", "mednext", "--spacing", 8, 8, 8,
                  "--patch-size", 32, 32, 32, "--batch-size", 2, "-np", 1).stdout
    assert "plan 'scratch_mednext'" in out
    plan = json.loads((Path(os.environ["SUPREM_PREPROCESSED"]) / DATASET / "scratch_mednext" / "plans.json")
                      .read_text())
    assert plan["network"] == "mednext" and plan["pretrained"] is None and plan["checkpoint"] == {}
    assert plan["divisibility"] == 16 and plan["patch_size"] == [32, 32, 32]
    assert plan["normalization"][0]["scheme"] == "ct_clip_zscore"

    # train: two iterations of the default MedNeXt-B
    command("train", DATASET, 0, "--plan", "scratch_mednext", "--from-scratch", "--epochs", 1,
            "--iterations-per-epoch", 2, "--val-iterations", 0, "--num-workers", 0, "--device", "cpu",
            "--no-final-validation", "--quiet")
    model = Path(os.environ["SUPREM_RESULTS"]) / DATASET / "scratch_mednext"
    fold = model / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    weights = ckpt["network_weights"]
    assert ckpt["epoch"] == 1
    assert weights["out_0.conv_out.weight"].shape == (32, 14, 1, 1, 1)  # 13 organs + background, softmax
    assert weights["enc_stages.0.0.conv1.weight"].shape == (32, 1, 3, 3, 3)
    records = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and math.isfinite(records[0]["train_loss"]) and records[0]["train_loss"] > 0
    assert "mednext" in (fold / "training_log.txt").read_text()

    # predict both CTs with the trained fold, in each CT's own geometry
    images = tmp_path / "images"
    images.mkdir()
    for case in CASES:
        (images / f"{case}_0000.nii.gz").symlink_to(raw / "imagesTr" / f"{case}_0000.nii.gz")
    predictions = tmp_path / "predictions"
    command("predict", "-i", images, "-o", predictions, "-m", model, "-f", 0, "--disable-tta", "--quiet")
    for case in CASES:
        labels, geometry = read_image(predictions / f"{case}.nii.gz")
        _, reference = read_image(raw / "labelsTr" / f"{case}.nii.gz")
        assert geometry.shape == reference.shape and labels.shape == tuple(reference.shape)
        assert np.allclose(geometry.spacing, reference.spacing)
        assert set(np.unique(labels)) <= set(range(14))

    # evaluate against the reference labels: every organ has a Dice in [0, 1] or none (absent on both sides)
    evaluation = tmp_path / "evaluation"
    out = command("evaluate", "-ref", raw / "labelsTr", "-pred", predictions, "-o", evaluation).stdout
    assert "2 case(s) evaluated" in out
    summary = json.loads((evaluation / "summary.json").read_text())
    assert summary["num_cases"] == 2 and (evaluation / "metrics.csv").is_file()
    assert {"liver", "spleen", "aorta"} <= set(summary["mean"])
    dices = [v["dice"] for v in summary["mean"].values() if v["dice"] is not None]
    assert dices and all(0.0 <= d <= 1.0 for d in dices)
