"""A tiny planned + preprocessed real-CT dataset for the training tests (built once per session)."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import add_tiny_scratch_plan, make_nnunet_dataset

DATASET = "Dataset101_RealCT"


@pytest.fixture(scope="session")
def _tiny_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("training_roots")
    env = {"SUPREM_RAW": str(base / "raw"), "SUPREM_PREPROCESSED": str(base / "preprocessed")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from suprem_nn.preprocessing.api import plan_and_preprocess
        make_nnunet_dataset(base / "raw")
        plan_and_preprocess(DATASET, pretrained="segresnet", target_spacing=[4.5, 4.5, 4.5], patch_size=[32, 32, 32],
                            batch_size=2, num_processes=1, progress=False)
        # a scratch plan with the tiny network: same cache layout, different network size
        add_tiny_scratch_plan(base / "preprocessed" / DATASET)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return base


@pytest.fixture
def tiny_dataset(_tiny_roots, tmp_path, monkeypatch):
    """Env pointing at a private copy of the preprocessed tiny dataset; returns the preprocessed dataset folder."""
    pre = tmp_path / "preprocessed"
    shutil.copytree(_tiny_roots / "preprocessed", pre)
    monkeypatch.setenv("SUPREM_PREPROCESSED", str(pre))
    monkeypatch.setenv("SUPREM_RAW", str(_tiny_roots / "raw"))
    return pre / DATASET
