"""suprem_export_onnx: the written file runs in ONNX Runtime and OpenVINO with torch's logits, and its record
says how to use it. Tiny networks and patches (32^3; Swin UNETR 64^3, its smallest size) keep this file fast."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from suprem_nn.cli.export_onnx import main as export_main
from suprem_nn.model_folder import load_fold
from suprem_nn.planning.plans import Normalization, Plan
from tests.inference.helpers import make_model_folder, tiny_plan


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread for torch and the runtimes: on a loaded 2-core machine two threads of these tiny networks spin
    against each other and take several times longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _runtimes(path, window: np.ndarray) -> dict:
    """Logits of ``window`` from ONNX Runtime and from OpenVINO (f32 inference precision) reading the .onnx."""
    import onnxruntime as ort
    import openvino as ov

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                      "INFERENCE_NUM_THREADS": 1})
    return {"onnxruntime": session.run(["logits"], {"image": window})[0], "openvino": compiled(window)[0]}


def _export_and_compare(tmp_path, plan: Plan, batch: int, tolerance: float) -> dict:
    folder = make_model_folder(tmp_path / "results", plan)
    out = tmp_path / "export" / "model.onnx"
    assert export_main([str(folder), "-o", str(out), "--quiet"]) == 0
    _, net = load_fold(folder, Plan.load(folder / "plans.json"), "0")
    window = torch.rand((batch, 1) + tuple(plan.patch_size), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = net(window).numpy()
    for runtime, got in _runtimes(out, window.numpy()).items():
        assert got.shape == expected.shape, runtime
        diff = float(np.abs(got - expected).max())
        assert diff < tolerance, f"{runtime}: max abs logit difference {diff}"
    record = json.loads((tmp_path / "export" / "model.onnx.json").read_text())
    assert record["model_file"] == "model.onnx" and record["network"]["name"] == plan.network
    assert record["verification"]["max_abs_logit_diff"] < tolerance
    assert not list((tmp_path / "export").glob(".tmp-*"))  # atomic writes leave nothing behind
    return record


def test_segresnet_softmax_export_runs_batched_in_onnxruntime_and_openvino(tmp_path):
    plan = tiny_plan(multilabel=False, classes=("liver", "spleen"), spacing=(4.5, 4.0, 5.0), mirror_axes=(0, 2))
    plan.label_values = [6, 1]  # label values that are not the channel indices
    record = _export_and_compare(tmp_path, plan, batch=2, tolerance=1e-4)
    io = record["onnx"]
    assert io["opset"] == 17 and io["dynamic_batch"] is True
    assert io["input"] == {"name": "image", "shape": ["batch", 1, 32, 32, 32], "dtype": "float32",
                           "axes": ["batch", "channel", "x", "y", "z"]}
    assert io["output"]["name"] == "logits" and io["output"]["shape"] == ["batch", 3, 32, 32, 32]
    pre = record["preprocessing"]
    assert pre["orientation"] == "RAS" and pre["target_spacing_mm"] == [4.5, 4.0, 5.0]
    assert pre["channels"][0]["normalization"] == {"scheme": "ct_window", "lower": -175.0, "upper": 250.0,
                                                   "mean": None, "std": None}
    assert pre["crop"]["threshold"] == -175.0 and pre["pad_value"] == 0.0
    assert pre["resampling"]["image_spline_order"] == 3 and pre["resampling"]["anisotropy_threshold"] == 3.0
    win = record["sliding_window"]
    assert win["patch_size"] == [32, 32, 32] and win["step_size_default"] == 0.5 and win["mirror_axes"] == [0, 2]
    assert win["importance_map"]["sigma_scale"] == 0.125
    out = record["output"]
    assert out["activation"] == "softmax" and out["multilabel"] is False
    assert out["classes"] == [{"channel": 0, "name": "background", "label_value": 0},
                              {"channel": 1, "name": "liver", "label_value": 6},
                              {"channel": 2, "name": "spleen", "label_value": 1}]
    assert record["source"]["fold"] == "0" and record["code"]["torch"] == torch.__version__
    assert Plan.from_json(record["plan"]).patch_size == [32, 32, 32]


def test_unet_batch_statistics_export_takes_one_window(tmp_path):
    plan = tiny_plan(multilabel=True, network="unet", classes=("liver", "spleen", "kidney"))
    record = _export_and_compare(tmp_path, plan, batch=1, tolerance=1e-3)
    io = record["onnx"]
    assert io["dynamic_batch"] is False and io["input"]["shape"] == [1, 1, 32, 32, 32]
    assert "one window per call" in io["batch_note"]
    assert record["output"]["activation"] == "sigmoid"
    assert [c["channel"] for c in record["output"]["classes"]] == [0, 1, 2]
    assert [c["label_value"] for c in record["output"]["classes"]] == [1, 2, 3]


def test_swinunetr_window_partition_exports_at_its_patch(tmp_path):
    plan = tiny_plan(multilabel=True, network="swinunetr", patch=(64, 64, 64), classes=("liver",))
    # the real window and first two stages (where the shifted-window partition pads 32^3 and 16^3), fewer channels
    plan.network_kwargs = {"feature_size": 12, "depths": [2, 2, 1, 1], "num_heads": [1, 1, 1, 1]}
    record = _export_and_compare(tmp_path, plan, batch=1, tolerance=1e-3)
    assert record["onnx"]["input"]["shape"] == ["batch", 1, 64, 64, 64]


def test_pad_value_is_the_predictors(tmp_path):
    from suprem_nn.inference.onnx_export import _pad_value
    from suprem_nn.inference.predictor import Predictor
    from tests.inference.helpers import ThresholdNet

    plan = tiny_plan()
    plan.normalization = [Normalization("ct_clip_zscore", -1000.0, 400.0, mean=50.0, std=100.0)]
    assert _pad_value(plan) == Predictor(plan, [ThresholdNet()])._pad_value() == pytest.approx(-10.5)


def test_bad_sources_are_one_line_naming_the_file(tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    assert export_main([str(tmp_path / "missing"), "-o", out]) == 1
    assert capsys.readouterr().err.strip() == f"suprem_export_onnx: error: {tmp_path / 'missing'}: model folder not found"
    folder = make_model_folder(tmp_path / "results", tiny_plan())
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    assert export_main([str(folder), "-o", out]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder / "fold_0" / "checkpoint_final.pth") in err[0]
    assert export_main([str(folder), "-f", "3", "-o", out]) == 1
    assert "checkpoint missing (folds present: fold_0)" in capsys.readouterr().err
    assert export_main([str(folder), "-o", str(tmp_path / "m.pth")]) == 1
    assert "must end in .onnx" in capsys.readouterr().err
    assert export_main(["-o", out]) == 1
    assert "nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.json").exists()


def test_released_segresnet_file_exports_with_the_direct_inference_recipe(tmp_path):
    import onnxruntime as ort

    from tests.fabricated_weights import make_fake_released_checkpoint

    released = make_fake_released_checkpoint("segresnet", tmp_path / "supremseg.pth", num_classes=32)
    out = tmp_path / "suprem_segresnet.onnx"
    assert export_main(["--checkpoint", str(released), "-o", str(out), "--no-verify", "--quiet"]) == 0
    record = json.loads((tmp_path / "suprem_segresnet.onnx.json").read_text())
    assert record["source"]["backbone"] == "segresnet" and record["verification"]["skipped"]
    pre, win, outp = record["preprocessing"], record["sliding_window"], record["output"]
    assert pre["orientation"] == "RAS" and pre["target_spacing_mm"] == [1.5, 1.5, 1.5]
    assert pre["crop"]["threshold"] == -175.0 and pre["resampling"]["image_spline_order"] == 1
    assert win["patch_size"] == [96, 96, 96] and win["step_size_default"] == 0.25 and win["mirror_axes"] == []
    assert outp["activation"] == "sigmoid" and len(outp["classes"]) == 32
    assert record["direct_inference_defaults"]["postprocess"] == "largest-component"
    inputs = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()
    assert [(i.name, i.shape) for i in inputs] == [("image", ["batch", 1, 96, 96, 96])]
    assert export_main([str(tmp_path), "--suprem", "segresnet", "-o", str(out)]) == 1  # two sources


def test_missing_onnx_package_is_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    import sys

    folder = make_model_folder(tmp_path / "results", tiny_plan())
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an environment without the onnx package sees
    assert export_main([str(folder), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the onnx package" in err[0] and 'pip install -e ".[onnx]"' in err[0]
    assert not list(tmp_path.glob("m.onnx*")) and not list(tmp_path.glob(".tmp-*"))
