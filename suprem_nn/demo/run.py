"""``run_demo``: the whole product on generated data, offline, in minutes on a CPU.

Steps (each one the real command, run as a subprocess exactly as a user would type it):

1. write a synthetic abdominal CT dataset (:mod:`.phantom`) in the nnU-Net v2 raw layout;
2. ``suprem_plan_and_preprocess`` with the SegResNet backbone's conventions (RAS, HU window
   [-175, 250]) at a coarse 6 mm spacing and a 48 x 48 x 32 patch, so that a CPU trains it in minutes;
3. ``suprem_train`` fold 0: fine-tuned from SuPreM when the released SegResNet weights are on disk,
   otherwise from scratch (said plainly); the number of epochs is sized from a measured
   training-step time so that training fits the ``minutes`` budget;
4. ``suprem_predict`` on the held-out cases with ``--preview`` overlay PNGs;
5. ``suprem_evaluate`` against their labels, then a Dice table and where every output is.

All files go under ``out``: ``raw/``, ``preprocessed/``, ``results/`` (the three roots, set through
``SUPREM_RAW``/``SUPREM_PREPROCESSED``/``SUPREM_RESULTS`` for the subprocesses), ``predictions/`` and
``demo_summary.json``. A rerun reuses the generated data and preprocessed cache and trains again.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import SupremError
from ..model_folder import fold_folder as model_fold_folder
from ..utils.atomic import atomic_write_json
from . import phantom

DATASET = "Dataset900_SupremDemo"
BACKBONE = "segresnet"            # the fastest SuPreM backbone on a CPU (4.7 M parameters)
PLAN = f"suprem_{BACKBONE}"
BIG_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left")
WORKING_DICE = 0.8                # mean Dice over BIG_ORGANS a person would call a working model


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run. ``FULL`` is the default; ``QUICK`` is the same path with tiny sizes (tests)."""

    num_train: int
    num_test: int
    shape: tuple[int, int, int]              # phantom grid, voxels [i, j, k]
    spacing: tuple[float, float, float]      # phantom voxel size, mm
    target_spacing: tuple[float, float, float]   # planned spacing, mm (--spacing)
    patch_size: tuple[int, int, int]         # voxels (--patch-size)
    batch_size: int
    minutes: float                           # default training budget; epochs are sized to fit it
    iterations_per_epoch: int
    val_iterations: int
    lr: float
    max_epochs: int                          # cap on the epochs a budget may buy
    predict_tta: bool                        # mirroring test-time augmentation in suprem_predict


# 6 mm voxels and a 48 x 48 x 32 patch (288 x 288 x 192 mm): the patch sees most of the abdomen, which the
# network needs to tell the left kidney from the right and the spleen from the liver (a 128 mm patch at 4 mm
# could not: mean Dice 0.43 after 53 epochs). Seven minutes of training keep the whole demo under ten minutes.
FULL = DemoSettings(num_train=16, num_test=3, shape=phantom.DEFAULT_SHAPE, spacing=phantom.DEFAULT_SPACING,
                    target_spacing=(6.0, 6.0, 6.0), patch_size=(48, 48, 32), batch_size=2, minutes=7.0,
                    iterations_per_epoch=20, val_iterations=2, lr=3e-3, max_epochs=200, predict_tta=False)
# The same anatomy at 6-8 mm voxels (about 60 x 47 x 20 voxels per case), one epoch of two steps.
QUICK = DemoSettings(num_train=5, num_test=1, shape=(60, 47, 20), spacing=(6.0, 6.0, 8.0),
                     target_spacing=(6.0, 6.0, 6.0), patch_size=(16, 16, 16), batch_size=2, minutes=0.1,
                     iterations_per_epoch=2, val_iterations=1, lr=2e-3, max_epochs=1, predict_tta=False)


@dataclass
class DemoResult:
    out: Path
    initialisation: str                       # "SuPreM segresnet (<file>)" or "from scratch"
    mean_dice: dict[str, Optional[float]]     # class -> mean Dice over the test cases
    big_organ_dice: Optional[float]
    previews: list[Path]
    progress_png: Path
    summary_json: Path                        # suprem_evaluate's summary.json
    seconds: dict[str, float] = field(default_factory=dict)   # per step and "total"
    epochs: int = 0
    quick: bool = False

    def to_json(self) -> dict:
        """The fields as a dict with paths as strings."""
        d = asdict(self)
        for k in ("out", "progress_png", "summary_json"):
            d[k] = str(d[k])
        d["previews"] = [str(p) for p in self.previews]
        return d


def default_output_folder() -> Path:
    """``~/suprem_nn_data/demo``, expanded."""
    return Path("~/suprem_nn_data/demo").expanduser()


