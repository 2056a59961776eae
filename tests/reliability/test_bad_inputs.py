"""Bad input through all four commands: one clear line naming the file and the problem, a non-zero exit, no
traceback unless --debug; in a batch (a folder to predict or evaluate) the other cases still complete and a
summary lists the failures. Library-level checks of the same files live in tests/io and tests/datasets."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from suprem_nn.io import read_image
from tests.conftest import make_nnunet_dataset

from . import badfiles
from .conftest import DATASET, SMALL, assert_clean_failure, cli, command_env, digest

SM = "ts_abdomen_sm_3mm"
# what read_image says about each broken image when a command reads it
READ_WORDS = {"truncated": "truncated", "wrong_magic": "cannot read image", "not_gzip": "cannot read image",
              "nan": "NaN or infinite", "inf": "NaN or infinite", "2d": "expected a 3D image, got 2D",
              "4d": "expected a 3D image, got 4D", "zero_axis": "empty axis", "spacing_0": "pixdim[3] is 0 mm",
              "spacing_negative": "pixdim[3] is -3 mm", "spacing_1e6": "impossible voxel spacing",
              "sheared": "orthonormal"}


def test_predict_folder_of_broken_images(real_ct, tmp_path, tiny_model):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / "good.nii.gz")
    for name, (build, _) in badfiles.IMAGE_FAULTS.items():
        build(real_ct / SM / "ct.nii.gz", inp / f"{name}.nii.gz")
    out = tmp_path / "out"
    r = cli("predict", "-i", inp, "-o", out, "-m", tiny_model, "--quiet")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert read_image(out / "good_seg.nii.gz")[0].shape == (122, 101, 30)  # the good case completed
    n = len(READ_WORDS)
    assert f"1 case(s) predicted, 0 already done, {n} failed" in r.stderr
    failed = {ln.split(": ")[2]: ln for ln in r.stderr.splitlines() if ln.startswith("suprem_predict: failed: ")}
    assert set(failed) == set(READ_WORDS)
    for name, words in READ_WORDS.items():
        assert str(inp / f"{name}.nii.gz") in failed[name] and words in failed[name], failed[name]
        assert not (out / f"{name}_seg.nii.gz").exists()
    report = json.loads((out / "run_report.json").read_text())
    assert {f["case"] for f in report["failures"]} == set(READ_WORDS) and report["cases_predicted"] == ["good"]


def test_evaluate_folder_with_broken_predictions(real_ct, tmp_path):
    seg = real_ct / SM / "seg_btcv13.nii.gz"
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    builders = {name: build for name, (build, _) in badfiles.IMAGE_FAULTS.items()}
    builders.update(float_label=badfiles.float_label, shifted=badfiles.shifted_grid)
    words = {**READ_WORDS, "float_label": "non-integer values", "shifted": "not on the grid of its reference"}
    for name, build in builders.items():
        shutil.copyfile(seg, ref / f"{name}.nii.gz")
        build(seg, pred / f"{name}.nii.gz")
    for good in ("good", "undeclared"):  # a value no class asks for is simply not counted
        shutil.copyfile(seg, ref / f"{good}.nii.gz")
    shutil.copyfile(seg, pred / "good.nii.gz")
    badfiles.undeclared_label(seg, pred / "undeclared.nii.gz")
    r = cli("evaluate", "-ref", ref, "-pred", pred, "-l", "spleen=1,liver=6", "-o", tmp_path / "eval")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["num_cases"] == 2 and summary["mean"]["liver"]["dice"] == 1.0
    assert set(summary["failed_cases"]) == set(words)
    for name, w in words.items():
        line = assert_clean_failure(r, f"failed: {pred / name}.nii.gz", command="evaluate")
        assert w in line and w in summary["failed_cases"][name], line
    assert f"{len(words)} case(s) failed" in r.stderr


def test_plan_and_preprocess_reports_every_bad_case_at_once(real_ct, tmp_path):
    raw = tmp_path / "raw"
    folder = make_nnunet_dataset(raw, cases=[SM])
    ct, seg = folder / "imagesTr" / f"{SM}_0000.nii.gz", folder / "labelsTr" / f"{SM}.nii.gz"
    image_faults = ["truncated", "nan", "2d", "zero_axis", "spacing_0", "spacing_1e6", "sheared"]
    label_faults = {"float_label": badfiles.float_label, "undeclared": badfiles.undeclared_label,
                    "shifted": badfiles.shifted_grid}
    for name in image_faults:
        badfiles.IMAGE_FAULTS[name][0](ct, folder / "imagesTr" / f"{name}_0000.nii.gz")
        shutil.copyfile(seg, folder / "labelsTr" / f"{name}.nii.gz")
    for name, build in label_faults.items():
        shutil.copyfile(ct, folder / "imagesTr" / f"{name}_0000.nii.gz")
        build(seg, folder / "labelsTr" / f"{name}.nii.gz")
    shutil.copyfile(seg, folder / "labelsTr" / "no_image.nii.gz")   # a label whose image (modality) is missing
    shutil.copyfile(ct, folder / "imagesTr" / f"{SM}_0000.nii")     # the same case id twice
    env = command_env({"SUPREM_RAW": str(raw), "SUPREM_PREPROCESSED": str(tmp_path / "pre")})
    r = cli("plan_and_preprocess", "-d", DATASET, "--pretrained", "segresnet", "--spacing", "6", "6", "6", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    expect = {"truncated": "truncated", "nan": "NaN", "2d": "2D", "zero_axis": "empty axis",
              "spacing_0": "spacing", "spacing_1e6": "spacing", "sheared": "orthonormal",
              "float_label": "non-integer", "undeclared": "not declared", "shifted": "grid", "no_image": "no_image",
              SM: SM}
    for case, word in expect.items():
        assert any(case in ln and word in ln for ln in r.stderr.splitlines()), f"{case}/{word} missing:\n{r.stderr}"
    assert not (tmp_path / "pre" / DATASET / "suprem_segresnet" / "data").exists()


def test_unicode_and_spaces_in_paths_work_end_to_end(real_ct, tmp_path):
    base = tmp_path / "Données patient ü" / "a b"
    raw, pre, res = base / "raw data", base / "pré processed", base / "résultats"
    make_nnunet_dataset(raw, cases=SMALL)
    env = command_env({"SUPREM_RAW": str(raw), "SUPREM_PREPROCESSED": str(pre), "SUPREM_RESULTS": str(res)})
    r = cli("plan_and_preprocess", "-d", DATASET, "--pretrained", "segresnet", "--spacing", "6", "6", "6",
            "--patch-size", "16", "16", "16", "--batch-size", "2", "-np", "1", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    r = cli("train", DATASET, "all", "--from-scratch", "--epochs", "1", "--iterations-per-epoch", "1",
            "--val-iterations", "0", "--num-workers", "0", "--device", "cpu", "--no-final-validation", "--quiet",
            env=env)
    assert r.returncode == 0, r.stderr
    inp = base / "entrée é"
    inp.mkdir()
    shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / "cas n°1.nii.gz")
    out = base / "sortie ü"
    r = cli("predict", "-i", inp, "-o", out, "-d", DATASET, "-f", "all", "--disable-tta", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    pred, geo = read_image(out / "cas n°1_seg.nii.gz")
    assert geo == read_image(inp / "cas n°1.nii.gz")[1]
    ref = base / "référence"
    ref.mkdir()
    shutil.copyfile(real_ct / SM / "seg_btcv13.nii.gz", ref / "cas n°1.nii.gz")
    r = cli("evaluate", "-ref", ref, "-pred", out, "-l", "liver=6", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["num_cases"] == 1


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only file system (a tmpfs mounted ro): permission bits do not stop root, this does."""
    mnt = tmp_path / "read_only"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs ({(r.stderr or r.stdout).strip()}); needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_output_folders(real_ct, tmp_path, tiny_model, read_only_folder, train_env):
    ro = read_only_folder
    r = cli("predict", "-i", real_ct / SM / "ct.nii.gz", "-o", ro / "out.nii.gz", "-m", tiny_model)
    assert_clean_failure(r, str(ro), "Read-only file system", command="predict")
    r = cli("evaluate", "-ref", real_ct / SM, "-pred", real_ct / SM, "-l", "liver=6", "-o", ro / "eval")
    assert_clean_failure(r, str(ro / "eval"), "Read-only file system", command="evaluate")
    raw = tmp_path / "raw"
    make_nnunet_dataset(raw, cases=[SM])
    env = command_env({"SUPREM_RAW": str(raw), "SUPREM_PREPROCESSED": str(ro / "pre")})
    r = cli("plan_and_preprocess", "-d", DATASET, "--pretrained", "segresnet", "--spacing", "6", "6", "6", env=env)
    assert_clean_failure(r, str(ro / "pre"), "Read-only file system", command="plan_and_preprocess")
    r = cli("train", DATASET, "0", "--plan", "tiny_segresnet", "--from-scratch", "--device", "cpu",
            env={**train_env, "SUPREM_RESULTS": str(ro / "results")})
    assert_clean_failure(r, str(ro / "results"), "Read-only file system", command="train")


