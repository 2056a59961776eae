"""Resampling rules and the exact way back onto the input grid."""
from __future__ import annotations

import numpy as np
import pytest

from suprem_nn.io import Geometry, read_image
from suprem_nn.planning import Normalization, Plan
from suprem_nn.preprocessing import preprocess_case, restore_to_original
from suprem_nn.preprocessing.resampling import (new_shape_for_spacing, resample_image, resample_labels,
                                                separate_axis)


@pytest.mark.parametrize("shape,sep", [((200, 170, 60), None), ((57, 47, 14), None), ((200, 170, 20), 2)])
def test_boxed_label_resampling_equals_full_one_hot_interpolation(real_ct, shape, sep):
    # Shapes avoid exact 2:1 ratios, where 0.5 ties would depend on float summation order.
    label, _ = read_image(real_ct / "ts_abdomen_sm_3mm" / "seg_btcv13.nii.gz")
    seg = label[None].astype(np.int16)
    fast = resample_labels(seg, shape, False, 13, sep_axis=sep)
    one_hot = np.stack([label == c for c in range(14)]).astype(np.float32)
    reference = resample_image(one_hot, shape, 1, sep).argmax(0)
    np.testing.assert_array_equal(fast[0], reference)
    masks = one_hot[1:].astype(np.uint8)
    np.testing.assert_array_equal(resample_labels(masks, shape, True, 13, sep_axis=sep),
                                  resample_image(masks.astype(np.float32), shape, 1, sep) >= 0.5)


def test_separate_axis_rule():
    assert separate_axis([0.8, 0.8, 5.0], [1.5, 1.5, 1.5], 3.0) == 2
    assert separate_axis([1.5, 1.5, 1.5], [0.8, 0.8, 5.0], 3.0) == 2
    assert separate_axis([1.0, 1.0, 2.0], [1.5, 1.5, 1.5], 3.0) is None
    assert separate_axis([5.0, 5.0, 1.0], [5.0, 5.0, 1.0], 3.0) is None  # two coarse axes tie
    assert new_shape_for_spacing([100, 50, 10], [1.0, 2.0, 5.0], [2.0, 2.0, 2.0]) == [50, 50, 25]


def test_anisotropic_resampling_keeps_slices_apart():
    data = np.zeros((1, 8, 8, 4), np.float32)
    data[0, :, :, 1] = 1.0  # one bright thick slice
    out = resample_image(data, (8, 8, 8), 1, sep_axis=2)
    # Nearest along the coarse axis: exactly two output slices are bright, none is a blend.
    assert sorted(np.unique(out).tolist()) == [0.0, 1.0]
    assert out[0, 0, 0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]


def _plan(**kw) -> Plan:
    base = dict(dataset_name="D", plan_name="p", network="unet", pretrained="unet", channel_names=["CT"],
                class_names=["spleen", "liver"], label_values=[1, 6], multilabel=False, orientation="RAS",
                target_spacing=[1.5, 1.5, 1.5], normalization=[Normalization("ct_window", -175.0, 250.0)],
                crop_threshold=-175.0, patch_size=[32, 32, 32], batch_size=2, divisibility=8,
                median_shape=[64, 64, 64])
    base.update(kw)
    return Plan(**base)


@pytest.mark.parametrize("case", ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"])
def test_network_space_maps_back_onto_the_input_grid(real_ct, case):
    image, geom = read_image(real_ct / case / "ct.nii.gz")
    label, _ = read_image(real_ct / case / "seg_btcv13.nii.gz")
    plan = _plan()
    data, seg, props = preprocess_case([image], geom, plan, label, case)
    assert props.original_geometry == geom and data.shape[1:] == tuple(props.shape_after_resampling)
    # Probabilities: a one-hot of the cached seg mapped back with per-channel fill (background 1 outside the crop).
    one_hot = np.stack([seg[0] == c for c in range(3)]).astype(np.float32)
    probs = restore_to_original(one_hot, props, plan, order=1, fill=[1.0, 0.0, 0.0])
    assert probs.shape == (3,) + geom.shape
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    back = probs.argmax(0)
    truth = np.select([label == 1, label == 6], [1, 2], 0)
    body = image > -175
    assert (back[body] == truth[body]).mean() > 0.99
    # The normalised image itself comes back close to the windowed original.
    img_back = restore_to_original(data, props, plan, order=1, fill=0.0)[0]
    windowed = (np.clip(image, -175, 250) + 175) / 425.0
    assert np.abs(img_back - windowed)[body].mean() < 0.05


def test_plan_json_schema_errors_name_the_field(tmp_path):
    from suprem_nn.errors import PlanError
    plan = _plan()
    d = plan.to_json()
    assert Plan.from_json(d) == plan
    for broken, words in [({**d, "patch_size": [96, 96]}, "patch_size"), ({**d, "batch_size": "2"}, "batch_size"),
                          ({k: v for k, v in d.items() if k != "class_names"}, "class_names"),
                          ({**d, "normalization": [{"kind": "x"}]}, "normalization"),
                          ({**d, "multilabel": "yes"}, "multilabel"), ([1, 2], "JSON object")]:
        with pytest.raises(PlanError, match=words):
            Plan.from_json(broken, tmp_path / "plans.json")
    (tmp_path / "plans.json").write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.load(tmp_path / "plans.json")
    assert plan.cache_hash() != _plan(target_spacing=[2.0, 2.0, 2.0]).cache_hash()
    assert plan.cache_hash() == _plan(batch_size=4, patch_size=[64, 64, 64]).cache_hash()


def test_plan_values_that_would_fail_far_from_the_file_are_refused_on_load(tmp_path):
    """A hand-edited plan's orientation or normalization used to fail in the middle of a prediction (KeyError,
    TypeError in numpy) or, for "RRS", reorient silently wrong; now loading says which field and why."""
    from suprem_nn.errors import PlanError
    from suprem_nn.io import plan_reorientation
    d = _plan().to_json()
    window = d["normalization"][0]
    cases = [({**d, "orientation": "RRS"}, "field 'orientation' must name one of L/R, one of A/P and one of S/I"),
             ({**d, "orientation": "xyz"}, "field 'orientation'"),
             ({**d, "normalization": [{**window, "scheme": "ct_windw"}]}, "unknown scheme 'ct_windw' (known: "
                                                                         "ct_window, ct_clip_zscore, zscore, none)"),
             ({**d, "normalization": [{**window, "lower": None}]}, "scheme 'ct_window' needs numbers lower, upper"),
             ({**d, "normalization": [{**window, "lower": 250.0, "upper": 250.0}]}, "'lower' must be below 'upper'"),
             ({**d, "normalization": [{"scheme": "ct_clip_zscore", "lower": -100.0, "upper": 200.0, "mean": 40.0}]},
              "needs numbers lower, upper, mean, std"),
             ({**d, "normalization": [{"scheme": ["ct_window"]}]}, "unknown scheme ['ct_window']")]
    for broken, words in cases:
        with pytest.raises(PlanError) as err:
            Plan.from_json(broken, tmp_path / "plans.json")
        assert str(err.value).startswith(f"{tmp_path / 'plans.json'}: ") and words in str(err.value), str(err.value)
    for fine in ("RAS", "lps", "SAR", "ILA"):
        assert Plan.from_json({**d, "orientation": fine}).orientation == fine
    with pytest.raises(ValueError, match="'RRS' must name one of L/R"):
        plan_reorientation(Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), "RRS")
