"""Export decides labels on the crop box only, on the prediction device: it must equal deciding on the full grid.

The reference is the plain definition: restore every class's probabilities to the whole original grid
(:func:`restore_to_original`, background probability 1 outside the crop box) and take the argmax / the 0.5
threshold there.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from suprem_nn.inference import Predictor
from suprem_nn.io.image_io import read_image
from suprem_nn.preprocessing import restore_to_original

from .helpers import ThresholdNet, tiny_plan

# (case, target spacing): 2 mm isotropic, and 1.5 x 1.5 x 6 mm, which resamples the coarse axis separately.
SETTINGS = [("ts_abdomen_sm_3mm", (2.0, 2.0, 2.0)), ("ts_upper_abdomen_ce_dicom", (1.5, 1.5, 6.0))]


def _reference_labels(predictor: Predictor, case, probs: torch.Tensor) -> np.ndarray:
    fill = [1.0] + [0.0] * (probs.shape[0] - 1)
    full = restore_to_original(probs.cpu().numpy(), case.props, predictor.plan, order=1, fill=fill)
    return full.argmax(0)


@pytest.mark.parametrize("case_name,spacing", SETTINGS)
def test_exclusive_export_equals_argmax_on_the_full_grid(real_ct, case_name, spacing):
    img, geo = read_image(real_ct / case_name / "ct.nii.gz")
    plan = tiny_plan(multilabel=False, spacing=spacing, orientation="LPS")
    plan.anisotropy_threshold = 3.0
    net = ThresholdNet((0.5, 0.8), background=True, scales=[8.0, 30.0])
    p = Predictor(plan, [net], use_mirroring=False)
    case = p.prepare([img], geo)
    probs = p.network_pass(case)
    result = p.to_input_grid(case, probs)
    expected = _reference_labels(p, case, probs)
    assert result.label_map.shape == geo.shape
    assert set(np.unique(result.label_map)) == {0, 1, 2}
    np.testing.assert_array_equal(result.label_map, expected)


def test_multilabel_export_equals_thresholding_on_the_full_grid(real_ct):
    img, geo = read_image(real_ct / "ts_upper_abdomen_ce_dicom" / "ct.nii.gz")
    plan = tiny_plan(multilabel=True, spacing=(1.5, 1.5, 6.0))
    plan.anisotropy_threshold = 3.0
    p = Predictor(plan, [ThresholdNet((0.5, 0.8), scales=[8.0, 30.0])], use_mirroring=False)
    case = p.prepare([img], geo)
    probs = p.network_pass(case)
    result = p.to_input_grid(case, probs)
    full = restore_to_original(probs.numpy(), case.props, plan, order=1, fill=0.0)
    np.testing.assert_array_equal(result.masks, (full > 0.5).astype(np.uint8))
    assert result.masks[1].sum() > 0 and result.masks[0].sum() > result.masks[1].sum()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_export_matches_cpu_export(real_ct):
    img, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")
    plan = tiny_plan(multilabel=False, spacing=(2.0, 2.0, 2.0))
    net = ThresholdNet((0.5, 0.8), background=True, scales=[8.0, 30.0])
    cpu = Predictor(plan, [net], use_mirroring=True).predict_case([img], geo)
    gpu = Predictor(plan, [ThresholdNet((0.5, 0.8), background=True, scales=[8.0, 30.0])], device="cuda",
                    use_mirroring=True).predict_case([img], geo)
    # Float rounding differs between devices: only voxels on a decision boundary may change.
    assert (cpu.label_map != gpu.label_map).mean() < 1e-4
    assert gpu.label_map.shape == geo.shape and gpu.label_map.dtype == cpu.label_map.dtype
