"""Make your own SuPreM: pretrain on an AbdomenAtlas-layout dataset, export the backbone, fine-tune from it.

Real CTs, real subprocesses for the commands, tiny budgets (4.5 mm, 32^3 or 16^3 patches, 1-2 iterations);
documentation/make_your_own_suprem.md states what the recipe costs at the real conventions.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import make_abdomenatlas_dataset
from tests.training.conftest import DATASET

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--val-iterations", "0", "--num-workers", "0", "--device", "cpu", "--no-final-validation", "--seed", "3"]


def _run(module: str, *args, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", f"suprem_nn.cli.{module}", *map(str, args)], cwd=REPO,
                          env={**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{module} {args}:\n{done.stdout}\n{done.stderr}"
    return done


def _backbone(state: dict, head: str) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(head)}


def test_pretraining_recipe_export_and_fine_tuning(tiny_dataset, tmp_path):
    from suprem_nn import __version__
    from suprem_nn.networks import build_network, init_from_pretrained
    from suprem_nn.networks.export_record import conventions_mismatch, file_sha256

    env = {**os.environ, "SUPREM_RESULTS": str(tmp_path / "results")}
    atlas = make_abdomenatlas_dataset(tmp_path / "atlas_raw")
    # 1. plan from scratch at the SuPreM SegResNet input conventions (tiny spacing and patch for speed)
    _run("plan_and_preprocess", "-d", atlas, "--from-scratch", "segresnet", "--conventions", "suprem",
         "--spacing", 4.5, 4.5, 4.5, "--patch-size", 32, 32, 32, "--batch-size", 2, "-np", 1, "--quiet", env=env)
    plan = json.loads((Path(env["SUPREM_PREPROCESSED"]) / "AbdomenAtlas" / "scratch_segresnet_suprem" /
                       "plans.json").read_text())
    assert plan["pretrained"] is None and plan["checkpoint"] == {} and plan["multilabel"] is True
    assert plan["normalization"][0] == {"scheme": "ct_window", "lower": -175.0, "upper": 250.0, "mean": None,
                                        "std": None}
    assert plan["training"]["lr"] == 1e-3 and plan["training"]["optimizer"] == "adamw"
    # 2. train multi-label on every case (fold all)
    _run("train", "AbdomenAtlas", "all", "--epochs", 1, "--iterations-per-epoch", 2, *QUICK, "--quiet", env=env)
    model_folder = tmp_path / "results" / "AbdomenAtlas" / "scratch_segresnet_suprem"
    # 3. export the backbone
    out = tmp_path / "weights" / "my_suprem_segresnet.pth"
    done = _run("export_backbone", model_folder, "-f", "all", "-o", out, env=env)
    assert "loaded: 81 tensors (backbone for fine-tuning)" in done.stdout
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert list(exported) == ["net"] and len(exported["net"]) == 81
    assert all(k.startswith("module.") and not k.startswith("module.conv_final.2.") for k in exported["net"])
    trained = torch.load(model_folder / "fold_all" / "checkpoint_final.pth", weights_only=True)["network_weights"]
    for key, value in _backbone(trained, "conv_final.2.").items():
        assert torch.equal(exported["net"]["module." + key], value), key
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["family"] == "segresnet" and record["tensors"] == 81
    assert record["weights_sha256"] == file_sha256(out)
    assert record["classes"] == plan["class_names"] and "hepatic_vessel" in record["classes"]
    assert record["multilabel"] is True
    assert record["input_conventions"]["spacing_mm"] == [4.5, 4.5, 4.5]
    assert record["input_conventions"]["normalization"] == plan["normalization"]
    assert record["training"]["dataset"] == "AbdomenAtlas" and record["training"]["fold"] == "all"
    assert record["training"]["train_cases"] == ["BDMAP_00000001", "BDMAP_00000002", "BDMAP_00000003"]
    assert record["training"]["num_train_cases"] == 3 and record["training"]["epochs_completed"] == 1
    assert record["plan"]["plan_name"] == "scratch_segresnet_suprem"
    assert record["code"]["suprem_nn"] == __version__ and record["code"]["torch"] == torch.__version__

    # 4. fine-tune another dataset (nnU-Net layout, 14 softmax outputs) from the export
    _run("train", DATASET, "0", "--pretrained", "segresnet", "--pretrained-checkpoint", out, "--epochs", 1,
         "--iterations-per-epoch", 1, *QUICK, env=env)
    log = (tmp_path / "results" / DATASET / "suprem_segresnet" / "fold_0" / "training_log.txt").read_text()
    assert f"Checkpoint {out}" in log and "SegResNet (MONAI), backbone only, 81 tensors" in log
    assert "origin: suprem_nn backbone export: AbdomenAtlas, plan scratch_segresnet_suprem, fold all " \
           "(3 training cases), 1 epochs trained; 8 classes" in log
    assert "loaded: 81 tensors (backbone for fine-tuning)" in log
    assert "warning:" not in log  # both plans are at 4.5 mm and the SuPreM HU window
    ct_window = [{"scheme": "ct_window", "lower": -175.0, "upper": 250.0}]
    assert conventions_mismatch(out, [4.5, 4.5, 4.5], ct_window) is None
    assert "spacing 4.5 x 4.5 x 4.5 mm vs 1.5 x 1.5 x 1.5 mm" in conventions_mismatch(out, [1.5] * 3, ct_window)

    # round trip: every backbone tensor of a new model is the exported one; only the task head is fresh
    model = build_network("segresnet", 1, 14)
    report = init_from_pretrained(model, "segresnet", out)
    state = model.state_dict()
    assert sorted(report.loaded) == sorted(_backbone(state, "conv_final.2."))
    assert report.kept_fresh == ["conv_final.2.conv.bias", "conv_final.2.conv.weight"]
    for key in report.loaded:
        assert torch.equal(state[key], exported["net"]["module." + key]), key

    # a record that does not belong to the file is not believed
    record["weights_sha256"] = "0" * 64
    out.with_suffix(".json").write_text(json.dumps(record))
    assert "describes another file" in str(init_from_pretrained(build_network("segresnet", 1, 2), "segresnet", out))


def test_unet_round_trip_from_a_trained_model(tiny_dataset, tmp_path, monkeypatch):
    """A tiny U-Net training (16^3 patches), exported under module.backbone.* like the Universal-Model release."""
    from suprem_nn.inference.backbone_export import export_backbone
    from suprem_nn.networks import build_network, init_from_pretrained

    src = json.loads((tiny_dataset / "suprem_segresnet" / "plans.json").read_text())
    shutil.copytree(tiny_dataset / "suprem_segresnet", tiny_dataset / "scratch_unet16")
    src.update(plan_name="scratch_unet16", network="unet", pretrained=None, checkpoint={}, network_kwargs={},
               patch_size=[16, 16, 16], divisibility=8, batch_size=2)
    (tiny_dataset / "scratch_unet16" / "plans.json").write_text(json.dumps(src))
    env = {**os.environ, "SUPREM_RESULTS": str(tmp_path / "results")}
    _run("train", DATASET, "0", "--plan", "scratch_unet16", "--from-scratch", "--epochs", 1,
         "--iterations-per-epoch", 1, *QUICK, "--quiet", env=env)
    monkeypatch.setenv("SUPREM_RESULTS", env["SUPREM_RESULTS"])
    out = tmp_path / "unet_backbone.pth"
    written, record = export_backbone(DATASET, out, plan_name="scratch_unet16")
    assert record["training"]["fold"] == "0" and record["tensors"] == 104 and len(written.loaded) == 104
    assert record["training"]["num_train_cases"] == 2 and len(record["training"]["val_cases"]) == 1

    exported = torch.load(out, map_location="cpu", weights_only=True)["net"]
    assert len(exported) == 104 and all(k.startswith("module.backbone.") for k in exported)
    model = build_network("unet", 1, 5)
    report = init_from_pretrained(model, "unet", out)
    assert report.layout == "backbone only" and report.stripped_prefixes == ["module.", "backbone."]
    assert "loaded: 104 tensors (backbone for fine-tuning)" in str(report) and "origin: suprem_nn backbone export" \
        in str(report)
    trained = torch.load(tmp_path / "results" / DATASET / "scratch_unet16" / "fold_0" / "checkpoint_final.pth",
                         weights_only=True)["network_weights"]
    state = model.state_dict()
    assert sorted(report.loaded) == sorted(_backbone(state, "out_tr."))
    for key in report.loaded:  # includes BatchNorm running statistics and counters
        assert torch.equal(state[key], exported["module.backbone." + key]) and torch.equal(state[key], trained[key])

    # --pretrained-checkpoint alone also starts a plan planned from scratch (fold 1 of the same scratch plan)
    from suprem_nn.cli.train import main as train_main
    assert train_main([DATASET, "1", "--plan", "scratch_unet16", "--pretrained-checkpoint", str(out), "--epochs", "1",
                       "--iterations-per-epoch", "1", *QUICK]) == 0
    log = (tmp_path / "results" / DATASET / "scratch_unet16" / "fold_1" / "training_log.txt").read_text()
    assert "initialisation: SuPreM unet" in log and "loaded: 104 tensors (backbone for fine-tuning)" in log


def test_swinunetr_mapping_from_a_built_model(tmp_path):
    """Swin UNETR is too big to train here; its key mapping is checked on a built, perturbed network."""
    from suprem_nn.networks import build_network, init_from_pretrained
    from suprem_nn.networks.release_layout import write_backbone_export

    torch.manual_seed(0)
    source = build_network("swinunetr", 1, 3).state_dict()
    source = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in source.items()}
    out = tmp_path / "swin.pth"
    write_backbone_export(out, "swinunetr", source, {"classes": ["a", "b", "c"]})
    exported = torch.load(out, map_location="cpu", weights_only=True)["net"]
    assert len(exported) == 157 and all(k.startswith("module.backbone.") for k in exported)
    model = build_network("swinunetr", 1, 7)
    report = init_from_pretrained(model, "swinunetr", out)
    state = model.state_dict()
    assert len(report.loaded) == 157 and report.kept_fresh == ["out.conv.conv.bias", "out.conv.conv.weight"]
    for key in report.loaded:
        assert torch.equal(state[key], source[key]), key


def test_refusals_name_the_file_and_leave_nothing(tiny_dataset, tmp_path, capsys):
    """A network that is not the released size, an ambiguous fold and a misplaced flag: one line each."""
    from suprem_nn.cli.export_backbone import main as export_main
    from suprem_nn.cli.plan_and_preprocess import main as plan_main
    from suprem_nn.networks import build_network
    from tests.conftest import TINY_SEGRESNET_KWARGS

    folder = tmp_path / "model"
    for fold in ("0", "1"):
        (folder / f"fold_{fold}").mkdir(parents=True)
        weights = build_network("segresnet", 1, 14, **TINY_SEGRESNET_KWARGS).state_dict()
        torch.save({"network_weights": weights, "network": "segresnet", "epoch": 1},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    shutil.copyfile(tiny_dataset / "tiny_segresnet" / "plans.json", folder / "plans.json")
    out = tmp_path / "out" / "b.pth"

    assert export_main([str(folder), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 folds have checkpoint_final.pth (0, 1); choose one with -f" in err[0]

    assert export_main([str(folder), "-f", "1", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("suprem_export_backbone: error: ")
    assert str(folder / "fold_1" / "checkpoint_final.pth") in err[0] and "not the released SuPreM architecture" in err[0]
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not any(out.parent.glob(".tmp-*"))

    assert plan_main(["-d", DATASET, "--conventions", "suprem"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--conventions applies to --from-scratch plans" in err[0]

    from suprem_nn.cli.train import main as train_main
    assert train_main([DATASET, "0", "--plan", "tiny_segresnet", "--from-scratch", "--pretrained-checkpoint",
                       str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["suprem_train: error: --pretrained-checkpoint and --from-scratch exclude each other"]
