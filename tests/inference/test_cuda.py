"""Prediction on a CUDA GPU gives what the CPU gives (skipped without a GPU; run on a GPU machine).

bf16 autocast is the CUDA default, so labels may differ from float32 CPU labels only where two classes are
within bf16 rounding of each other.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from suprem_nn.inference import Predictor
from suprem_nn.io.image_io import read_image
from suprem_nn.networks import build_network

from .helpers import tiny_plan

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _segresnet(plan, seed=0):
    torch.manual_seed(seed)
    return build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs).eval()


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_cuda_prediction_matches_cpu(real_ct, autocast):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    plan = tiny_plan(multilabel=False, spacing=(3.0, 3.0, 3.0), patch=(32, 32, 32))
    cpu = Predictor(plan, [_segresnet(plan)], use_mirroring=True)
    gpu = Predictor(plan, [_segresnet(plan)], device="cuda", use_mirroring=True, windows_per_batch=4,
                    autocast_dtype=autocast)
    case = cpu.prepare([img], geo)
    p_cpu, p_gpu = cpu.network_pass(case), gpu.network_pass(case)
    assert p_gpu.device.type == "cuda"
    # float32 on CUDA convolves in TF32 by default; bf16 autocast rounds activations to 8 mantissa bits.
    assert float((p_gpu.cpu() - p_cpu).abs().max()) < (2e-2 if autocast is None else 1e-1)
    a, b = cpu.to_input_grid(case, p_cpu), gpu.to_input_grid(case, p_gpu)
    assert b.label_map.shape == geo.shape and b.label_map.dtype == a.label_map.dtype
    agreement = float((a.label_map == b.label_map).mean())
    assert agreement > (0.999 if autocast is None else 0.99), agreement


def test_cuda_multilabel_with_largest_component(real_ct):
    pytest.importorskip("cc3d")  # a declared dependency; only a hand-made GPU environment may lack it
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    plan = tiny_plan(multilabel=True, spacing=(3.0, 3.0, 3.0), patch=(32, 32, 32))
    kw = dict(use_mirroring=False, postprocess="largest-component")
    cpu = Predictor(plan, [_segresnet(plan, 1)], **kw).predict_case([img], geo)
    gpu = Predictor(plan, [_segresnet(plan, 1)], device="cuda", autocast_dtype=None, **kw).predict_case([img], geo)
    assert gpu.masks.shape == cpu.masks.shape
    assert float((gpu.masks == cpu.masks).mean()) > 0.9999
    assert np.array_equal(np.unique(gpu.label_map), np.unique(cpu.label_map))
