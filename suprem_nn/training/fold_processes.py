"""Several cross-validation folds at once, each a ``suprem_train DATASET K`` subprocess with its own log.

nnU-Net's maintainers advise one fold per GPU rather than data-parallel training of one fold: these 3D networks
scale poorly over GPUs, while folds are independent. Each fold process sees only its GPU group through
``CUDA_VISIBLE_DEVICES`` (``num_gpus`` GPUs per fold, round-robin when there are more parallel folds than
groups). On the CPU the cores are split between the processes (``OMP_NUM_THREADS``), which is what makes the
parallel path testable without GPUs.

Every fold writes ``fold_<k>/console.log`` (its full output, appended per attempt) next to its
``training_log.txt``; its settings, resolved once by the parent, are passed as ``fold_<k>/cv_settings.json``.
"""
from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional, Sequence

from ..errors import SupremError
from ..model_folder import fold_folder
from ..utils.atomic import atomic_write_json
from .config import TrainingConfig

CONSOLE_LOG, SETTINGS_FILE = "console.log", "cv_settings.json"


def uses_cuda(cfg: TrainingConfig) -> bool:
    """Whether ``cfg.device`` trains on CUDA: ``"cuda..."``, or ``"auto"`` when torch sees a CUDA GPU."""
    import torch
    return cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())


