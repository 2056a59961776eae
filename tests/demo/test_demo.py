"""suprem_demo: the --quick run goes through every real command and leaves the files a user is pointed at."""
import json

import pytest

from suprem_nn.cli.demo import main
from suprem_nn.demo.run import FULL, QUICK, epochs_for_budget, estimated_training_seconds, find_suprem_weights

# quick_run (tests/demo/conftest.py): the one suprem_demo --quick run, shared with test_demo_docs.py


def test_quick_demo_runs_every_step(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    # the real commands, printed as a user would type them, in order
    weights = find_suprem_weights()   # a developer may have the released file; the demo then fine-tunes it
    init = "--from-scratch" if weights is None else "--pretrained segresnet --pretrained-checkpoint"
    steps = ["$ suprem_plan_and_preprocess -d Dataset900_SupremDemo --pretrained segresnet",
             f"$ suprem_train Dataset900_SupremDemo 0 --plan suprem_segresnet {init}",
             "$ suprem_predict -i", "$ suprem_evaluate -ref"]
    positions = [text.index(s) for s in steps]
    assert positions == sorted(positions)
    assert ("no SuPreM weights found: training from scratch" if weights is None else
            f"SuPreM weights found: fine-tuning from {weights}") in text
    # suprem_evaluate's table and the demo's own Dice lines
    assert "foreground mean" in text and "Dice on the held-out test cases:" in text
    for organ in ("liver", "spleen", "kidney_right", "kidney_left", "aorta"):
        assert f"\n  {organ} " in text


def test_quick_demo_files(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0
    demo = json.loads((out / "demo_summary.json").read_text())
    assert demo["quick"] is True and demo["epochs"] == 1
    assert demo["initialisation"] == ("from scratch" if find_suprem_weights() is None else
                                      f"SuPreM segresnet ({find_suprem_weights()})")
    assert set(demo["mean_dice"]) == {"liver", "spleen", "kidney_right", "kidney_left", "aorta"}
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in demo["mean_dice"].values())
    assert demo["seconds"]["total"] >= demo["seconds"]["train"] > 0
    # every path the demo prints exists and is the kind of file it says
    assert len(demo["previews"]) == QUICK.num_test
    for path in demo["previews"] + [demo["progress_png"]]:
        assert path in proc.stdout
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(open(demo["summary_json"]).read())
    assert summary["num_cases"] == QUICK.num_test
    assert summary["mean"]["liver"]["dice"] == pytest.approx(demo["mean_dice"]["liver"])
    # the three roots live inside --out, not in the user's home
    for sub in ("raw/Dataset900_SupremDemo/dataset.json", "preprocessed/Dataset900_SupremDemo/suprem_segresnet/plans.json",
                "results/Dataset900_SupremDemo/suprem_segresnet/fold_0/checkpoint_final.pth"):
        assert (out / sub).is_file(), sub
    config = json.loads((out / "demo_training_config.json").read_text())
    assert config["epochs"] == 1 and config["iterations_per_epoch"] == QUICK.iterations_per_epoch


def test_bad_minutes_is_one_line_error(tmp_path, capsys):
    assert main(["--minutes", "0", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["suprem_demo: error: --minutes must be positive, got 0.0"]


def test_epochs_fit_the_budget():
    step = 1.0
    one = estimated_training_seconds(FULL, step, 1)
    assert one == pytest.approx((FULL.iterations_per_epoch + FULL.val_iterations / 3) * 1.9)
    n = epochs_for_budget(FULL, step, minutes=5)
    assert estimated_training_seconds(FULL, step, n) <= 300 < estimated_training_seconds(FULL, step, n + 1)
    assert epochs_for_budget(FULL, 100.0, minutes=1) == 1          # always at least one epoch
    assert epochs_for_budget(FULL, 1e-4, minutes=60) == FULL.max_epochs
