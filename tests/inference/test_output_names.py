"""Output names that cannot be confused with the input (rule in suprem_nn/inference/cases.py):
nnU-Net's CASE_0000.nii.gz -> CASE.nii.gz stays; every other image NAME gets NAME_seg.nii.gz; AbdomenAtlas as before;
an output that is the input itself is refused."""
from __future__ import annotations

import shutil

import pytest

from suprem_nn.errors import SupremError
from suprem_nn.evaluation.api import evaluate
from suprem_nn.inference import predict
from suprem_nn.inference.cases import find_cases
from suprem_nn.io.image_io import read_geometry

from .helpers import make_model_folder, tiny_plan

SM = "ts_abdomen_sm_3mm"


def _names(cases):
    return {c.case_id: (c.output.relative_to(c.output.parents[1]) if c.atlas else c.output.name) for c in cases}


def test_the_rule_for_every_input_form(real_ct, tmp_path):
    ct = real_ct / SM / "ct.nii.gz"
    out = tmp_path / "out"
    nnunet, plain, atlas = tmp_path / "nnunet", tmp_path / "plain", tmp_path / "atlas"
    for folder in (nnunet, plain, atlas / "BDMAP_1"):
        folder.mkdir(parents=True)
    shutil.copyfile(ct, nnunet / "liver_001_0000.nii.gz")
    shutil.copyfile(ct, plain / "ct.nii.gz")
    shutil.copyfile(ct, plain / "patient7.nii.gz")
    shutil.copyfile(ct, atlas / "BDMAP_1" / "ct.nii.gz")

    assert _names(find_cases(nnunet, out)) == {"liver_001": "liver_001.nii.gz"}           # nnU-Net, as always
    assert _names(find_cases(plain, out)) == {"ct": "ct_seg.nii.gz", "patient7": "patient7_seg.nii.gz"}
    assert _names(find_cases(plain / "ct.nii.gz", out)) == {"ct": "ct_seg.nii.gz"}        # one file, -o folder
    assert _names(find_cases(nnunet / "liver_001_0000.nii.gz", out)) == {"liver_001": "liver_001.nii.gz"}
    dicom = real_ct / "ts_upper_abdomen_ce_dicom" / "dicom"
    assert _names(find_cases(dicom, out)) == {"dicom": "dicom_seg.nii.gz"}
    (case,) = find_cases(atlas, out)
    assert case.atlas and case.output == out / "BDMAP_1" / "combined_labels.nii.gz"
    # -o FILE is the user's own choice of name
    assert find_cases(plain / "ct.nii.gz", tmp_path / "labels.nii.gz")[0].output == tmp_path / "labels.nii.gz"


def test_an_output_that_is_the_input_is_refused(real_ct, tmp_path):
    shutil.copyfile(real_ct / SM / "ct.nii.gz", tmp_path / "ct.nii.gz")
    with pytest.raises(SupremError, match="the output file is the input image") as err:
        find_cases(tmp_path / "ct.nii.gz", tmp_path / "ct.nii.gz")
    assert str(tmp_path / "ct.nii.gz") in str(err.value)
    with pytest.raises(SupremError, match="the output folder is the input folder"):
        find_cases(tmp_path, tmp_path)


def test_predict_ct_nii_gz_then_evaluate_pairs_it(real_ct, tmp_path):
    """The CT keeps its name, the label map is ct_seg.nii.gz beside nothing called ct.nii.gz, and suprem_evaluate
    still pairs ct_seg.nii.gz with the reference ct.nii.gz."""
    model = make_model_folder(tmp_path / "results", tiny_plan(spacing=(12.0, 12.0, 12.0), mirror_axes=()))
    inp, out, ref = tmp_path / "in", tmp_path / "out", tmp_path / "ref"
    inp.mkdir()
    ref.mkdir()
    shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / "ct.nii.gz")
    shutil.copyfile(real_ct / SM / "seg_btcv13.nii.gz", ref / "ct.nii.gz")
    summary = predict(inp, out, model, num_workers=0, progress=False)
    assert summary.ok and summary.cases == ["ct"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ct_seg.nii.gz"]
    assert read_geometry(out / "ct_seg.nii.gz") == read_geometry(inp / "ct.nii.gz")
    result = evaluate(ref, out, ref_labels="liver=6,spleen=1", output_dir=tmp_path / "eval")
    assert result["num_cases"] == 1
    # one file against the folder of references, too
    assert evaluate(ref, out / "ct_seg.nii.gz", ref_labels="liver=6,spleen=1",
                    output_dir=tmp_path / "eval1")["num_cases"] == 1


def test_the_chosen_configuration_names_its_outputs_by_the_same_rule(real_ct, tmp_path):
    """suprem_predict -d with inference_instructions.json: members and ensemble follow the rule, and the run's
    case ids stay the image names."""
    from suprem_nn.inference import PredictionSettings
    from suprem_nn.inference.chosen import predict_with_instructions
    from suprem_nn.inference.instructions import InferenceInstructions, Member
    from suprem_nn.paths import results_root

    plans = []
    for name in ("tiny_a", "tiny_b"):
        plan = tiny_plan(spacing=(12.0, 12.0, 12.0), mirror_axes=())
        plan.plan_name = name
        make_model_folder(results_root(), plan, seed=len(plans))
        plans.append(plan)
    instructions = InferenceInstructions(plans[0].dataset_name, [Member(p.plan_name, [0]) for p in plans], "sigmoid",
                                         ["liver", "spleen"], [1, 2], largest_component=["liver"])
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / "ct.nii.gz")
    (inp / "broken.nii.gz").write_bytes(b"not an image " * 50)
    summary = predict_with_instructions(inp, out, instructions, PredictionSettings(progress=False, num_workers=0))
    assert summary.cases == ["ct"] and [f["case"] for f in summary.failures] == ["broken"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ct_seg.nii.gz"]
    assert read_geometry(out / "ct_seg.nii.gz") == read_geometry(inp / "ct.nii.gz")
