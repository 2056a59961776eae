"""What to plan for a dataset: which planner, multi-label or exclusive training, and the plan itself.

The planners of :mod:`.planner` turn a fingerprint into a :class:`Plan`; :class:`PlanChoice` holds the
decisions taken before the fingerprint exists (backbone preset, planner, multi-label), so that the run in
:mod:`suprem_nn.preprocessing.api` only asks for a draft plan and, once every case is fingerprinted, the plan.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..datasets import RawDataset, layout_of
from ..errors import DatasetError, PlanError
from .planner import plan_from_scratch, plan_pretrained, plan_scratch_at_conventions
from .plans import Plan
from .presets import load_preset

CONVENTIONS = ("nnunet", "suprem")


@dataclass(frozen=True)
class PlanChoice:
    """The planning decisions that come before the fingerprint.

    ``preset`` is the SuPreM backbone preset whose input conventions the plan follows (None: nnU-Net's rules
    from the fingerprint); ``planner`` is :func:`plan_pretrained` or :func:`plan_scratch_at_conventions` for a
    preset (they take the same arguments and differ in initialisation and recipe).
    """

    network: str
    preset: Optional[dict]
    planner: Optional[Callable[..., Plan]]
    multilabel: bool

    def draft_plan(self, dataset: RawDataset, target_spacing: Optional[Sequence[float]] = None) -> Optional[Plan]:
        """The plan's cache-shaping part, when it needs no dataset statistics.

        A preset fixes orientation, spacing and intensity window for CT, so the cache can be written in the same
        pass that fingerprints the cases.

        Parameters
        ----------
        dataset : RawDataset
            The dataset to plan.
        target_spacing : sequence of 3 float, optional
            Overridden target spacing in mm, per array axis ``(i, j, k)``.

        Returns
        -------
        Plan or None
            A plan whose :meth:`Plan.cache_hash` equals the final plan's; None without a preset or when channel 0
            is not CT (its normalisation then needs statistics).
        """
        if not self.preset or dataset.channel_names[0].lower() != "ct":
            return None
        stub = {"dataset_name": dataset.name, "channel_names": list(dataset.channel_names),
                "class_names": list(dataset.class_names), "label_values": list(dataset.label_values),
                "num_cases": len(dataset.cases), "median_spacing": [1.0, 1.0, 1.0],
                "median_shape_after_crop_body": [96.0, 96.0, 96.0]}
        return self.planner(stub, self.preset, self.multilabel, target_spacing=target_spacing,
                            patch_size=[self.preset["divisibility"]] * 3, batch_size=2)

    def plan(self, fingerprint: dict, gpu_memory_gb: float = 8.0, target_spacing: Optional[Sequence[float]] = None,
             patch_size: Optional[Sequence[int]] = None, batch_size: Optional[int] = None) -> Plan:
        """The plan from the dataset fingerprint.

        Parameters
        ----------
        fingerprint : dict
            The dataset fingerprint (:func:`suprem_nn.planning.fingerprint.summarise`).
        gpu_memory_gb : float
            Memory budget for patch and batch size, in GB.
        target_spacing : sequence of 3 float, optional
            Overridden target spacing in mm, per array axis ``(i, j, k)``.
        patch_size : sequence of 3 int, optional
            Overridden patch size in voxels, per array axis ``(i, j, k)``.
        batch_size : int, optional
            Overridden batch size.

        Returns
        -------
        Plan
        """
        if self.preset:
            return self.planner(fingerprint, self.preset, self.multilabel, gpu_memory_gb, target_spacing,
                                patch_size, batch_size)
        return plan_from_scratch(fingerprint, self.network, self.multilabel, gpu_memory_gb, target_spacing,
                                 patch_size, batch_size)


def choose_plan(dataset: RawDataset, pretrained: Optional[str] = "unet", network: Optional[str] = None,
                conventions: str = "nnunet", multilabel: Optional[bool] = None) -> PlanChoice:
    """Decide the planner, preset and training mode for ``dataset``.

    Parameters
    ----------
    dataset : RawDataset
        The dataset to plan.
    pretrained : str, optional
        A SuPreM backbone preset name; None plans ``network`` from scratch.
    network : str, optional
        The network planned from scratch (default ``"unet"``).
    conventions : str
        From scratch: ``"nnunet"`` (nnU-Net's rules) or ``"suprem"`` (the preset's input conventions).
    multilabel : bool, optional
        None chooses by layout (:func:`decide_multilabel`).

    Returns
    -------
    PlanChoice

    Raises
    ------
    PlanError
        Unknown conventions, conventions given with a pretrained preset, or a ``pretrained`` backbone without
        released SuPreM weights.
    DatasetError
        Multi-label training asked for a dataset of label maps.
    """
    check_conventions(pretrained, conventions)
    net = network or "unet"
    preset = load_preset(pretrained or net, need_weights=bool(pretrained)) if pretrained or conventions == "suprem" \
        else None
    planner = (plan_pretrained if pretrained else plan_scratch_at_conventions) if preset else None
    return PlanChoice(preset["network"] if preset else net, preset, planner, decide_multilabel(dataset, multilabel))


def check_conventions(pretrained: Optional[str], conventions: str) -> None:
    """Refuse conventions that do not apply.

    Parameters
    ----------
    pretrained : str, optional
        A SuPreM backbone preset name, or None for a from-scratch plan.
    conventions : str
        ``"nnunet"`` or ``"suprem"``.

    Raises
    ------
    PlanError
        Unknown conventions, or ``"suprem"`` with a pretrained preset (that plan always follows the preset).
    """
    if conventions not in CONVENTIONS:
        raise PlanError(f"unknown conventions '{conventions}'; choose 'nnunet' or 'suprem'")
    if pretrained and conventions != "nnunet":
        raise PlanError("conventions apply to from-scratch plans; a pretrained plan always follows its SuPreM "
                        "preset's input conventions")


def decide_multilabel(dataset: RawDataset, requested: Optional[bool]) -> bool:
    """Multi-label (one sigmoid per class) or exclusive (softmax) training.

    Per-class masks (AbdomenAtlas) train multi-label, as SuPreM pretrains, unless asked otherwise; label maps are
    exclusive.

    Parameters
    ----------
    dataset : RawDataset
        The dataset; its layout says whether annotations are per-class masks.
    requested : bool, optional
        The user's choice; None takes the layout's default.

    Returns
    -------
    bool
        True for multi-label training.

    Raises
    ------
    DatasetError
        Multi-label training asked for a dataset of label maps.
    """
    if not layout_of(dataset).multilabel_masks:
        if requested:
            raise DatasetError("multi-label training needs one mask per class (AbdomenAtlas layout); an nnU-Net "
                               "label map holds one class per voxel", dataset.path)
        return False
    return True if requested is None else requested


def check_multilabel(dataset: RawDataset, fingerprint: dict, multilabel: bool) -> None:
    """Refuse exclusive training when masks overlap (voxels would be lost).

    Parameters
    ----------
    dataset : RawDataset
        The dataset (named in the error).
    fingerprint : dict
        The dataset fingerprint with its ``overlap`` entry.
    multilabel : bool
        The training mode.

    Raises
    ------
    DatasetError
        Masks overlap and ``multilabel`` is False; names the first overlapping class pairs.
    """
    ov = fingerprint["overlap"]
    if ov["detected"] and not multilabel:
        pairs = ", ".join(f"{a}/{b} ({n} voxels)" for a, b, n in ov["pairs"][:5])
        raise DatasetError(f"masks overlap ({pairs}); exclusive (softmax) training would lose voxels. "
                           "Drop --exclusive to train multi-label", dataset.path)
