"""A files run that owns its predictor frees the networks after the last network pass, so the last export does not
carry the engine's buffers (OpenVINO keeps ~2-3x a small network's weights allocated between calls); the labels and
the report are what they were, and a released predictor says so instead of predicting nothing."""
from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest

pytest.importorskip("openvino")

from suprem_nn.inference import predict  # noqa: E402
from suprem_nn.inference import openvino_engine  # noqa: E402
from suprem_nn.inference.nnunet.predictor import NnunetPredictor  # noqa: E402
from suprem_nn.inference.predictor import Predictor  # noqa: E402
from suprem_nn.io.image_io import read_image  # noqa: E402

from .helpers import make_model_folder, make_nnunet_model_folder, tiny_plan  # noqa: E402

CASES = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]  # sorted: the second one is exported last


def _inputs(real_ct, folder):
    folder.mkdir()
    for case in CASES:
        (folder / f"{case}_0000.nii.gz").write_bytes((real_ct / case / "ct.nii.gz").read_bytes())
    return folder


def _watch(monkeypatch, predictor_class) -> tuple[list, list]:
    """Weak references to every compiled OpenVINO network made, and how many were alive at each export."""
    made, alive_at_export = [], []
    original_init, original_export = openvino_engine.OpenVINONetwork.__init__, predictor_class.to_input_grid

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        made.append(weakref.ref(self))

    def export(self, *args, **kwargs):
        gc.collect()
        alive_at_export.append(sum(ref() is not None for ref in made))
        return original_export(self, *args, **kwargs)

    monkeypatch.setattr(openvino_engine.OpenVINONetwork, "__init__", init)
    monkeypatch.setattr(predictor_class, "to_input_grid", export)
    return made, alive_at_export


@pytest.mark.parametrize("source", ["model folder", "nnU-Net model"])
def test_last_export_runs_without_the_compiled_network(real_ct, tmp_path, monkeypatch, source):
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    inp = _inputs(real_ct, tmp_path / "in")
    if source == "model folder":
        model = {"model_folder": make_model_folder(tmp_path / "results", tiny_plan(multilabel=False)), "folds": [0]}
        predictor_class = Predictor
    else:
        pytest.importorskip("dynamic_network_architectures")
        model = {"nnunet_model": make_nnunet_model_folder(tmp_path / "nnunet_results"), "folds": [0]}
        predictor_class = NnunetPredictor
    # Sequential (-np 0): each export follows its own network pass, so only the last one can run without it.
    reference = predict(inp, tmp_path / "torch", engine="torch", fp32=True, num_workers=0, disable_tta=True,
                        progress=False, **model)
    made, alive_at_export = _watch(monkeypatch, predictor_class)
    summary = predict(inp, tmp_path / "openvino", engine="openvino", fp32=True, num_workers=0, disable_tta=True,
                      progress=False, **model)
    assert summary.ok and reference.ok, (summary.failures, reference.failures)
    assert made and alive_at_export == [1, 0]
    report = json.loads((tmp_path / "openvino" / "run_report.json").read_text())
    assert report["engine"]["name"] == "openvino" and report["settings"]["folds"] == 1
    for case in CASES:
        ours = read_image(tmp_path / "openvino" / f"{case}.nii.gz")[0]
        ref = read_image(tmp_path / "torch" / f"{case}.nii.gz")[0]
        assert float((ours == ref).mean()) >= 0.9999 and len(np.unique(ref)) > 1


def test_a_released_predictor_refuses_another_network_pass(real_ct):
    import torch

    from .helpers import ThresholdNet

    predictor = Predictor(tiny_plan(), [ThresholdNet()], use_mirroring=False)
    image, geometry = read_image(real_ct / CASES[0] / "ct.nii.gz")
    prepared = predictor.prepare([image], geometry, "case")
    probabilities = predictor.network_pass(prepared)
    predictor.release_networks()
    assert predictor.networks == []
    assert predictor.to_input_grid(prepared, probabilities).label_map.shape == image.shape  # export still works
    with pytest.raises(RuntimeError, match="released"):
        predictor.network_pass(prepared)
    assert isinstance(probabilities, torch.Tensor)
