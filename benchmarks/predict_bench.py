"""nnUNetv2_predict vs suprem_predict, side by side on the same real CTs, the same trained network and settings.

usage: python benchmarks/predict_bench.py MODEL_FOLDER [--roots NNUNET_ROOTS] [--modes no-mirroring mirroring]
           [--engines torch openvino] [--out RESULTS.json] [--dry-run]

MODEL_FOLDER is a trained nnU-Net v2 model folder (``Trainer__Plans__3d_fullres`` with fold_all/), NNUNET_ROOTS
the folder whose ext_trainers/ holds a custom trainer class, if the model used one. The network is the same
file for both tools, so the comparison is exactly "comparable cost": only the predictors differ. Both run on
this machine's CPU, step 0.5, Gaussian weighting, with and without mirroring over all axes, the three cases of
shared/data/real_ct one after the other:

* ``nnUNetv2_predict_from_modelfolder`` (nnU-Net 2.8.1 in its own venv, .ci/install_nnunet_peer.sh);
* ``suprem_predict --nnunet-model`` in its default float32 (labels identical to nnU-Net's, the equal-output
  figure) and with ``--bf16`` (bfloat16 autocast, the default for our own models on CPUs with native bf16);
* for the stage split of nnU-Net, an in-process run of the functions nnUNetv2_predict calls
  (benchmarks/_nnunet_stages.py); ours comes from run_report.json.

Ours runs once per ``--engines`` entry (``--engine torch`` / ``--engine openvino``, documentation/prediction.md,
Engines). OpenVINO's one-time conversion is done first into a fresh cache and printed on its own line, so the
timed runs load the compiled model from the cache, as every run after a user's first does. ``--dry-run`` prints
the commands and exits.

Prints per tool: wall seconds for the three cases (process start and model loading included, as a user waits),
peak memory of the process tree (PSS, benchmarks/_measure.py), seconds per stage summed over the cases, the
speed-up against nnU-Net and the label agreement with nnU-Net's output per case.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "nnunet_compat"))
from _measure import run_measured  # noqa: E402
from peer import PEER_VENV, NnunetRoots  # noqa: E402

CASES = ["ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm", "ts_upper_abdomen_ce_dicom"]
STAGES = ("read", "preprocess", "network", "export")


def _agreement(ref_dir: Path, our_dir: Path) -> dict:
    import SimpleITK as sitk

    out = {}
    for c in CASES:
        r = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_dir / f"{c}.nii.gz")))
        o = sitk.GetArrayFromImage(sitk.ReadImage(str(our_dir / f"{c}.nii.gz")))
        out[c] = {"agreement": round(float((r == o).mean()), 6), "differing_voxels": int((r != o).sum())}
    return out


def _our_stages(report: dict) -> dict:
    per_case = report["seconds_per_case"].values()
    split = {k: round(sum(t.get(k, 0.0) for t in per_case), 2) for k in STAGES}
    split["export"] = round(split["export"] + sum(t.get("write", 0.0) for t in per_case), 2)
    return split


def _our_variants(engines) -> list[tuple[str, list[str]]]:
    """(row name, suprem_predict flags) per engine and precision; float32 is the CPU default for nnU-Net models."""
    return [(f"{e}_{p}" if len(engines) > 1 else f"suprem_{p}", ["--engine", e] + (["--bf16"] if p == "bf16" else []))
            for e in engines for p in ("fp32", "bf16")]


def _our_cmd(inp: Path, out: Path, model_folder: str, flags: list[str], tta: bool) -> list[str]:
    return ([sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o", str(out), "--nnunet-model",
             model_folder, "-f", "all", "--quiet", *flags] + ([] if tta else ["--disable-tta"]))


_CONVERT = """import json, sys, torch
from suprem_nn.inference.engines import prepare_engine
from suprem_nn.inference.nnunet_model import load_nnunet_model
m = load_nnunet_model(sys.argv[1], ["all"])
shape = [1, m.num_inputs] + [int(p) for p in m.configuration["patch_size"]]
_, report = prepare_engine(m.networks, "openvino", torch.device("cpu"), shape, torch.bfloat16 if sys.argv[2] == "1" else None)
print(json.dumps(report))
"""


def _convert_once(model_folder: str, bf16: bool, env: dict) -> dict:
    """Convert the model for the OpenVINO engine into the shared cache; its report (conversion seconds, size)."""
    r = subprocess.run([sys.executable, "-c", _CONVERT, model_folder, "1" if bf16 else "0"], env=env, cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _dry_run(a) -> int:
    roots = NnunetRoots(Path(tempfile.mkdtemp(prefix="predict_bench_dry_")) / "roots")
    inp, out = Path("INPUT"), Path("OUTPUT")
    for mode in a.modes:
        tta = mode == "mirroring"
        print(f"{mode}:")
        print("  nnunet: " + " ".join(map(str, roots.predict_cmd(Path(a.model_folder), inp, out / "nnunet",
                                                                  disable_tta=not tta,
                                                                  extra=["--disable_progress_bar"]))))
        for name, flags in _our_variants(a.engines):
            print(f"  {name}: " + " ".join(_our_cmd(inp, out / name, a.model_folder, flags, tta)))
    shutil.rmtree(roots.root.parent, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_folder")
    ap.add_argument("--roots", default=None)
    ap.add_argument("--modes", nargs="+", default=["no-mirroring", "mirroring"], choices=["no-mirroring", "mirroring"])
    ap.add_argument("--engines", nargs="+", default=["torch", "openvino"], choices=["torch", "openvino"],
                    help="suprem_predict --engine values to time (each in float32 and bfloat16)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data" / "real_ct"))
    ap.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    a = ap.parse_args()
    if a.dry_run:
        return _dry_run(a)

    work = Path(tempfile.mkdtemp(prefix="predict_bench_"))
    roots = NnunetRoots(Path(a.roots) if a.roots else work / "roots")
    inp = work / "input"
    inp.mkdir()
    for c in CASES:
        shutil.copyfile(Path(a.shared) / c / "ct.nii.gz", inp / f"{c}_0000.nii.gz")
    results = {}
    # Our runs share one engine cache under the work folder: converted once here, loaded by every timed run.
    our_env = {"PYTHONPATH": str(REPO), "SUPREM_ENGINE_CACHE": str(work / "engine_cache")}
    if "openvino" in a.engines:
        results["openvino_conversion"] = {p: _convert_once(a.model_folder, p == "bf16", our_env)
                                          for p in ("fp32", "bf16")}
        print("OpenVINO conversion (once, cached for the timed runs): " + ", ".join(
            f"{p} {r['convert_seconds']} s, {r['cache'][0]['megabytes']} MB"
            for p, r in results["openvino_conversion"].items()), flush=True)
    for mode in a.modes:
        tta = mode == "mirroring"
        ref_out = work / f"nnunet_{mode}"
        ref = run_measured(roots.predict_cmd(Path(a.model_folder), inp, ref_out, disable_tta=not tta,
                                             extra=["--disable_progress_bar"]), env=roots.env())
        assert ref["returncode"] == 0, ref["output"][-2000:]
        staged = subprocess.run([str(PEER_VENV / "bin" / "python"), str(REPO / "benchmarks" / "_nnunet_stages.py"),
                                 a.model_folder, str(work / f"staged_{mode}"), "1" if tta else "0",
                                 *map(str, sorted(inp.iterdir()))], env=roots.env(), capture_output=True, text=True)
        assert staged.returncode == 0, staged.stderr[-2000:]
        nn_stages = json.loads(staged.stdout.strip().splitlines()[-1])
        rows = {"nnunet": {"seconds": round(ref["seconds"], 2), "peak_pss_mb": round(ref["peak_pss_bytes"] / 2 ** 20),
                           "stages": {k: round(sum(t[k] for t in nn_stages.values()), 2) for k in STAGES}}}
        for name, flags in _our_variants(a.engines):
            our_out = work / f"{name}_{mode}"
            ours = run_measured(_our_cmd(inp, our_out, a.model_folder, flags, tta), env=our_env, cwd=REPO)
            assert ours["returncode"] == 0, ours["output"][-2000:]
            report = json.loads((our_out / "run_report.json").read_text())
            rows[name] = {"seconds": round(ours["seconds"], 2), "peak_pss_mb": round(ours["peak_pss_bytes"] / 2 ** 20),
                          "stages": _our_stages(report), "speedup": round(ref["seconds"] / ours["seconds"], 2),
                          "memory_ratio": round(ours["peak_pss_bytes"] / ref["peak_pss_bytes"], 2),
                          "engine": report.get("engine", {"name": "torch"}),
                          "labels_vs_nnunet": _agreement(ref_out, our_out)}
        results[mode] = rows
        print(f"\n{mode} ({len(CASES)} cases, step 0.5; wall seconds include process start and model loading)")
        print(f"{'tool':12s} {'wall s':>7s} {'peak MB':>8s} " + " ".join(f"{k:>10s}" for k in STAGES)
              + f" {'speed-up':>8s}  agreement with nnU-Net")
        for name, r in rows.items():
            agree = ", ".join(f"{v['agreement'] * 100:.3f}%" for v in r.get("labels_vs_nnunet", {}).values())
            print(f"{name:12s} {r['seconds']:7.1f} {r['peak_pss_mb']:8d} "
                  + " ".join(f"{r['stages'][k]:10.2f}" for k in STAGES)
                  + f" {r.get('speedup', 1.0):7.2f}x  {agree or '-'}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
