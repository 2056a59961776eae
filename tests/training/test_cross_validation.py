"""``suprem_train DATASET cv``: every fold in one command, resumable, in parallel processes, with out-of-fold
probabilities that map back onto the original grid. Real CT (6 real-CT-derived cases), tiny plan, 1 epoch."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import make_cv_dataset, plan_tiny

REPO = Path(__file__).resolve().parents[2]
DATASET = "Dataset102_RealCV"
PLAN = "tiny_segresnet"
# one epoch of two steps, no per-epoch validation; no mirroring keeps the final validation to one pass per window
COMMON = ["--plan", PLAN, "--from-scratch", "--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations", "0",
          "--num-workers", "0", "--seed", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def cv_roots(tmp_path_factory):
    """Raw + preprocessed roots of the 6-case dataset and a --config file without mirroring."""
    base = tmp_path_factory.mktemp("cv_roots")
    env = {"SUPREM_RAW": str(base / "raw"), "SUPREM_PREPROCESSED": str(base / "preprocessed")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        make_cv_dataset(base / "raw", DATASET, n_cases=6)
        plan_tiny(DATASET, PLAN)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    (base / "no_mirror.json").write_text(json.dumps({"augmentation": {"mirror": False}}))
    return base


def _env(roots: Path, results: Path, **extra) -> dict:
    env = {**os.environ, "SUPREM_RAW": str(roots / "raw"), "SUPREM_PREPROCESSED": str(roots / "preprocessed"),
           "SUPREM_RESULTS": str(results), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    return {k: v for k, v in env.items() if v is not None}


def _train(roots: Path, results: Path, *args, env_extra=None):
    cmd = [sys.executable, "-m", "suprem_nn.cli.train", DATASET, *args, *COMMON, "--config",
           str(roots / "no_mirror.json")]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=_env(roots, results, **(env_extra or {})), capture_output=True,
                       text=True, timeout=600)
    return p, time.perf_counter() - t0


def _fold_lines(stdout: str) -> dict:
    return {int(m.group(1)): m.group(0) for m in re.finditer(r"^  fold (\d): .*$", stdout, re.M)}


@pytest.fixture(scope="module")
def trained_cv(cv_roots, tmp_path_factory):
    """All five folds trained by one ``suprem_train DATASET cv`` subprocess; returns (results root, process)."""
    results = tmp_path_factory.mktemp("cv_results")
    p, seconds = _train(cv_roots, results, "cv")
    assert p.returncode == 0, p.stderr[-3000:]
    print(f"cv of 5 folds: {seconds:.1f} s")
    return results, p


def test_cv_trains_every_fold_with_out_of_fold_files_and_skips_them_next_time(cv_roots, trained_cv):
    results, p = trained_cv
    model = results / DATASET / PLAN
    lines = _fold_lines(p.stdout)
    assert sorted(lines) == [0, 1, 2, 3, 4] and all("trained in" in line for line in lines.values()), p.stdout
    assert re.search(r"mean Dice over 5 of 5 fold\(s\): \d\.\d{4}", p.stdout)
    splits = json.loads((cv_roots / "preprocessed" / DATASET / "splits_final.json").read_text())
    for k in range(5):
        fold = model / f"fold_{k}"
        assert (fold / "checkpoint_final.pth").is_file()
        summary = json.loads((fold / "validation" / "summary.json").read_text())
        assert f"fold {k}: mean Dice {summary['mean_dice']:.4f}" in lines[k]
        for case in splits[k]["val"]:
            assert (fold / "validation" / f"{case}.npz").is_file() and (fold / "validation" / f"{case}.json").is_file()

    # a second run trains nothing: every fold is finished
    before = {f: f.stat().st_mtime_ns for f in model.rglob("*") if f.is_file()}
    again, seconds = _train(cv_roots, results, "cv")
    assert again.returncode == 0, again.stderr[-3000:]
    print(f"second cv run (all folds finished): {seconds:.1f} s")
    assert all("finished before, skipped" in line for line in _fold_lines(again.stdout).values())
    assert len(_fold_lines(again.stdout)) == 5
    assert {f: f.stat().st_mtime_ns for f in model.rglob("*") if f.is_file()} == before


def test_out_of_fold_probabilities_reproduce_the_validation_labels_on_the_source_grid(cv_roots, trained_cv):
    from suprem_nn.inference.probabilities import read_probabilities
    from suprem_nn.io import read_image

    results, _ = trained_cv
    files = sorted((results / DATASET / PLAN).glob("fold_*/validation/*.npz"))
    raw = cv_roots / "raw" / DATASET
    # pooled over the folds, every case has exactly one out-of-fold prediction
    assert sorted(f.stem for f in files) == sorted(p.name[:-len("_0000.nii.gz")] for p in (raw / "imagesTr").iterdir())
    for npz in files:
        case = read_probabilities(npz)
        meta = json.loads(npz.with_suffix(".json").read_text())
        # the .json alone leads to the reference and the image
        assert Path(meta["source_label"]) == raw / "labelsTr" / f"{npz.stem}.nii.gz"
        assert meta["source_images"] == [str(raw / "imagesTr" / f"{npz.stem}_0000.nii.gz")]
        assert case.activation == "softmax" and case.class_names == case.plan.class_names
        assert case.probabilities.dtype == np.float16 and case.probabilities.shape[0] == len(case.class_names) + 1
        _, ct_geometry = read_image(meta["source_images"][0])
        assert case.geometry == ct_geometry
        probs = case.on_original_grid()
        assert probs.shape[1:] == tuple(ct_geometry.shape)
        written, label_geometry = read_image(npz.with_name(f"{npz.stem}.nii.gz"))
        assert label_geometry == ct_geometry
        lut = np.array([0] + case.label_values)
        argmax = lut[probs.argmax(0)]
        agree = float((argmax == written).mean())
        assert agree > 0.999, (npz.name, agree)
        # the only disagreements are near-ties that the float16 storage cannot separate (untrained network)
        top2 = np.sort(probs[:, argmax != written], axis=0)[-2:]
        assert np.all(top2[1] - top2[0] < 2e-3), (npz.name, float((top2[1] - top2[0]).max()))


def test_cv_continues_interrupted_folds_and_starts_empty_ones(cv_roots, trained_cv, tmp_path):
    src, _ = trained_cv
    results = tmp_path / "results"
    shutil.copytree(src, results)
    model = results / DATASET / PLAN
    # fold 1: killed after its last epoch's checkpoint, before checkpoint_final and validation
    (model / "fold_1" / "checkpoint_final.pth").unlink()
    shutil.rmtree(model / "fold_1" / "validation")
    latest = torch.load(model / "fold_1" / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    # fold 3: killed during the final validation
    (model / "fold_3" / "validation" / "summary.json").unlink()
    # fold 4: killed during its first epoch, before any checkpoint
    for f in (model / "fold_4").iterdir():
        if f.name not in ("config.json", "training_log.txt"):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    p, seconds = _train(cv_roots, results, "cv")
    assert p.returncode == 0, p.stderr[-3000:]
    print(f"cv run continuing 3 folds: {seconds:.1f} s")
    lines = _fold_lines(p.stdout)
    assert "finished before, skipped" in lines[0] and "finished before, skipped" in lines[2]
    assert "continued in" in lines[1] and "continued in" in lines[3] and "trained in" in lines[4], p.stdout
    assert "resumed from checkpoint_latest.pth after epoch 1" in (model / "fold_1" / "training_log.txt").read_text()
    final = torch.load(model / "fold_1" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    # nothing was left to train: the final weights are the checkpointed ones
    assert all(torch.equal(final["network_weights"][k], v) for k, v in latest["network_weights"].items())
    for k in (1, 3, 4):
        assert (model / f"fold_{k}" / "validation" / "summary.json").is_file()


def test_two_folds_run_as_parallel_processes_and_a_failing_fold_names_its_log(cv_roots, tmp_path):
    results = tmp_path / "results"
    broken = results / DATASET / PLAN / "fold_0"
    broken.mkdir(parents=True)
    (broken / "checkpoint_latest.pth").write_bytes(b"not a checkpoint")
    # OMP_NUM_THREADS unset: the parent splits the cores between the two fold processes
    # folds 4 and 1 validate one small case each; fold 0 fails at once, then fold 1 takes its process slot
    p, seconds = _train(cv_roots, results, "cv", "--folds", "0", "4", "1", "--parallel-folds", "2",
                        env_extra={"OMP_NUM_THREADS": None})
    print(f"2 parallel processes, folds 0 4 1 (0 fails at once): {seconds:.1f} s")
    assert p.returncode == 1, p.stderr[-3000:]
    # folds 0 and 4 were both running before either ended
    events = re.findall(r"^fold (\d): (started|continuing|process finished|FAILED)", p.stderr, re.M)
    first_end = next(i for i, (_, e) in enumerate(events) if e in ("process finished", "FAILED"))
    assert {f for f, e in events[:first_end]} == {"0", "4"}, p.stderr
    lines = _fold_lines(p.stdout)
    assert "mean Dice" in lines[1] and "mean Dice" in lines[4]
    log = broken / "console.log"
    assert f"FAILED (exit code 1: suprem_train: error: {broken / 'checkpoint_latest.pth'}" in lines[0]
    assert str(log) in lines[0] and "1 fold(s) failed: 0" in p.stdout
    threads = max(1, (os.cpu_count() or 1) // 2)
    for k in (1, 4):
        console = (results / DATASET / PLAN / f"fold_{k}" / "console.log").read_text()
        assert f"OMP_NUM_THREADS={threads}" in console.splitlines()[0]
        assert "final validation mean Dice" in console
        assert list((results / DATASET / PLAN / f"fold_{k}" / "validation").glob("*.npz"))


def test_gpu_groups_give_each_parallel_fold_its_own_gpus(monkeypatch):
    from suprem_nn.errors import SupremError
    from suprem_nn.training.config import TrainingConfig
    from suprem_nn.training.fold_processes import default_parallel_folds, slot_environments

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    cfg = TrainingConfig(device="cuda")
    assert default_parallel_folds(cfg) == 4
    assert [e["CUDA_VISIBLE_DEVICES"] for e in slot_environments(cfg, 4)] == ["3", "5", "6", "7"]
    cfg.num_gpus = 2
    assert default_parallel_folds(cfg) == 2
    # more parallel folds than GPU pairs share them round-robin
    assert [e["CUDA_VISIBLE_DEVICES"] for e in slot_environments(cfg, 3)] == ["3,5", "6,7", "3,5"]
    cfg.num_gpus = 5
    with pytest.raises(SupremError, match="needs 5 GPU"):
        slot_environments(cfg, 2)
    with pytest.raises(SupremError, match="pins every fold to one GPU"):
        slot_environments(TrainingConfig(device="cuda:1"), 2)
    # under torchrun the ranks train one fold together: folds go in turn
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert default_parallel_folds(TrainingConfig(device="cuda")) == 1
    with pytest.raises(SupremError, match="under torchrun"):
        slot_environments(TrainingConfig(device="cuda"), 2)


@pytest.mark.parametrize("args, message", [
    (["cv", "--folds", "0", "7"], "splits_final.json: fold(s) 7 do not exist: the split defines folds 0-4"),
    (["2", "--folds", "1"], "--folds and --parallel-folds go with FOLD 'cv'"),
    (["cvv"], "FOLD must be a number 0-4, 'all' (every case) or 'cv' (every fold in turn), got 'cvv'"),
    (["cv", "--no-final-validation"], "cross-validation needs each fold's final validation"),
    (["cv", "--parallel-folds", "0"], "--parallel-folds must be at least 1"),
])
def test_a_bad_fold_spec_is_one_clear_error(cv_roots, monkeypatch, capsys, tmp_path, args, message):
    from suprem_nn.cli.train import main

    monkeypatch.setenv("SUPREM_RAW", str(cv_roots / "raw"))
    monkeypatch.setenv("SUPREM_PREPROCESSED", str(cv_roots / "preprocessed"))
    assert main([DATASET, *args, *COMMON]) == 1
    err = capsys.readouterr().err
    assert err.startswith("suprem_train: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "roots" / "results").exists()  # nothing was trained


def test_a_failing_fold_in_turn_is_reported_with_its_log_and_the_others_still_run(cv_roots, monkeypatch, capsys,
                                                                                 tmp_path):
    from suprem_nn.cli.train import main

    monkeypatch.setenv("SUPREM_RAW", str(cv_roots / "raw"))
    monkeypatch.setenv("SUPREM_PREPROCESSED", str(cv_roots / "preprocessed"))
    model = tmp_path / "roots" / "results" / DATASET / PLAN
    for k in (0, 1):  # two unreadable checkpoints: both folds fail, each with its own reason in its own log
        (model / f"fold_{k}").mkdir(parents=True)
        (model / f"fold_{k}" / "checkpoint_latest.pth").write_bytes(b"truncated")
    assert main([DATASET, "cv", "--folds", "0", "1", *COMMON]) == 1
    out = capsys.readouterr().out
    lines = _fold_lines(out)
    for k in (0, 1):
        log = model / f"fold_{k}" / "training_log.txt"
        assert f"FAILED ({model / f'fold_{k}' / 'checkpoint_latest.pth'}: cannot load checkpoint" in lines[k]
        assert lines[k].endswith(f"log: {log}") and "checkpoint_latest.pth: cannot load" in log.read_text()
    assert "2 fold(s) failed: 0, 1" in out


def test_multi_label_out_of_fold_probabilities_threshold_to_the_validation_masks(tmp_path, monkeypatch):
    """Sigmoid plans: one channel per class (no background); > 0.5 gives each written mask, and the highest
    class holding a voxel gives the written label map, as the export combines them."""
    from suprem_nn.inference.probabilities import read_probabilities
    from suprem_nn.io import read_image
    from suprem_nn.preprocessing.api import plan_and_preprocess
    from suprem_nn.training import train
    from tests.conftest import add_tiny_scratch_plan, make_abdomenatlas_dataset

    raw = make_abdomenatlas_dataset(tmp_path / "roots" / "raw", cases=["ts_abdomen_sm_3mm"] * 3,
                                    organs=["spleen", "liver", "stomach"])
    plan_and_preprocess("AbdomenAtlas", pretrained="segresnet", target_spacing=[4.5, 4.5, 4.5],
                        patch_size=[32, 32, 32], batch_size=2, num_processes=1, progress=False)
    add_tiny_scratch_plan(tmp_path / "roots" / "preprocessed" / "AbdomenAtlas")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess tests (OMP_NUM_THREADS=1): 2 threads on 2 busy cores only contend
    try:
        train("AbdomenAtlas", 0, plan_name=PLAN, from_scratch=True, epochs=1, iterations_per_epoch=2,
              val_iterations=0, num_workers=0, device="cpu", echo=False, augmentation={"mirror": False})
    finally:
        torch.set_num_threads(threads)
    validation = tmp_path / "roots" / "results" / "AbdomenAtlas" / PLAN / "fold_0" / "validation"
    (npz,) = validation.glob("*.npz")
    case = read_probabilities(npz)
    meta = json.loads(npz.with_suffix(".json").read_text())
    assert case.activation == "sigmoid" and case.class_names == ["liver", "spleen", "stomach", "hepatic_vessel"]
    assert case.probabilities.shape[0] == 4 and meta["source_label"] is None
    assert meta["source_masks"] == {n: str(raw / npz.stem / "segmentations" / f"{n}.nii.gz")
                                    for n in case.class_names}
    _, ct_geometry = read_image(meta["source_images"][0])
    assert case.geometry == ct_geometry
    masks = case.on_original_grid() > 0.5
    for k, name in enumerate(case.class_names):
        written, geometry = read_image(validation / npz.stem / "segmentations" / f"{name}.nii.gz")
        assert geometry == ct_geometry
        assert float((masks[k] == (written > 0)).mean()) > 0.999, name
    index = np.zeros(masks.shape[1:], dtype=int)
    for k in range(len(masks)):
        index[masks[k]] = k + 1  # later classes overwrite earlier ones, like the export
    written, _ = read_image(validation / f"{npz.stem}.nii.gz")
    assert float((np.array([0] + case.label_values)[index] == written).mean()) > 0.999
