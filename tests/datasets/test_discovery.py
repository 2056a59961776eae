"""A dataset is found by path, folder name, numeric id or name part; anything else fails with a listing."""
from __future__ import annotations

import os

import pytest

from suprem_nn.datasets import resolve_dataset_path
from suprem_nn.errors import DatasetError


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "raw"
    for name in ("Dataset101_RealCT", "Dataset001_Liver", "Dataset002_Pancreas", "AbdomenAtlas"):
        (r / name).mkdir(parents=True)
    return r


@pytest.mark.parametrize("query, expected", [
    ("Dataset101_RealCT", "Dataset101_RealCT"),
    ("101", "Dataset101_RealCT"),
    ("Dataset101", "Dataset101_RealCT"),
    ("RealCT", "Dataset101_RealCT"),
    ("realct", "Dataset101_RealCT"),
    ("1", "Dataset001_Liver"),
    ("001", "Dataset001_Liver"),
    ("2", "Dataset002_Pancreas"),
    ("AbdomenAtlas", "AbdomenAtlas"),
])
def test_names_and_ids_resolve_under_the_root(root, query, expected):
    assert resolve_dataset_path(query, root) == (root / expected).resolve()


def test_existing_folder_path_is_used_as_is(root, tmp_path, monkeypatch):
    elsewhere = tmp_path / "somewhere" / "MyData"
    elsewhere.mkdir(parents=True)
    assert resolve_dataset_path(str(elsewhere), root) == elsewhere.resolve()
    assert resolve_dataset_path(elsewhere) == elsewhere.resolve()  # a Path works too, no root needed
    monkeypatch.chdir(tmp_path / "somewhere")
    assert resolve_dataset_path("../somewhere/MyData", root) == elsewhere.resolve()


def test_default_root_comes_from_suprem_raw(root, monkeypatch):
    monkeypatch.setenv("SUPREM_RAW", str(root))
    assert resolve_dataset_path("RealCT") == (root / "Dataset101_RealCT").resolve()


def test_unknown_name_lists_what_exists(root):
    with pytest.raises(DatasetError) as err:
        resolve_dataset_path("Kidney", root)
    msg = str(err.value)
    assert "'Kidney'" in msg and str(root) in msg
    for name in ("Dataset101_RealCT", "Dataset001_Liver", "AbdomenAtlas"):
        assert name in msg


def test_unknown_id_fails(root):
    with pytest.raises(DatasetError, match=r"no dataset '7'.*Dataset001_Liver"):
        resolve_dataset_path("7", root)


def test_ambiguous_name_and_id_list_the_candidates(root):
    (root / "Dataset102_RealCT").mkdir()
    (root / "Dataset001_Spleen").mkdir()
    with pytest.raises(DatasetError) as err:
        resolve_dataset_path("RealCT", root)
    assert "ambiguous" in str(err.value)
    assert "Dataset101_RealCT" in str(err.value) and "Dataset102_RealCT" in str(err.value)
    with pytest.raises(DatasetError, match=r"ambiguous.*Dataset001_Liver, Dataset001_Spleen"):
        resolve_dataset_path("1", root)


@pytest.mark.parametrize("name", ["../x", "../Dataset101_RealCT", "a/b", "x/../../y", "..\\x"])
def test_path_traversal_as_a_name_is_rejected(root, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # no such folder relative to here
    with pytest.raises(DatasetError) as err:
        resolve_dataset_path(name, root / "Dataset101_RealCT" / "imagesTr")
    msg = str(err.value)
    assert repr(name) in msg and "cannot be a dataset name" in msg and "'..'" in msg


def test_missing_root_is_explained(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError) as err:
        resolve_dataset_path("RealCT", missing)
    assert str(missing) in str(err.value) and "SUPREM_RAW" in str(err.value)


def test_empty_root_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no dataset folder"):
        resolve_dataset_path("RealCT", tmp_path / "empty")


def test_a_file_is_not_a_dataset(tmp_path):
    f = tmp_path / "dataset.json"
    f.write_text("{}")
    with pytest.raises(DatasetError) as err:
        resolve_dataset_path(os.fspath(f))
    assert str(f) in str(err.value) and "is a file" in str(err.value)


def test_empty_name_is_rejected(root):
    with pytest.raises(DatasetError, match="empty dataset name"):
        resolve_dataset_path("  ", root)