def run_demo(out: Optional[Path] = None, quick: bool = False, minutes: Optional[float] = None,
             device: str = "cpu", echo: Callable[[str], None] = print, quiet: bool = False) -> DemoResult:
    """Run the demo into ``out`` (default ``~/suprem_nn_data/demo``) and return what it measured.

    ``minutes``: the training budget (default 7; ``quick``: one epoch); the number of epochs is sized to it
    from a measured training-step time, so a faster machine trains longer and scores higher; ``device`` is passed
    to ``suprem_train`` and ``suprem_predict``; ``quiet`` passes ``--quiet`` to the commands. Raises :class:`SupremError` when a step fails (its own
    output, printed above, says why).
    """
    s = QUICK if quick else FULL
    if minutes is not None and not minutes > 0:
        raise SupremError(f"--minutes must be positive, got {minutes}")
    out = Path(out or default_output_folder()).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    roots = {"SUPREM_RAW": out / "raw", "SUPREM_PREPROCESSED": out / "preprocessed", "SUPREM_RESULTS": out / "results"}
    # The demo stays offline (its figures are from-scratch runs): it fine-tunes SuPreM only when the weights are
    # already on disk, and its planning step does not download them.
    env = {**os.environ, **{k: str(v) for k, v in roots.items()}, "SUPREM_OFFLINE": "1"}
    raw = roots["SUPREM_RAW"] / DATASET
    seconds: dict[str, float] = {}
    t_total = time.perf_counter()

    echo(f"suprem_demo: the whole pipeline on {s.num_train} + {s.num_test} generated abdominal CTs "
         f"({'quick mode, tiny volumes' if quick else 'under 10 minutes: 7 of them training'})")
    echo(f"  output folder {out}")
    echo("  the commands below run with these roots:")
    for k, v in roots.items():
        echo(f"    export {k}={shlex.quote(str(v))}")

    # 1. data
    echo(f"\n[1/5] generating {s.num_train} training and {s.num_test} test phantoms "
         f"({' x '.join(map(str, s.shape))} voxels of {' x '.join(f'{v:g}' for v in s.spacing)} mm) in {raw}")
    t = time.perf_counter()
    done = []
    phantom.write_phantom_dataset(raw, s.num_train, s.num_test, s.shape, s.spacing, seed=0,
                                  on_case=lambda c: (done.append(c), echo(f"      {c} ({len(done)}/"
                                                                           f"{s.num_train + s.num_test})")))
    seconds["generate"] = time.perf_counter() - t

    # 3. (decided first: the commands of every step come from step_commands)
    weights = find_suprem_weights(BACKBONE)
    if weights is not None:
        init_flags = ["--pretrained", BACKBONE, "--pretrained-checkpoint", str(weights)]
        initialisation = f"SuPreM {BACKBONE} ({weights})"
    else:
        init_flags = ["--from-scratch"]
        initialisation = "from scratch"
    commands = step_commands(s, out, device, init_flags, quiet)

    # 2. plan and preprocess
    t = time.perf_counter()
    _step(2, "plan and preprocess", commands["plan_and_preprocess"], env, echo)
    seconds["plan_and_preprocess"] = time.perf_counter() - t

    # 3. train
    t = time.perf_counter()
    echo("\n[3/5] train fold 0")
    if weights is None:
        echo(f"      no SuPreM weights found: training from scratch (to fine-tune SuPreM instead, run "
             f"'suprem_download_weights {BACKBONE}' once, then run the demo again)")
    else:
        echo(f"      SuPreM weights found: fine-tuning from {weights}")
    step_seconds = measure_training_step(s, device)
    budget = s.minutes if minutes is None else float(minutes)
    epochs = epochs_for_budget(s, step_seconds, budget)
    echo(f"      one training step (batch {s.batch_size} of {' x '.join(map(str, s.patch_size))} voxels) takes "
         f"{step_seconds:.2f} s here: {epochs} epoch(s) x {s.iterations_per_epoch} steps, about "
         f"{_minutes(estimated_training_seconds(s, step_seconds, epochs))}"
         + f" (sized to a {budget:g}-minute budget; --minutes N changes it)")
    config = out / CONFIG_FILE
    atomic_write_json(config, {"epochs": epochs, "iterations_per_epoch": s.iterations_per_epoch,
                               "val_iterations": s.val_iterations, "lr": s.lr, "warmup_epochs": 1,
                               "schedule_step": "iteration", "num_workers": 1,
                               # Mirroring would swap the patient's left and right, and with them the left
                               # and right kidney: the labels stay, the side that tells them apart goes.
                               "augmentation": {"mirror": False},
                               # the test cases are evaluated in step 5; a second sliding-window pass over the
                               # validation cases would only add minutes
                               "final_validation": False})
    fold_folder = model_fold_folder(roots["SUPREM_RESULTS"] / DATASET / PLAN, 0)
    if fold_folder.exists():
        echo(f"      removing the previous demo run's {fold_folder}")
        shutil.rmtree(fold_folder)
    _step(3, None, commands["train"], env, echo)
    seconds["train"] = time.perf_counter() - t

    # 4. predict the held-out cases
    t = time.perf_counter()
    predictions = out / "predictions"
    _step(4, "predict the held-out cases", commands["predict"], env, echo)
    seconds["predict"] = time.perf_counter() - t

    # 5. evaluate
    t = time.perf_counter()
    _step(5, "evaluate against the test labels", commands["evaluate"], env, echo)
    seconds["evaluate"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_total

    summary_json = predictions / "summary.json"
    summary = json.loads(summary_json.read_text())
    mean = {name: m.get("dice") for name, m in summary["mean"].items()}
    big = [mean[n] for n in BIG_ORGANS if mean.get(n) is not None]
    big_dice = sum(big) / len(big) if big else None
    previews = sorted(predictions.glob("*_preview.png"))
    result = DemoResult(out, initialisation, mean, big_dice, previews, fold_folder / "progress.png", summary_json,
                        {k: round(v, 1) for k, v in seconds.items()}, epochs, quick)
    atomic_write_json(out / "demo_summary.json", result.to_json())
    echo("\n" + report(result))
    return result


CONFIG_FILE = "demo_training_config.json"


def step_commands(s: DemoSettings, out: Path, device: str = "cpu", init_flags: Sequence[str] = ("--from-scratch",),
                  quiet: bool = False) -> dict[str, list[str]]:
    """The commands of steps 2-5 as the demo runs (and prints) them for settings ``s`` and output folder ``out``.

    documentation/getting_started.md quotes them for :data:`FULL` with ``out`` = ``DIR``; tests/demo checks both
    that the demo prints exactly these and that the page quotes them.
    """
    raw, predictions = Path(out) / "raw" / DATASET, Path(out) / "predictions"
    extra = ["--quiet"] if quiet else []
    return {
        "plan_and_preprocess": ["suprem_plan_and_preprocess", "-d", DATASET, "--pretrained", BACKBONE,
                                "--spacing", *_nums(s.target_spacing), "--patch-size", *_nums(s.patch_size),
                                "--batch-size", str(s.batch_size), *extra],
        "train": ["suprem_train", DATASET, "0", "--plan", PLAN, *init_flags, "--device", device,
                  "--config", str(Path(out) / CONFIG_FILE), *extra],
        "predict": ["suprem_predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", DATASET, "-p", PLAN,
                    "-f", "0", "--device", device, "--preview", "--overwrite",
                    *([] if s.predict_tta else ["--disable-tta"]), *extra],
        "evaluate": ["suprem_evaluate", "-ref", str(raw / "labelsTs"), "-pred", str(predictions), *extra],
    }


def report(r: DemoResult) -> str:
    """The closing text: Dice per class, a verdict, where the outputs are, what to run next."""
    lines = ["suprem_demo finished in " + _minutes(r.seconds.get("total", 0.0)) +
             f" (training {_minutes(r.seconds.get('train', 0.0))}, {r.epochs} epoch(s), {r.initialisation})",
             "", "Dice on the held-out test cases:"]
    for name, d in r.mean_dice.items():
        lines.append(f"  {name:<14} {'n/a' if d is None else f'{d:.3f}'}")
    if r.quick:
        lines.append("  (--quick checks that every step runs; one short epoch cannot segment anything: run "
                     "suprem_demo without --quick for a working model)")
    elif r.big_organ_dice is not None:
        verdict = ("a working model" if r.big_organ_dice > WORKING_DICE else
                   f"below {WORKING_DICE}: train longer with --minutes N (see documentation/getting_started.md)")
        lines.append(f"  mean of liver, spleen and kidneys: {r.big_organ_dice:.3f} -> {verdict}")
    lines += ["", "Look at:"]
    lines += [f"  preview        {p}" for p in r.previews]
    lines += [f"  progress.png   {r.progress_png}",
              f"  metrics        {r.summary_json}",
              f"  demo summary   {r.out / 'demo_summary.json'}", ""]
    lines += next_steps(r)
    return "\n".join(lines)


# What a user copies after the demo. The file and folder names in them are placeholders a user replaces; the
# demo test runs the first block as printed (with a real CT saved as MY_CT), so it cannot drift from what works.
MY_CT = "my_ct.nii.gz"
MY_OUTPUT = "my_ct_segmentation"
MY_DATASET = "Dataset101_MyData"


def next_steps(r: DemoResult) -> list[str]:
    """The closing lines: the exact commands to segment one's own CT with the demo model (with the export line a new
    shell needs to find it) and to start on one's own dataset."""
    s = QUICK if r.quick else FULL
    results = shlex.quote(str(r.out / "results"))
    tta = [] if s.predict_tta else ["--disable-tta"]
    predict = ["suprem_predict", "-i", MY_CT, "-o", MY_OUTPUT, "-d", DATASET, "-p", PLAN, "-f", "0", *tta,
               "--preview"]
    return [
        "Next steps",
        f"  Segment your own CT with the demo model ({MY_CT}: your CT, a NIfTI/NRRD/MHA file or a DICOM folder;",
        f"  the label map is written to {MY_OUTPUT}/). In a new shell, the export line tells the command where the",
        "  model is:",
        f"    export SUPREM_RESULTS={results}",
        "    " + " ".join(predict),
        "  (the demo model learned synthetic phantoms: on a real CT it shows the workflow, not usable organs; for",
        "  those use SuPreM's released model, suprem_predict -i CT -o OUT --suprem segresnet, or train on your data)",
        "",
        "  Start on your own dataset (nnU-Net raw layout or AbdomenAtlas, see documentation/getting_started.md),",
        "  in a new shell (the roots then default to ~/suprem_nn_data/raw, preprocessed and results):",
        f"    suprem_plan_and_preprocess -d /path/to/{MY_DATASET} --pretrained {BACKBONE}",
        f"    suprem_train {MY_DATASET} 0 --pretrained {BACKBONE}        "
        "# without the SuPreM weights file: --from-scratch",
        f"    suprem_predict -i /path/to/new_scans -o /path/to/predictions -d {MY_DATASET} -f 0 --preview",
    ]


def find_suprem_weights(backbone: str = BACKBONE) -> Optional[Path]:
    """The released SuPreM file for ``backbone`` if the user has put it where training looks, else None."""
    from ..networks.weights import find_weights, released_weights

    return find_weights(released_weights(backbone).file_name)


def measure_training_step(s: DemoSettings, device: str = "cpu", repeats: int = 5) -> float:
    """Seconds of one training step of the demo network at the demo's patch and batch
    (:func:`suprem_nn.training.time_training_step`: the fastest of ``repeats`` after a warm-up step).

    The data pipeline and validation add to this; :func:`epochs_for_budget` allows for them.
    """
    from ..training import time_training_step

    return time_training_step(BACKBONE, 1, len(phantom.CLASS_NAMES) + 1, s.patch_size, s.batch_size, device,
                              repeats)


# Besides the measured steps an epoch pays for data loading, augmentation, validation patches and a
# checkpoint: measured 1.9x the bare step on a busy 2-core CPU (3.1 s per step against 1.66 s).
EPOCH_OVERHEAD = 1.9


def estimated_training_seconds(s: DemoSettings, step_seconds: float, epochs: int) -> float:
    """Estimated seconds of ``epochs`` demo epochs.

    Each epoch: ``iterations_per_epoch`` training steps plus a third of a step per validation iteration, all
    times :data:`EPOCH_OVERHEAD` for data loading, augmentation and checkpoints.

    Parameters
    ----------
    s : DemoSettings
        Iterations per epoch and validation iterations.
    step_seconds : float
        Seconds of one training step (:func:`measure_training_step`).
    epochs : int
        Number of epochs.
    """
    return epochs * step_seconds * (s.iterations_per_epoch + s.val_iterations / 3) * EPOCH_OVERHEAD


def epochs_for_budget(s: DemoSettings, step_seconds: float, minutes: float) -> int:
    """How many epochs of ``s.iterations_per_epoch`` steps fit ``minutes``, at least 1, at most ``s.max_epochs``.

    Parameters
    ----------
    s : DemoSettings
        Iterations per epoch, validation iterations and the epoch cap.
    step_seconds : float
        Seconds of one training step (:func:`measure_training_step`).
    minutes : float
        Training budget in minutes; epochs are costed by :func:`estimated_training_seconds`.
    """
    n = math.floor(minutes * 60.0 / max(estimated_training_seconds(s, step_seconds, 1), 1e-6))
    return int(min(s.max_epochs, max(1, n)))


def _step(number: int, title: Optional[str], command: Sequence[str], env: dict, echo) -> None:
    """Print ``command`` as a user would type it, then run the same CLI module in a subprocess."""
    if title:
        echo(f"\n[{number}/5] {title}")
    echo("      $ " + " ".join(shlex.quote(c) for c in command))
    module = "suprem_nn.cli." + command[0].replace("suprem_", "", 1)
    sys.stdout.flush()
    sys.stderr.flush()
    rc = subprocess.call([sys.executable, "-m", module, *command[1:]], env=env)
    if rc != 0:
        raise SupremError(f"step {number} ({command[0]}) failed with exit code {rc}; its message is above")


def _nums(values) -> list[str]:
    return [f"{v:g}" for v in values]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60)):02d} s"
