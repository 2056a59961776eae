"""A full disk during preprocessing and prediction, and two suprem_predict writing to one folder at once."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from suprem_nn.io import read_image
from tests.conftest import make_nnunet_dataset

from .conftest import DATASET, cli, command_env, digest, popen

SM, PELVIS = "ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm"
PLAN = ["--pretrained", "segresnet", "--spacing", "6", "6", "6", "-np", "1"]


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: a disk the test can fill. Needs root (mount); skipped with the reason otherwise."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({(r.stderr or r.stdout).strip()}); run as root to test a full disk")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def no_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".tmp-*")]


def test_full_disk_during_preprocessing(real_ct, small_disk, tmp_path):
    raw = tmp_path / "raw"
    folder = make_nnunet_dataset(raw, cases=[SM])
    env = command_env({"SUPREM_RAW": str(raw), "SUPREM_PREPROCESSED": str(small_disk / "pre")})
    assert cli("plan_and_preprocess", "-d", DATASET, *PLAN, "--quiet", env=env).returncode == 0
    before = digest(small_disk / "pre")
    # a new case arrives (the old one is untouched), and the disk is full
    shutil.copyfile(real_ct / PELVIS / "ct.nii.gz", folder / "imagesTr" / f"{PELVIS}_0000.nii.gz")
    shutil.copyfile(real_ct / PELVIS / "seg_btcv13.nii.gz", folder / "labelsTr" / f"{PELVIS}.nii.gz")
    meta = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**meta, "numTraining": 2}))
    filler = fill(small_disk, 64 << 10)

    r = cli("plan_and_preprocess", "-d", DATASET, *PLAN, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith(f"  case {PELVIS}: "))
    assert "No space left on device" in line and str(small_disk / "pre") in line  # names the file it could not write
    after = digest(small_disk / "pre")
    assert {k: after.get(k) for k in before} == before, "files written before the disk filled are unchanged"
    assert not no_temporaries(small_disk)
    assert not any(PELVIS in k and k.endswith(".json") and "/data/" in k for k in after), "no case looks complete"

    filler.unlink()  # space again: the same command finishes the job
    r = cli("plan_and_preprocess", "-d", DATASET, *PLAN, env=env)
    assert r.returncode == 0, r.stderr
    assert "1 cases processed, 1 already done" in r.stdout


def test_full_disk_during_prediction(real_ct, small_disk, tmp_path, tiny_model):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / f"case{i}.nii.gz")
    out = small_disk / "out"
    assert cli("predict", "-i", inp / "case0.nii.gz", "-o", out / "case0_seg.nii.gz", "-m", tiny_model,
               "--quiet").returncode == 0
    before = digest(out)
    filler = fill(small_disk, 4 << 10)

    r = cli("predict", "-i", inp, "-o", out, "-m", tiny_model, "--quiet")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{out / 'case1_seg.nii.gz'}: No space left on device" in r.stderr
    cases = lambda d: {k: v for k, v in d.items() if k != "run_report.json"}  # noqa: E731
    assert cases(digest(out)) == cases(before), "the finished case is intact and nothing else looks finished"
    assert not no_temporaries(small_disk)
    if "run_report.json: No space left on device" not in r.stderr:  # the report fitted: it lists the failures
        report = json.loads((out / "run_report.json").read_text())
        assert {f["case"] for f in report["failures"]} == {"case1", "case2"}

    filler.unlink()
    r = cli("predict", "-i", inp, "-o", out, "-m", tiny_model, "--quiet")
    assert r.returncode == 0, r.stderr
    for i in range(3):
        assert read_image(out / f"case{i}_seg.nii.gz")[0].shape == (122, 101, 30)
    assert json.loads((out / "run_report.json").read_text())["cases_skipped"] == ["case0"]


def test_two_predictions_into_one_folder_at_once(real_ct, tmp_path, tiny_model):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(4):
        shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / f"case{i}.nii.gz")
    reference = tmp_path / "reference"
    assert cli("predict", "-i", inp, "-o", reference, "-m", tiny_model, "--quiet").returncode == 0

    out = tmp_path / "shared_out"
    procs = [popen("predict", "-i", inp, "-o", out, "-m", tiny_model, "-np", "0", "--quiet", env=command_env())
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert "Traceback" not in err, err
        assert rc == 0 or (rc == 1 and err.strip()), err  # success, or a clean message
    assert any(rc == 0 for rc, _ in results), results
    assert sorted(p.name for p in out.glob("case*")) == [f"case{i}_seg.nii.gz" for i in range(4)]
    for i in range(4):
        got, geo = read_image(out / f"case{i}_seg.nii.gz")
        want, want_geo = read_image(reference / f"case{i}_seg.nii.gz")
        assert geo == want_geo and np.array_equal(got, want)
    assert not no_temporaries(out)
    json.loads((out / "run_report.json").read_text())  # whichever run wrote it last, it is whole
