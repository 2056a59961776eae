"""Every one-entry mutation of a real JSON file the commands read is accepted or refused with a SupremError.

Each entry of the file (and the file as a whole) is replaced in turn by null, a string, -1, 0, 2.5, [], {} or
removed; reading the file, and using it as far as the first case, must then either work or raise a SupremError,
whose message names the file. A TypeError or KeyError from deep inside is the bug these tests catch: mutating
files this way found more than a hundred such paths (plans.json of a model folder, the .json beside saved
probabilities, inference_instructions.json, an nnU-Net dataset.json).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from suprem_nn.errors import SupremError
from suprem_nn.io import read_image
from tests.conftest import require_optional

_REMOVED = object()
VALUES = [None, "x", -1, 0, 2.5, [], {}, _REMOVED]


def _entry_paths(node, prefix=()):
    yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _entry_paths(child, prefix + (key,))


def _mutations(content):
    """(where, value, mutated copy) for every entry of ``content`` and every value of :data:`VALUES`."""
    for where in _entry_paths(content):
        for value in VALUES:
            if value is _REMOVED and not where:
                continue
            if not where:
                yield where, value, value
                continue
            mutated = copy.deepcopy(content)
            parent = mutated
            for key in where[:-1]:
                parent = parent[key]
            if value is _REMOVED:
                del parent[where[-1]]
            else:
                parent[where[-1]] = value
            yield where, value, mutated


def _check_every_mutation(path: Path, use) -> int:
    """Write each mutation of ``path`` in place and call ``use()``; returns how many were refused."""
    original = json.loads(path.read_text())
    refused, escaped = 0, []
    for where, value, mutated in _mutations(original):
        path.write_text(json.dumps(mutated))
        try:
            use()
        except SupremError as exc:
            refused += 1
            assert "\n" not in str(exc), str(exc)
        except Exception as exc:  # noqa: BLE001 - what the test is looking for
            change = "removed" if value is _REMOVED else f"= {value!r}"
            escaped.append(f"{'.'.join(map(str, where)) or '<file>'} {change}: {type(exc).__name__}: {exc}")
    path.write_text(json.dumps(original))
    assert not escaped, "\n".join(escaped[:20])
    return refused


@pytest.fixture()
def small_ct(real_ct):
    return read_image(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz")


def test_model_folder_plans_json(tmp_path, small_ct, monkeypatch):
    from suprem_nn.inference import Predictor
    from tests.inference.helpers import make_model_folder, tiny_plan

    folder = make_model_folder(tmp_path, tiny_plan(spacing=(12.0, 12.0, 12.0), mirror_axes=()))
    image, geometry = small_ct

    def use():
        predictor = Predictor.from_model_folder(folder, folds=[0], engine="torch")
        predictor.prepare([image], geometry, "case")

    assert _check_every_mutation(folder / "plans.json", use) > 100


def test_saved_probabilities_json(tmp_path, small_ct):
    from suprem_nn.inference.probabilities import read_probabilities, write_probabilities
    from suprem_nn.preprocessing import preprocess_images
    from tests.inference.helpers import tiny_plan

    plan = tiny_plan(multilabel=False, spacing=(12.0, 12.0, 12.0))
    image, geometry = small_ct
    _, props = preprocess_images([image], geometry, plan, "case")
    probs = np.full((plan.num_outputs, *props.shape_after_resampling), 1 / plan.num_outputs, np.float32)
    write_probabilities(tmp_path / "case", probs, plan.class_names, plan.label_values, props, plan)
    assert _check_every_mutation(tmp_path / "case.json", lambda: read_probabilities(tmp_path / "case.npz")) > 50


def test_inference_instructions_json(tmp_path):
    from suprem_nn.inference.instructions import read_instructions

    path = tmp_path / "inference_instructions.json"
    path.write_text(json.dumps({
        "format_version": 1, "dataset": "Dataset903_Chosen", "activation": "softmax",
        "members": [{"plan": "plan_a", "folds": [0, 1]}], "postprocessing": {"largest_component": ["liver"]},
        "class_names": ["liver", "spleen"], "label_values": [1, 2],
        "cross_validation": {"chosen": {"mean_dice_after_postprocessing": 0.91}}}))
    assert _check_every_mutation(path, lambda: read_instructions(path)) > 20


def test_nnunet_dataset_json(tmp_path, small_ct):
    require_optional("dynamic_network_architectures", "suprem_predict --nnunet-model")
    from suprem_nn.inference.nnunet.predictor import NnunetPredictor
    from tests.inference.helpers import make_nnunet_model_folder

    folder = make_nnunet_model_folder(tmp_path)
    image, geometry = small_ct

    def use():
        NnunetPredictor.from_folder(folder, folds=[0]).prepare([image], geometry, "case")

    assert _check_every_mutation(folder / "dataset.json", use) > 20
