"""suprem_apply_postprocessing on label maps with a real CT header: the decided labels lose their islands only."""
from __future__ import annotations

import json

import cc3d
import numpy as np

from suprem_nn.cli.apply_postprocessing import main as apply_pp
from suprem_nn.io import read_image, write_image

CASE = "ts_abdomen_sm_3mm"


def test_instructions_decide_which_labels_keep_one_component(real_ct, tmp_path, capsys):
    geometry = read_image(real_ct / CASE / "seg_btcv13.nii.gz")[1]
    lab = np.zeros(geometry.shape, dtype=np.uint8)
    lab[10:40, 10:40, 5:20] = 6        # liver
    lab[80:84, 80:84, 25:28] = 6       # an island of liver
    lab[50:60, 10:20, 5:12] = 2        # kidney_right in two pieces: both stay
    lab[50:60, 60:70, 5:12] = 2
    (tmp_path / "pred").mkdir()
    write_image(lab, geometry, tmp_path / "pred" / f"{CASE}.nii.gz")
    instr = tmp_path / "inference_instructions.json"
    instr.write_text(json.dumps({
        "format_version": 1, "dataset": "Dataset1_X", "activation": "softmax",
        "members": [{"plan": "p", "folds": [0]}], "postprocessing": {"largest_component": ["liver"]},
        "class_names": ["kidney_right", "liver"], "label_values": [2, 6]}))
    assert apply_pp(["-i", str(tmp_path / "pred"), "-o", str(tmp_path / "out"), "--postprocess-from", str(instr),
                     "--quiet"]) == 0
    assert "largest component for liver (label values 6)" in capsys.readouterr().err
    out, geo = read_image(tmp_path / "out" / f"{CASE}.nii.gz")
    assert geo == geometry
    expected = lab.copy()
    expected[80:84, 80:84, 25:28] = 0
    assert np.array_equal(out, expected)
    assert cc3d.connected_components(out == 2, connectivity=26, return_N=True)[1] == 2
    # by label value, both labels: the smaller kidney piece goes too
    assert apply_pp(["-i", str(tmp_path / "pred"), "-o", str(tmp_path / "out2"), "--label-values", "2", "6",
                     "--quiet"]) == 0
    out2 = read_image(tmp_path / "out2" / f"{CASE}.nii.gz")[0]
    assert (out2 == 2).sum() == 700 and (out2 == 6).sum() == 30 * 30 * 15
    # never over its own input
    assert apply_pp(["-i", str(tmp_path / "pred"), "-o", str(tmp_path / "pred"), "--label-values", "2",
                     "--quiet"]) == 1
    assert "must differ from the input folder" in capsys.readouterr().err
