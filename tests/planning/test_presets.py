"""Presets and command-line choices follow the backbone table (suprem_nn/networks/backbones.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from suprem_nn.errors import PlanError
from suprem_nn.networks.backbones import BACKBONES
from suprem_nn.planning import load_preset
from tests.conftest import make_nnunet_dataset

REPO = Path(__file__).resolve().parents[2]
RELEASED = ["unet", "segresnet", "swinunetr"]
SMALL = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"suprem_nn.cli.{module}", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


def offered(stderr: str) -> list[str]:
    """The choices argparse lists after 'invalid choice' (quoted or not, depending on the Python version)."""
    listed = stderr.split("(choose from ", 1)[1].split(")", 1)[0]
    return [c.strip().strip("'") for c in listed.split(",")]


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_has_a_preset_and_its_divisibility_comes_from_the_table(name):
    spec = BACKBONES[name]
    preset = load_preset(name)
    assert preset["name"] == preset["network"] == name
    assert preset["divisibility"] == spec.divisibility
    assert all(p % spec.divisibility == 0 for p in preset["pretraining_patch"])
    assert ("checkpoint" in preset) == ("class_map" in preset) == spec.suprem_weights
    if spec.suprem_weights:
        assert preset["checkpoint"]["file"] == f"supervised_suprem_{name}_2100.pth"
    assert "divisibility" not in (REPO / "plans" / spec.preset).read_text()  # written once, in the table


def test_mednext_is_from_scratch_only():
    assert [n for n, b in BACKBONES.items() if b.suprem_weights] == RELEASED
    assert BACKBONES["mednext"].release is None
    with pytest.raises(PlanError, match=r"no SuPreM weights are released for 'mednext'.*--from-scratch mednext"):
        load_preset("mednext", need_weights=True)
    with pytest.raises(PlanError, match="unknown backbone 'vnet'; choose one of unet, segresnet, swinunetr, mednext"):
        load_preset("vnet")
    from suprem_nn.networks.weights import WeightsError, released_weights
    with pytest.raises(WeightsError, match="no SuPreM weights are released for 'mednext'"):
        released_weights("mednext")


def test_command_choices_are_the_table_entries():
    """--pretrained / --suprem / suprem_download_weights list the released backbones; --from-scratch lists all."""
    r = run("plan_and_preprocess", "-d", "101", "--pretrained", "mednext")
    assert r.returncode == 2 and "invalid choice: 'mednext'" in r.stderr and offered(r.stderr) == RELEASED
    r = run("plan_and_preprocess", "-d", "101", "--from-scratch", "vnet")
    assert r.returncode == 2 and offered(r.stderr) == RELEASED + ["mednext"]
    for module, flag in (("train", "--pretrained"), ("predict", "--suprem"), ("export_onnx", "--suprem")):
        r = run(module, "--help")
        assert r.returncode == 0 and f"{flag} {{unet,segresnet,swinunetr}}" in r.stdout, (module, r.stdout)
    r = run("download_weights", "mednext")
    assert r.returncode == 1
    assert r.stderr.strip() == ("suprem_download_weights: error: unknown backbone 'mednext'; choose from unet, "
                                "segresnet, swinunetr or all")


def test_pretrained_mednext_plan_is_refused_and_suprem_conventions_plan_it_from_scratch(real_ct):
    from suprem_nn.preprocessing.api import plan_and_preprocess

    make_nnunet_dataset(Path(os.environ["SUPREM_RAW"]), cases=SMALL)
    with pytest.raises(PlanError, match="no SuPreM weights are released for 'mednext'"):
        plan_and_preprocess("Dataset101_RealCT", pretrained="mednext", num_processes=1, progress=False)
    assert not Path(os.environ["SUPREM_PREPROCESSED"]).exists()
    result = plan_and_preprocess("Dataset101_RealCT", pretrained=None, network="mednext", conventions="suprem",
                                 plan_only=True, num_processes=1, progress=False)
    plan = result.plan
    assert plan.plan_name == "scratch_mednext_suprem" and plan.network == "mednext" and plan.pretrained is None
    assert plan.target_spacing == [1.5, 1.5, 1.5] and plan.normalization[0].scheme == "ct_window"
    assert plan.divisibility == 16 and all(p % 16 == 0 and p <= 96 for p in plan.patch_size)
    assert plan.checkpoint == {} and plan.training["optimizer"] == "adamw" and plan.training["lr"] == 1e-3
    assert any("MedNeXt-B" in n for n in plan.notes)
