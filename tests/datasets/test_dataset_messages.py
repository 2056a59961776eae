"""What suprem_train and suprem_predict say when the dataset named is not there: paths that are not datasets say so,
unknown names list what exists (and "plan it first" is kept for what really is an unplanned dataset)."""
from __future__ import annotations

import json
import os

import pytest

from suprem_nn.cli.predict import main as predict_main
from suprem_nn.cli.train import main as train_main
from tests.inference.helpers import make_model_folder, tiny_plan

USAGE = ("give a dataset name (Dataset101_Liver), its numeric id (101) or a raw dataset folder (nnU-Net layout with "
         "dataset.json, or AbdomenAtlas CASE/ct.nii.gz)")


def _one_error_line(capsys, command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{command}: error: "), lines
    return lines[0][len(f"{command}: error: "):]


def test_train_on_a_file_or_a_missing_path_says_not_a_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "notes.txt").write_text("not a dataset")
    assert train_main(["bad/notes.txt", "0"]) == 1
    assert _one_error_line(capsys, "suprem_train") == f"bad/notes.txt: not a dataset: this is a file; {USAGE}"
    assert train_main(["/nonexistent/Dataset123_X", "0"]) == 1
    assert _one_error_line(capsys, "suprem_train") == \
        f"/nonexistent/Dataset123_X: not a dataset: no such file or folder; {USAGE}"
    assert train_main(["./bad", "cv"]) == 1          # a folder of other things; cv goes the same way
    message = _one_error_line(capsys, "suprem_train")
    assert message.startswith("bad: not a dataset folder: it holds no dataset.json or imagesTr/ (nnU-Net)"), message
    assert "suprem_plan_and_preprocess" not in message


def test_train_on_an_unknown_name_lists_the_datasets(tmp_path, capsys):
    raw = tmp_path / "roots" / "raw"
    (raw / "Dataset101_Liver").mkdir(parents=True)
    planned = tmp_path / "roots" / "preprocessed" / "Dataset102_Kidney" / "suprem_unet"
    planned.mkdir(parents=True)
    (planned / "plans.json").write_text("{}")
    assert train_main(["NoSuchDataset", "0"]) == 1
    assert _one_error_line(capsys, "suprem_train") == (
        f"no dataset 'NoSuchDataset': planned datasets under {tmp_path / 'roots' / 'preprocessed'}: Dataset102_Kidney; "
        f"raw datasets under {raw}: Dataset101_Liver (SUPREM_PREPROCESSED and SUPREM_RAW set these folders)")


def test_train_on_an_unplanned_raw_dataset_still_says_plan_it(tmp_path, capsys):
    folder = tmp_path / "elsewhere" / "Dataset103_Spleen"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    for dataset in (str(folder), "Dataset101_Liver"):
        if dataset == "Dataset101_Liver":
            (tmp_path / "roots" / "raw" / dataset).mkdir(parents=True)
        assert train_main([dataset, "0"]) == 1
        message = _one_error_line(capsys, "suprem_train")
        assert message.endswith(f"no plans for dataset '{dataset}'; run suprem_plan_and_preprocess -d {dataset} "
                                "first"), message


def test_predict_with_an_unknown_dataset_lists_the_trained_ones(tmp_path, capsys):
    results = tmp_path / "roots" / "results"
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"")   # never read: the model is looked up first
    assert predict_main(["-i", str(ct), "-o", str(tmp_path / "out"), "-d", "NoSuchDataset"]) == 1
    assert _one_error_line(capsys, "suprem_predict") == (
        f"{results / 'NoSuchDataset'}: no trained models for dataset 'NoSuchDataset'; the results folder {results} "
        "holds no trained model (SUPREM_RESULTS sets it: export it as the command that trained the model had it, "
        "e.g. the export lines suprem_demo prints)")
    make_model_folder(results, tiny_plan())                    # Dataset999_Tiny/tiny_segresnet/fold_0
    (results / "Dataset998_Untrained" / "plan_x").mkdir(parents=True)   # planned but never trained: not listed
    assert predict_main(["-i", str(ct), "-o", str(tmp_path / "out"), "-d", "NoSuchDataset"]) == 1
    assert _one_error_line(capsys, "suprem_predict").endswith(
        f"no trained models for dataset 'NoSuchDataset'; trained datasets in {results}: Dataset999_Tiny "
        "(plan tiny_segresnet)")
    assert os.listdir(tmp_path / "roots") == ["results"]      # nothing was created while failing
    from suprem_nn.cli.find_best_configuration import main as select_main
    assert select_main(["NoSuchDataset"]) == 1                # the other command that looks models up by name
    assert _one_error_line(capsys, "suprem_find_best_configuration").endswith(
        f"trained datasets in {results}: Dataset999_Tiny (plan tiny_segresnet)")
