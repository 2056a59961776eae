"""Drive a real nnU-Net v2 installation (the peer venv) to make trained models to compare against.

Used by tests/nnunet_compat and benchmarks/predict_bench.py. Every step is a subprocess of the
peer venv's own console scripts (``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train``, ``nnUNetv2_predict``);
nothing of nnU-Net is imported into our process. Short training uses nnU-Net's own ``nnUNet_extTrainer``
mechanism: a subclass of ``nnUNetTrainer`` that only lowers the epoch/iteration counts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional, Sequence

PEER_VENV = Path(os.environ.get("NNUNET_VENV", os.path.expanduser("~/peer/nnunet-venv")))
BTCV13 = ["spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus", "liver", "stomach", "aorta",
          "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right",
          "adrenal_gland_left"]

_TRAINER = '''import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    """nnUNetTrainer with {epochs} epoch(s) of {iters} iteration(s) and {val} validation iteration(s)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iters}
        self.num_val_iterations_per_epoch = {val}

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped (short test trainer)")
'''


def peer_available() -> Optional[str]:
    """None when the peer venv can run nnU-Net, else the reason it cannot."""
    py = PEER_VENV / "bin" / "python"
    if not (PEER_VENV / "bin" / "nnUNetv2_train").is_file():
        return f"nnU-Net v2 peer venv not found at {PEER_VENV} (set NNUNET_VENV; see shared/peer/README.md)"
    r = subprocess.run([str(py), "-c", "import nnunetv2, torchvision"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"nnunetv2 not importable in {PEER_VENV}: {r.stderr.strip().splitlines()[-1] if r.stderr else ''}"
    return None


class NnunetRoots:
    """nnUNet_raw / nnUNet_preprocessed / nnUNet_results / nnUNet_extTrainer under one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.raw, self.pre, self.results, self.ext = (self.root / n for n in
                                                      ("raw", "preprocessed", "results", "ext_trainers"))
        for p in (self.raw, self.pre, self.results, self.ext):
            p.mkdir(parents=True, exist_ok=True)

    def env(self, threads: Optional[int] = None) -> dict:
        env = {**os.environ, "nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.pre),
               "nnUNet_results": str(self.results), "nnUNet_extTrainer": str(self.ext), "PYTHONUNBUFFERED": "1",
               "nnUNet_compile": "f",
               "nnUNet_def_n_proc": "2"}
        env.pop("PYTHONPATH", None)
        return env

    def run(self, tool: str, *args, check: bool = True, extra_env: Optional[dict] = None
            ) -> subprocess.CompletedProcess:
        cmd = [str(PEER_VENV / "bin" / tool), *map(str, args)]
        r = subprocess.run(cmd, env={**self.env(), **(extra_env or {})}, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def make_dataset(self, dataset_id: int, name: str, cases: dict[str, tuple[Path, Path]]) -> Path:
        """Raw dataset from ``{case_id: (ct file, label file)}`` with btcv13 labels; returns its folder."""
        folder = self.raw / f"Dataset{dataset_id:03d}_{name}"
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(exist_ok=True)
        for cid, (ct, seg) in cases.items():
            shutil.copyfile(ct, folder / "imagesTr" / f"{cid}_0000.nii.gz")
            shutil.copyfile(seg, folder / "labelsTr" / f"{cid}.nii.gz")
        labels = {"background": 0, **{n: i + 1 for i, n in enumerate(BTCV13)}}
        (folder / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz"},
            indent=1))
        return folder

    def plan_and_train(self, dataset_id: int, trainer: str = "nnUNetTrainer_tiny", epochs: int = 1,
                       iters: int = 2, val_iters: int = 1, fold: str = "all",
                       edit_plans: Optional[Callable[[dict], None]] = None) -> Path:
        """Plan (optionally edit the 3d_fullres plan), preprocess, train; returns the model folder."""
        self.run("nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "3d_fullres", "-npfp", 2, "-np", 2,
                 "--no_pp")
        ds = next(self.pre.glob(f"Dataset{dataset_id:03d}_*"))
        plans_file = ds / "nnUNetPlans.json"
        if edit_plans is not None:
            plans = json.loads(plans_file.read_text())
            edit_plans(plans)
            plans_file.write_text(json.dumps(plans, indent=1))
        self.run("nnUNetv2_preprocess", "-d", dataset_id, "-c", "3d_fullres", "-np", 2)
        (self.ext / f"{trainer}.py").write_text(_TRAINER.format(name=trainer, epochs=epochs, iters=iters,
                                                                val=val_iters))
        # Data augmentation in the trainer's own process: no worker start-up for a few iterations.
        self.run("nnUNetv2_train", dataset_id, "3d_fullres", fold, "-tr", trainer, "-device", "cpu",
                 extra_env={"nnUNet_n_proc_DA": "0"})
        return self.results / ds.name / f"{trainer}__nnUNetPlans__3d_fullres"

    def predict_cmd(self, model_folder: Path, inp: Path, out: Path, folds: Sequence[str] = ("all",),
                    disable_tta: bool = False, step_size: float = 0.5, extra: Sequence[str] = ()) -> list[str]:
        """``nnUNetv2_predict_from_modelfolder`` command line (run it with :meth:`env`)."""
        cmd = [str(PEER_VENV / "bin" / "nnUNetv2_predict_from_modelfolder"), "-i", str(inp), "-o", str(out),
               "-m", str(model_folder), "-f", *folds, "-step_size", str(step_size), "-device", "cpu", *extra]
        if disable_tta:
            cmd.append("--disable_tta")
        return cmd