def visible_gpus() -> list[str]:
    """GPU ids this process may use, as CUDA_VISIBLE_DEVICES names them (so children get the same physical GPUs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_groups(gpus: Sequence[str], gpus_per_fold: int) -> list[list[str]]:
    """Disjoint groups of ``gpus_per_fold`` GPUs, one per fold running at once (leftover GPUs stay idle).

    Parameters
    ----------
    gpus : sequence of str
        GPU ids as ``CUDA_VISIBLE_DEVICES`` names them.
    gpus_per_fold : int
        GPUs each fold trains on (values below 1 count as 1).
    """
    n = len(gpus) // max(1, gpus_per_fold)
    return [list(gpus[i * gpus_per_fold:(i + 1) * gpus_per_fold]) for i in range(n)]


def default_parallel_folds(cfg: TrainingConfig) -> int:
    """One fold per GPU group when training on CUDA with more than one group, else 1 (folds in turn)."""
    from .distributed import from_environment
    if from_environment() is not None:  # under torchrun the ranks train each fold together, in turn
        return 1
    if not uses_cuda(cfg) or cfg.device not in ("auto", "cuda"):
        return 1
    return max(1, len(gpu_groups(visible_gpus(), cfg.num_gpus)))


def slot_environments(cfg: TrainingConfig, n_parallel: int) -> list[dict]:
    """Environment overrides for each of the ``n_parallel`` process slots.

    Parameters
    ----------
    cfg : TrainingConfig
        Its ``device`` and ``num_gpus`` (GPUs per fold).
    n_parallel : int
        Folds trained at once.

    Returns
    -------
    list of dict
        On CUDA, ``CUDA_VISIBLE_DEVICES`` of one GPU group per slot (groups reused round-robin when there are more
        slots than groups). On the CPU, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` splitting the cores between the
        slots, or empty dicts when ``OMP_NUM_THREADS`` is already set.

    Raises
    ------
    SupremError
        Under torchrun, with a device pinned to one GPU (``cuda:N``), or with fewer visible GPUs than ``num_gpus``.
    """
    from .distributed import from_environment
    if from_environment() is not None:
        raise SupremError("under torchrun every rank trains the same fold; cross-validation folds then run in turn "
                          "(drop --parallel-folds), or start suprem_train DATASET cv without torchrun")
    if uses_cuda(cfg):
        if cfg.device not in ("auto", "cuda"):
            raise SupremError(f"--device {cfg.device} pins every fold to one GPU; with parallel folds use --device "
                              f"cuda and each fold gets its own GPU(s)")
        gpus = visible_gpus()
        groups = gpu_groups(gpus, cfg.num_gpus)
        if not groups:
            raise SupremError(f"each fold needs {cfg.num_gpus} GPU(s) (--num-gpus) but {len(gpus)} are visible")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(groups[s % len(groups)])} for s in range(n_parallel)]
    if os.environ.get("OMP_NUM_THREADS"):  # the user chose the threads per process already
        return [{} for _ in range(n_parallel)]
    # N processes each using every core only fight over them
    threads = str(max(1, (os.cpu_count() or 1) // n_parallel))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(n_parallel)]


@dataclass
class FoldRun:
    """How one fold process ended."""

    fold: int
    resumed: bool                  # started with --continue
    returncode: int
    seconds: float                 # wall time of the process
    log: Path                      # its console log
    error: Optional[str] = None    # its last error line when returncode != 0


@dataclass
class _Running:
    fold: int
    proc: subprocess.Popen
    log: Path
    log_file: IO
    started: float
    resumed: bool
    last_progress: str = ""


def run_folds_in_processes(dataset: str, jobs: Sequence[tuple[int, bool]], model_folder: Path, settings: dict,
                           n_parallel: int, cfg: TrainingConfig, echo: bool,
                           progress_interval_s: float = 60.0) -> list[FoldRun]:
    """Run ``jobs`` (fold, continue it?) as subprocesses, ``n_parallel`` at a time, in the order given.

    ``settings``: the resolved TrainingConfig fields every fold is trained with. A fold that fails is reported
    with its console log and the remaining folds still run. Ctrl-C (or any error here) stops every fold process
    this call started; their checkpoints let the next run continue them. Every ``progress_interval_s`` seconds
    the latest epoch line of each running fold is printed (when it changed).
    """
    envs = slot_environments(cfg, n_parallel)
    pending, running, finished = list(jobs), {}, []
    free = list(range(n_parallel))
    last_report = time.monotonic()
    try:
        while pending or running:
            while pending and free:
                slot, (k, resume) = free.pop(0), pending.pop(0)
                running[slot] = _start(dataset, k, fold_folder(model_folder, k), settings, envs[slot], resume, echo)
            time.sleep(0.2)
            for slot, r in list(running.items()):
                rc = r.proc.poll()
                if rc is None:
                    continue
                r.log_file.close()
                del running[slot]
                free.append(slot)
                run = FoldRun(r.fold, r.resumed, rc, time.monotonic() - r.started, r.log)
                if rc != 0:
                    run.error = f"exit code {rc}: {_last_error(r.log)}"
                    _say(echo, f"fold {r.fold}: FAILED after {run.seconds:.0f} s: {run.error} (log: {r.log})")
                else:
                    _say(echo, f"fold {r.fold}: process finished in {run.seconds:.0f} s")
                finished.append(run)
            if running and time.monotonic() - last_report >= progress_interval_s:
                last_report = time.monotonic()
                for r in running.values():
                    line = _last_line(r.log, "epoch ")
                    if line and line != r.last_progress:
                        r.last_progress = line
                        _say(echo, f"fold {r.fold}: {line}")
    except BaseException:
        _stop(running.values())
        raise
    return finished


def _start(dataset: str, k: int, folder: Path, settings: dict, env_extra: dict, resume: bool, echo: bool) -> _Running:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SETTINGS_FILE, settings)
    cmd = [sys.executable, "-m", "suprem_nn.cli.train", dataset, str(k), "--config", str(folder / SETTINGS_FILE)]
    if resume:
        cmd.append("--continue")
    env = {**os.environ, **env_extra}
    # the child must import this very suprem_nn, also from a source checkout that is not installed
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    log = folder / CONSOLE_LOG
    log_file = open(log, "a", encoding="utf-8")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    where = ", ".join(f"{k}={v}" for k, v in env_extra.items())
    log_file.write(f"=== {stamp} {' '.join(cmd)}{f' ({where})' if where else ''}\n")
    log_file.flush()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    _say(echo, f"fold {k}: {'continuing' if resume else 'started'} in process {proc.pid}"
               f"{f' ({where})' if where else ''}; log: {log}")
    return _Running(k, proc, log, log_file, time.monotonic(), resume)


def _stop(running) -> None:
    """Terminate the fold processes this call started, then kill those that do not end within 30 s."""
    running = list(running)
    for r in running:
        if r.proc.poll() is None:
            r.proc.terminate()
    deadline = time.monotonic() + 30
    for r in running:
        try:
            r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        r.log_file.close()


def _tail(path: Path, n_bytes: int = 8192) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - n_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    # progress bars rewrite one line with carriage returns: keep what the line finally showed
    return [ln.split("\r")[-1].strip() for ln in text.splitlines() if ln.split("\r")[-1].strip()]


def _last_line(path: Path, prefix: str) -> Optional[str]:
    lines = [ln for ln in _tail(path) if ln.startswith(prefix)]
    return lines[-1] if lines else None


def _last_error(path: Path) -> str:
    """The child's one-line ``suprem_train: error: ...`` message, else the last line of its output."""
    lines = _tail(path)
    errors = [ln for ln in lines if ": error:" in ln or "Error" in ln]
    return (errors or lines or ["no output"])[-1]


def _say(echo: bool, text: str) -> None:
    if echo:
        print(text, file=sys.stderr, flush=True)
