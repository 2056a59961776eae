"""A wrong dataset.json fails with a DatasetError naming the file and the field, never a KeyError."""
from __future__ import annotations

import json

import pytest

from suprem_nn.datasets import load_dataset
from suprem_nn.errors import DatasetError

GOOD = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": 0,
        "file_ending": ".nii.gz"}


def _with(**changes):
    d = dict(GOOD)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k)
        else:
            d[k] = v
    return json.dumps(d)


_DROP = object()

CASES = [
    ("not json", "{\"labels\": {", "not valid JSON"),
    ("list", "[1, 2]", "must hold a JSON object, got a list"),
    ("no channels", _with(channel_names=_DROP), "missing field 'channel_names'"),
    ("channels as list", _with(channel_names=["CT"]), "field 'channel_names' must be a non-empty mapping"),
    ("channel key", _with(channel_names={"zero": "CT"}), "field 'channel_names': key 'zero' is not a channel"),
    ("channel gap", _with(channel_names={"0": "CT", "2": "PET"}), "field 'channel_names': channel indices"),
    ("channel name type", _with(channel_names={"0": 5}), "field 'channel_names': channel 0 must be named"),
    ("no labels", _with(labels=_DROP), "missing field 'labels'"),
    ("labels as list", _with(labels=["background", "liver"]), "field 'labels' must be a non-empty mapping"),
    ("label string", _with(labels={"background": 0, "liver": "1"}), "field 'labels': class 'liver' must map to "
                                                                     "an integer"),
    ("label float", _with(labels={"background": 0, "liver": 1.5}), "field 'labels': class 'liver' must map to "
                                                                    "an integer"),
    ("label bool", _with(labels={"background": 0, "liver": True}), "field 'labels': class 'liver' must map"),
    ("regions", _with(labels={"background": 0, "liver": [1, 2]}), "region-based labels are not supported"),
    ("regions order", _with(regions_class_order=[1]), "region-based labels are not supported"),
    ("shared value", _with(labels={"background": 0, "a": 1, "b": 1}), "classes 'a' and 'b' share value 1"),
    ("negative", _with(labels={"background": 0, "a": -1}), "class 'a' has negative value -1"),
    ("no background", _with(labels={"liver": 1}), "no class with value 0"),
    ("only background", _with(labels={"background": 0}), "declares only the background"),
    ("ignore", _with(labels={"background": 0, "liver": 1, "ignore": 2}), "'ignore' label is not supported"),
    ("no numTraining", _with(numTraining=_DROP), "missing field 'numTraining'"),
    ("numTraining str", _with(numTraining="3"), "field 'numTraining' must be a non-negative integer, got '3'"),
    ("no file_ending", _with(file_ending=_DROP), "missing field 'file_ending'"),
    ("file_ending type", _with(file_ending=5), "field 'file_ending' must be a string"),
    ("file_ending 2d", _with(file_ending=".png"), "field 'file_ending' is '.png'; supported 3D formats"),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schema_errors_name_file_and_field(tmp_path, text, expected):
    folder = tmp_path / "Dataset042_Broken"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(text)
    with pytest.raises(DatasetError) as err:
        load_dataset(folder)
    msg = str(err.value)
    assert msg.startswith(str(folder / "dataset.json") + ": "), msg
    assert expected in msg, msg


def test_binary_garbage_dataset_json(tmp_path):
    folder = tmp_path / "Dataset043_Garbage"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_bytes(b"\xff\xfe\x00garbage\x89PNG")
    with pytest.raises(DatasetError) as err:
        load_dataset(folder)
    assert str(folder / "dataset.json") in str(err.value) and "JSON" in str(err.value)


def test_missing_images_tr_is_named(tmp_path):
    folder = tmp_path / "Dataset044_NoImages"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps(GOOD))
    with pytest.raises(DatasetError) as err:
        load_dataset(folder)
    assert str(folder) in str(err.value) and "no imagesTr/ folder" in str(err.value)
