"""The Trainer: one class, composed of small parts, readable top to bottom.

    setup -> for each epoch: train iterations, validation pseudo-Dice, checkpoint + logs -> final validation

Parts: :mod:`.data` (patches, augmentation, workers), :mod:`.losses`,
:mod:`.schedule` (optimiser + lr), :mod:`.checkpoint` (files and RNG state),
:mod:`.progress` (logs and plot), :mod:`.distributed` (DDP), :mod:`.validation`
(sliding-window validation of whole cases). Every knob is a
:class:`~.config.TrainingConfig` field; nothing is configured by subclassing.

Folder: ``<SUPREM_RESULTS>/<dataset>/<plan_name>/fold_<k>/``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import model_folder as mf
from ..errors import SupremError
from ..networks.backbones import BACKBONES
from ..networks.weights import resolve_pretrained_checkpoint
from ..paths import results_root
from ..utils.atomic import atomic_write_json, remove_stale_temporaries
from . import distributed as ddp
from .checkpoint import capture_rng_state, find_resume_checkpoint, restore_rng_state, unwrap
from .config import TrainingConfig
from .data import TRAIN, VAL, PatchSampler, epoch_loader, next_batch
from .losses import dice_counts, make_loss, pseudo_dice_per_class
from .precision import choose_training_precision
from .progress import RunLog
from .schedule import RECIPES, LRSchedule, make_optimizer
from .splits import cases_for_fold


def pick_device(name: str, local_rank: int) -> torch.device:
    """The torch device of this process.

    Parameters
    ----------
    name : str
        ``"auto"`` (CUDA if torch sees a GPU, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    local_rank : int
        This process's rank on its node, added to the CUDA index (``cuda:N`` -> GPU ``N + local_rank``).

    Returns
    -------
    torch.device

    Raises
    ------
    SupremError
        For an unknown name, CUDA without a CUDA GPU, or a GPU index this node does not have.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SupremError(f"--device {name}: this PyTorch build sees no CUDA GPU; use --device cpu")
        first = int(name.split(":")[1]) if ":" in name else 0
        index, visible = first + local_rank, torch.cuda.device_count()
        if index >= visible:
            # one process per GPU: LOCAL_RANK (not the global RANK) picks this node's GPU
            raise SupremError(f"--device {name} for local rank {local_rank} needs GPU {index}, but this node sees "
                              f"{visible}; run at most {max(visible - first, 0)} processes per node "
                              f"(torchrun --nproc-per-node)")
        return torch.device("cuda", index)
    if name != "cpu":
        raise SupremError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    return torch.device("cpu")


class Trainer:
    def __init__(self, dataset: str, fold, config: TrainingConfig, continue_training: bool = False,
                 dist: Optional[ddp.DistInfo] = None, echo: bool = True):
        self.dataset, self.fold, self.cfg = dataset, fold, config
        self.continue_training = continue_training
        self.dist = dist or ddp.DistInfo()
        self.echo = echo
        self.epoch = 0                # number of completed epochs
        self.ema_dice: Optional[float] = None
        self.best_ema: Optional[float] = None

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Prepare the run: plan, preprocessed cases, device and process group, fold split, fold folder, network
        (SuPreM initialisation or from scratch), loss, optimiser, schedule, precision and the patch samplers; resume
        from
        the last checkpoint with ``continue_training`` (or after a torchrun restart), else write the run's config.

        Raises
        ------
        SupremError
            If the plan has no preprocessed cases, the fold folder already has checkpoints without
            ``continue_training``,
            ``pretrained`` names another backbone than the plan's, or the ranks resumed different checkpoints.
        """
        from ..planning import find_plan
        from ..preprocessing.cache import PreprocessedCache

        cfg = self.cfg
        plan_name = cfg.plan_name or (f"suprem_{cfg.pretrained}" if cfg.pretrained else None)
        self.plan_folder, self.plan = find_plan(self.dataset, plan_name)
        plan = self.plan
        self.dataset_folder = self.plan_folder.parent
        self.cache = PreprocessedCache(self.plan_folder / "data")
        case_ids = self.cache.case_ids(plan.cache_hash())
        if not case_ids:
            raise SupremError("no preprocessed cases for this plan; run suprem_plan_and_preprocess first",
                              self.plan_folder / "data")
        self.device = pick_device(cfg.device, self.dist.local_rank)
        ddp.init_process_group(self.dist, self.device)
        # splits_final.json is written once, by rank 0, which hands the split to the other ranks (another node may
        # not see the file yet); an error there stops every rank with the same message
        self.train_cases, self.val_cases = ddp.on_main(
            lambda: cases_for_fold(self.dataset_folder, case_ids, self.fold))

        self.model_folder = results_root() / self.dataset_folder.name / plan.plan_name
        self.folder = mf.fold_folder(self.model_folder, self.fold)
        elastic_resume = not self.continue_training and ddp.is_elastic_restart()
        self.continue_training = ddp.on_main(self._prepare_folder)
        self.log = RunLog(self.folder if self.dist.is_main else None, echo=self.echo)
        if elastic_resume and self.continue_training:
            self.log.line("torchrun restarted the workers after a failure: continuing from the last checkpoint")

        self.pretrained = None
        if not cfg.from_scratch:
            # an explicit weights file (a released one or a suprem_export_backbone file) initialises any plan
            self.pretrained = cfg.pretrained or (plan.network if plan.pretrained or cfg.pretrained_checkpoint
                                                 else None)
        if self.pretrained and self.pretrained != plan.network:
            raise SupremError(f"--pretrained {self.pretrained} does not match plan '{plan.plan_name}', which is "
                              f"planned for the '{plan.network}' backbone; pass --plan suprem_{self.pretrained}")

        self._seed_everything(cfg.seed + self.dist.rank)
        self.network = self._build_network()
        self.loss_fn = make_loss(plan.multilabel)
        r = RECIPES[cfg.recipe]
        self.optimizer = make_optimizer(r["optimizer"], self.network.parameters(), cfg.lr, cfg.weight_decay)
        per_epoch = cfg.schedule_step == "epoch"
        steps = cfg.epochs if per_epoch else cfg.epochs * cfg.iterations_per_epoch
        warmup = cfg.warmup_epochs * (1 if per_epoch else cfg.iterations_per_epoch) \
            if r["schedule"] == "warmup_cosine" else 0
        self.schedule = LRSchedule(self.optimizer, r["schedule"], cfg.lr, steps, warmup)
        self.precision = choose_training_precision(self.cfg.mixed_precision, self.device)
        self.amp_dtype = self.precision.autocast
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.grad_scaler else None

        batch = cfg.batch_size or plan.batch_size
        common = dict(patch_size=plan.patch_size, batch_size=batch, seed=cfg.seed, rank=self.dist.rank,
                      world_size=self.dist.world_size, oversample_foreground=cfg.oversample_foreground,
                      mirror_axes=plan.mirror_axes)
        self.train_sampler = PatchSampler(self.cache, self.train_cases, augmentation=cfg.augmentation, **common)
        # Mirroring at test time only helps over axes the network saw mirrored in training; a model trained
        # without mirror augmentation predicts worse when its outputs are averaged with mirrored passes.
        aug = self.train_sampler.augmentation
        self.trained_mirror_axes = list(plan.mirror_axes) if aug is not None and aug.get("mirror", True) else []
        self.val_sampler = PatchSampler(self.cache, self.val_cases, augmentation=None, **common)

        if self.continue_training:
            ddp.on_every_rank(self._resume)   # a rank that cannot resume stops them all with its reason
            self._check_same_start()
        else:
            self.log.line(self._describe())
            if self.dist.is_main:
                self._write_run_files()
        self.train_model = self._wrap(self._frozen_now())

    def _prepare_folder(self) -> bool:
        """Rank 0: create the fold folder; returns whether this run resumes. Refuses to overwrite a run."""
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)
        has_checkpoint = find_resume_checkpoint(self.folder) is not None
        if has_checkpoint and not self.continue_training and ddp.is_elastic_restart():
            return True   # torchrun --max-restarts reran the same command after a rank died
        if has_checkpoint and not self.continue_training:
            raise SupremError("this fold already has checkpoints; add --continue to resume it, or delete the "
                              "folder to start over", self.folder)
        return self.continue_training

    def _check_same_start(self) -> None:
        """Every rank must have resumed the same epoch and weights (one results folder seen by all nodes)."""
        starts = ddp.all_gather_objects((self.epoch, round(weights_checksum(self.network), 6)))
        if len(set(starts)) > 1:
            raise SupremError(f"the ranks resumed from different checkpoints ((epoch, weights checksum) per rank: "
                              f"{starts}); every node must see the same results folder, e.g. on a shared file "
                              f"system", self.folder)

    def _describe(self) -> str:
        cfg, plan = self.cfg, self.plan
        return "\n".join([
            f"suprem_train {self.dataset} fold {self.fold}: plan '{plan.plan_name}' ({plan.network}, patch "
            f"{plan.patch_size}, {'multi-label sigmoid, Dice + BCE' if plan.multilabel else 'softmax, Dice + CE'}, "
            f"{plan.num_outputs} outputs)",
            f"  cases: {len(self.train_cases)} training, {len(self.val_cases)} validation; device {self.device}, "
            f"{self.dist.world_size} process(es), batch {cfg.batch_size or plan.batch_size} per process, "
            f"precision {self.precision.describe()}",
            f"  recipe {cfg.recipe}: lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, {cfg.epochs} epochs x "
            f"{cfg.iterations_per_epoch} iterations, schedule stepped per {cfg.schedule_step}",
            f"  initialisation: {'SuPreM ' + self.pretrained if self.pretrained else 'from scratch (random)'}",
            f"  output folder: {self.folder}"])

    def _write_run_files(self) -> None:
        record = {"dataset": self.dataset, "fold": self.fold, "plan_folder": str(self.plan_folder),
                  "world_size": self.dist.world_size, **self.cfg.to_json(),
                  # what the fold was trained on, kept with the model (suprem_export_backbone records it)
                  "train_cases": list(self.train_cases), "val_cases": list(self.val_cases)}
        atomic_write_json(self.folder / mf.FOLD_CONFIG, record)
        # folds trained at once (--parallel-folds) share this file: a per-process temporary name, not a fixed one
        mf.write_plan_copy(self.model_folder, (self.plan_folder / "plans.json").read_bytes())
        if self.load_report is not None:
            self.log.line(str(self.load_report))
            if self.conventions_warning:
                self.log.line(f"warning: {self.conventions_warning}")

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)

    def _build_network(self) -> torch.nn.Module:
        from ..networks import init_from_pretrained
        plan = self.plan
        # identical initial weights on every rank: seed the head's init independently of the rank
        torch.manual_seed(self.cfg.seed)
        net = mf.build_planned_network(plan, self.plan_folder / "plans.json")
        torch.manual_seed(self.cfg.seed + self.dist.rank)
        self.load_report = None
        self.conventions_warning = None
        if self.pretrained and not self.continue_training:
            path = resolve_pretrained_checkpoint(plan, self.cfg.pretrained_checkpoint)
            try:
                self.load_report = init_from_pretrained(net, plan.network, path,
                                                        allow_unsafe=self.cfg.allow_unsafe_checkpoint)
            except SupremError:
                raise
            except Exception as exc:  # the loader's CheckpointError names the file and the problem
                raise SupremError(str(exc)) from None
            # an exported backbone records the conventions it learnt at; a released file has no record
            from ..networks.export_record import conventions_mismatch
            self.conventions_warning = conventions_mismatch(
                path, plan.target_spacing, [dataclasses.asdict(n) for n in plan.normalization])
        return net.to(self.device)

    def _frozen_now(self) -> bool:
        return bool(self.pretrained) and self.epoch < self.cfg.freeze_encoder_epochs

    def _wrap(self, freeze: bool) -> torch.nn.Module:
        """Set encoder requires_grad and (re)build the DDP / compile wrapper around the network."""
        prefixes = BACKBONES[self.plan.network].encoder_prefixes
        for name, p in self.network.named_parameters():
            p.requires_grad_(not (freeze and name.startswith(prefixes)))
        model = self.network
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    # --------------------------------------------------------------------------------------------- training
    def run(self) -> dict:
        """Train the remaining epochs, save the final checkpoint and validate; returns the last epoch record."""
        cfg = self.cfg
        record = self.log.history[-1] if self.log.history else {}
        while self.epoch < cfg.epochs:
            frozen = self._frozen_now()
            if self.epoch == cfg.freeze_encoder_epochs and cfg.freeze_encoder_epochs and self.pretrained:
                self.log.line(f"epoch {self.epoch}: encoder unfrozen")
            if any(p.requires_grad is frozen for n, p in self.network.named_parameters()
                   if n.startswith(BACKBONES[self.plan.network].encoder_prefixes)):
                self.train_model = self._wrap(frozen)
            t0 = time.perf_counter()
            train_loss, data_wait = self._train_epoch()
            val_loss, dices = self._validate_epoch()
            record = self._end_epoch(train_loss, val_loss, dices, time.perf_counter() - t0, data_wait)
        self.ddp_weight_checksums = ddp.all_gather_floats([weights_checksum(self.network)])
        rng_states = ddp.all_gather_objects(capture_rng_state())
        if self.dist.is_main:
            same = len({c[0] for c in self.ddp_weight_checksums}) == 1
            if self.dist.enabled:
                self.log.line(f"weights after training identical on all {self.dist.world_size} ranks: {same} "
                              f"(checksums {[c[0] for c in self.ddp_weight_checksums]})")
            payload = self._payload(rng_states, final=True)
            payload["ddp_weight_checksums"] = [c[0] for c in self.ddp_weight_checksums]
            mf.write_checkpoint(self.folder / mf.FINAL_CHECKPOINT, payload)
        ddp.barrier()
        if cfg.final_validation:
            from .validation import validate_fold
            summary = validate_fold(self)   # every rank predicts its share of the cases; rank 0 writes the summary
            record = {**record, "final_validation_mean_dice": summary.get("mean_dice")}
        return record

    def _train_epoch(self) -> tuple[float, float]:
        cfg = self.cfg
        self.train_model.train()
        losses, waited = [], 0.0
        it = epoch_loader(self.train_sampler, self.epoch, cfg.iterations_per_epoch, TRAIN, cfg.num_workers,
                          pin_memory=self.device.type == "cuda")
        bar = _progress_bar(cfg.iterations_per_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}",
                            self.dist.is_main and self.echo)
        for _ in range(cfg.iterations_per_epoch):
            t = time.perf_counter()
            batch = next_batch(it)
            waited += time.perf_counter() - t
            losses.append(self._train_step(batch))
            if cfg.schedule_step == "iteration":
                self.schedule.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if bar is not None:
            bar.close()
        if cfg.schedule_step == "epoch":
            self.schedule.step()
        mean = ddp.all_reduce_sum(torch.tensor([float(np.mean(losses)), 1.0], dtype=torch.float64))
        return float(mean[0] / mean[1]), waited

    def _train_step(self, batch: dict) -> float:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.train_model(data)
            loss = self.loss_fn(logits, target)
        if not torch.isfinite(loss):
            raise SupremError(f"the training loss became {loss.item()} at epoch {self.epoch}; lower --lr or check "
                              f"the preprocessed data")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
        return float(loss.detach())

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @torch.no_grad()
    def _validate_epoch(self) -> tuple[float, list[float]]:
        """Loss and global pseudo-Dice per class over ``val_iterations`` validation patches (all ranks)."""
        n = self.cfg.val_iterations
        k = len(self.plan.class_names)
        if n == 0:
            return float("nan"), [float("nan")] * k
        self.network.eval()
        counts = torch.zeros(3, k, dtype=torch.float64)
        loss_sum = torch.zeros(2, dtype=torch.float64)
        it = epoch_loader(self.val_sampler, self.epoch, n, VAL, self.cfg.num_workers)
        for _ in range(n):
            batch = next_batch(it)
            data, target = batch["data"].to(self.device), batch["target"].to(self.device)
            with self._autocast():
                logits = self.network(data)
            loss_sum += torch.tensor([float(self.loss_fn(logits, target)), 1.0], dtype=torch.float64)
            counts += dice_counts(logits.float(), target, self.plan.multilabel).cpu()
        ddp.all_reduce_sum(counts)
        ddp.all_reduce_sum(loss_sum)
        return float(loss_sum[0] / loss_sum[1]), pseudo_dice_per_class(counts)

    def _end_epoch(self, train_loss: float, val_loss: float, dices: list[float], seconds: float,
                   data_wait: float) -> dict:
        present = [d for d in dices if d == d]
        mean_dice = float(np.mean(present)) if present else float("nan")
        if mean_dice == mean_dice:
            decay = self.cfg.ema_dice_decay
            self.ema_dice = mean_dice if self.ema_dice is None else decay * self.ema_dice + (1 - decay) * mean_dice
        self.epoch += 1
        record = {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": mean_dice,
                  "ema_dice": self.ema_dice, "dice_per_class": dict(zip(self.plan.class_names, dices)),
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                  "data_wait_seconds": round(data_wait, 3)}
        is_best = self.ema_dice is not None and (self.best_ema is None or self.ema_dice > self.best_ema)
        if is_best:
            self.best_ema = self.ema_dice
        # every rank's generators, so that --continue resumes each rank where it stopped
        rng_states = ddp.all_gather_objects(capture_rng_state())
        if self.dist.is_main:
            self.log.epoch(record)
            self.log.line(f"epoch {self.epoch}/{self.cfg.epochs}: train loss {train_loss:.4f}, val loss "
                          f"{val_loss:.4f}, pseudo-Dice {mean_dice:.4f} (EMA {_fmt(self.ema_dice)}), lr "
                          f"{record['lr']:.3g}, {seconds:.1f} s ({data_wait:.1f} s waiting for data)"
                          + (" -> new best" if is_best else ""))
            payload = self._payload(rng_states)
            mf.write_checkpoint(self.folder / mf.LATEST_CHECKPOINT, payload)
            if is_best:
                mf.write_checkpoint(self.folder / mf.BEST_CHECKPOINT, payload)
        ddp.barrier()
        return record

    # ------------------------------------------------------------------------------------------ checkpoints
    def _payload(self, rng_states: list, final: bool = False) -> dict:
        """The checkpoint dict; ``rng_states``: every rank's :func:`capture_rng_state`, in rank order."""
        return mf.checkpoint_record(
            unwrap(self.network).state_dict(), self.plan, self.dataset, self.fold, self.epoch, final,
            self.trained_mirror_axes, training_state={
                "optimizer_state": self.optimizer.state_dict(), "schedule_state": self.schedule.state_dict(),
                "grad_scaler_state": self.scaler.state_dict() if self.scaler is not None else {},
                "rng_state": rng_states[0], "rng_state_per_rank": rng_states, "history": self.log.history,
                "ema_dice": self.ema_dice, "best_ema": self.best_ema, "config": json.dumps(self.cfg.to_json())})

    def _resume(self) -> None:
        path = find_resume_checkpoint(self.folder)
        if path is None:
            raise SupremError(f"--continue: no checkpoint to continue from ({mf.LATEST_CHECKPOINT} / "
                              f"{mf.FINAL_CHECKPOINT}); start without --continue", self.folder)
        ck = mf.read_checkpoint(path, SupremError)
        if ck.get("network") != self.plan.network or ck.get("num_outputs") != self.plan.num_outputs:
            raise SupremError(f"checkpoint is for a {ck.get('network')} with {ck.get('num_outputs')} outputs, the "
                              f"plan builds a {self.plan.network} with {self.plan.num_outputs}", path)
        self.network.load_state_dict(ck[mf.WEIGHTS_KEY])
        self.optimizer.load_state_dict(ck["optimizer_state"])
        self.schedule.load_state_dict(ck["schedule_state"])
        if self.scaler is not None and ck.get("grad_scaler_state"):
            self.scaler.load_state_dict(ck["grad_scaler_state"])
        per_rank = ck.get("rng_state_per_rank") or []
        # the same number of ranks continues each rank's own generators; otherwise all start from rank 0's
        restore_rng_state(per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else ck["rng_state"])
        self.epoch = int(ck["epoch"])
        self.ema_dice, self.best_ema = ck.get("ema_dice"), ck.get("best_ema")
        self.log.restore(ck.get("history", []))
        if self.dist.is_main:
            self.log.line(f"--continue: resumed from {path.name} after epoch {self.epoch} of {self.cfg.epochs}")
            if self.epoch < self.cfg.epochs and self.cfg.epochs != json.loads(ck["config"])["epochs"]:
                self.log.line(f"  epochs changed from {json.loads(ck['config'])['epochs']} to {self.cfg.epochs}")
            self._write_run_files()


def weights_checksum(model: torch.nn.Module) -> float:
    """A number that differs when any weight differs (sum of |w| * a fixed per-tensor factor)."""
    total = 0.0
    for i, (name, t) in enumerate(sorted(unwrap(model).state_dict().items())):
        if t.is_floating_point():
            factor = int(hashlib.md5(name.encode()).hexdigest()[:6], 16) / 2 ** 24 + 0.5
            total += float(t.detach().double().abs().sum()) * factor
    return total


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _progress_bar(total: int, desc: str, enabled: bool):
    """The steps of one epoch: a transient bar on a terminal; in a log file a line only when an epoch runs longer
    than 30 s (each epoch already ends with its own summary line)."""
    if not enabled:
        return None
    from ..utils.progress import Progress
    return Progress(total, desc, "step", nested=True)