def test_names_and_empty_folders(tmp_path, tiny_model, train_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    checks = [
        ("train", ["../etc", "0"], ["../etc", "'..'"]),
        ("predict", ["-i", empty, "-o", tmp_path / "o", "-d", "../etc"], ["../etc"]),
        ("predict", ["-i", empty, "-o", tmp_path / "o", "-m", tiny_model], [str(empty), "no image files"]),
        ("evaluate", ["-ref", empty, "-pred", empty], [str(empty), "no reference segmentations"]),
        ("plan_and_preprocess", ["-d", empty], [str(empty), "dataset folder is empty"]),
        ("train", ["Dataset555_Missing", "0"], ["no dataset 'Dataset555_Missing'", "planned datasets"]),
    ]
    for command, args, words in checks:
        r = cli(command, *args, env=train_env)
        assert_clean_failure(r, *words, command=command)
        assert not (tmp_path / "o").exists()


def test_duplicate_case_ids_in_a_prediction_folder(real_ct, tmp_path, tiny_model):
    import SimpleITK as sitk
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / "a.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(inp / "a.nii.gz")), str(inp / "a.nrrd"))
    r = cli("predict", "-i", inp, "-o", tmp_path / "out", "-m", tiny_model)
    assert_clean_failure(r, str(inp), "two files for the same case 'a'", "a.nii.gz", "a.nrrd", command="predict")
    assert not (tmp_path / "out" / "a.nii.gz").exists()


def test_debug_shows_the_traceback(train_env, tmp_path):
    plans = tmp_path / "preprocessed" / DATASET / "tiny_segresnet" / "plans.json"
    plans.write_text("{broken")
    before = digest(plans.parent / "data")
    r = cli("train", DATASET, "0", "--plan", "tiny_segresnet", "--from-scratch", "--device", "cpu", "--debug",
            env=train_env)
    assert r.returncode != 0 and "Traceback" in r.stderr and "not valid JSON" in r.stderr
    assert digest(plans.parent / "data") == before
