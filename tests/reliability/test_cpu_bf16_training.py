"""suprem_train with mixed_precision bf16 on the CPU: the fold trains under bfloat16 autocast and says so."""
from __future__ import annotations

import json
from pathlib import Path

from .conftest import DATASET, cli


def test_cpu_fold_trains_in_bf16_when_asked(train_env, tmp_path):
    config = tmp_path / "bf16.json"
    config.write_text(json.dumps({"mixed_precision": "bf16"}))
    r = cli("train", DATASET, "0", "--plan", "tiny_segresnet", "--from-scratch", "--epochs", "1",
            "--iterations-per-epoch", "2", "--val-iterations", "1", "--num-workers", "0", "--device", "cpu",
            "--no-final-validation", "--config", config, "--quiet", env=train_env)
    assert r.returncode == 0, r.stderr
    fold = Path(train_env["SUPREM_RESULTS"]) / DATASET / "tiny_segresnet" / "fold_0"
    log = (fold / "training_log.txt").read_text()
    assert "precision bfloat16 autocast (mixed_precision bf16 on the CPU)" in log, log
    assert (fold / "checkpoint_final.pth").is_file()
