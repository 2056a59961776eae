"""``<results>/<dataset>/inference_instructions.json``: what ``suprem_find_best_configuration`` chose, read by
``suprem_predict -d DATASET`` (without ``-p``).

The file (format version 1) holds, at the top level::

    {"format_version": 1, "dataset": "Dataset102_X", "activation": "softmax",
     "members": [{"plan": "tiny_segresnet", "folds": [0, 1, 2, 3, 4]}, ...],   # one member: a single configuration
     "postprocessing": {"largest_component": ["liver", ...]},                 # classes that keep one component
     "class_names": [...], "label_values": [...],
     "cross_validation": {...}}                                               # the numbers behind the choice

Only the first block is needed to predict; ``cross_validation`` is for people (see
documentation/choosing_a_configuration.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import SupremError
from ..paths import dataset_folder, results_root
from ..utils.json_file import read_json

INSTRUCTIONS_FILE = "inference_instructions.json"
FORMAT_VERSION = 1


@dataclass
class Member:
    plan: str
    folds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])


@dataclass
class InferenceInstructions:
    dataset: str
    members: list[Member]
    activation: str
    class_names: list[str]
    label_values: list[int]
    largest_component: list[str] = field(default_factory=list)
    cv_dice: Optional[float] = None   # foreground-mean CV Dice of the chosen configuration after post-processing
    path: Optional[Path] = None

    @property
    def name(self) -> str:
        """The member plans joined by ``" + "`` (one plan, or an ensemble)."""
        return " + ".join(m.plan for m in self.members)

    def describe(self) -> str:
        """One line for users: what is used and how well it did in cross-validation."""
        kind = "ensemble of " if len(self.members) > 1 else "configuration "
        members = " + ".join(f"{m.plan} (folds {','.join(map(str, m.folds))})" for m in self.members)
        pp = ", ".join(self.largest_component) if self.largest_component else "none"
        cv = f", CV Dice {self.cv_dice:.4f}" if self.cv_dice is not None else ""
        return f"{kind}{members}; largest component kept for: {pp}{cv} (from {self.path})"

    def to_json(self) -> dict:
        """The ``inference_instructions.json`` content (format version included; ``cv_dice`` and ``path`` are not
        written).
        """
        return {"format_version": FORMAT_VERSION, "dataset": self.dataset, "activation": self.activation,
                "members": [{"plan": m.plan, "folds": list(m.folds)} for m in self.members],
                "postprocessing": {"largest_component": list(self.largest_component)},
                "class_names": list(self.class_names), "label_values": list(self.label_values)}


def instructions_path(dataset: str) -> Path:
    """``<results>/<dataset folder>/inference_instructions.json`` of ``dataset`` (a name or id; the file need not
    exist).
    """
    return dataset_folder(results_root(), dataset) / INSTRUCTIONS_FILE


def find_instructions(dataset: str) -> Optional[InferenceInstructions]:
    """The dataset's instructions, or None when ``suprem_find_best_configuration`` has not written any."""
    path = instructions_path(dataset)
    return read_instructions(path) if path.is_file() else None


def read_instructions(path: str | Path) -> InferenceInstructions:
    """Parse and check an instructions file; every problem is one :class:`SupremError` naming the file.

    Parameters
    ----------
    path : str or Path
        An ``inference_instructions.json`` written by ``suprem_find_best_configuration``.

    Returns
    -------
    InferenceInstructions
        With ``path`` set and ``cv_dice`` from the file's cross-validation record (None when absent).

    Raises
    ------
    SupremError
        If the file is missing or not JSON, has another format version, misses or mistypes an entry, names no
        member or a member without folds, has an unknown activation, or post-processes a class it does not list.
    """
    path = Path(path)
    hint = "; run suprem_find_best_configuration again"
    d = read_json(path, hint=hint)
    if not isinstance(d, dict) or d.get("format_version") != FORMAT_VERSION:
        raise SupremError(f"not an inference_instructions.json of format version {FORMAT_VERSION}{hint}", path)
    try:
        members = [Member(str(m["plan"]), list(m["folds"])) for m in d["members"]]
        lcc = [str(c) for c in d.get("postprocessing", {}).get("largest_component", [])]
        out = InferenceInstructions(str(d["dataset"]), members, str(d["activation"]), list(d["class_names"]),
                                    [int(v) for v in d["label_values"]], lcc, path=path)
        cv = d.get("cross_validation", {}).get("chosen", {}).get("mean_dice_after_postprocessing")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SupremError(f"malformed instructions ({type(exc).__name__}: {exc}){hint}", path) from None
    if not members or any(not m.folds for m in members):
        raise SupremError(f"the instructions name no members or a member without folds{hint}", path)
    if out.activation not in ("softmax", "sigmoid"):
        raise SupremError(f"unknown activation {out.activation!r}{hint}", path)
    unknown = [c for c in lcc if c not in out.class_names]
    if unknown:
        raise SupremError(f"post-processing names classes {unknown} that are not among class_names{hint}", path)
    out.cv_dice = float(cv) if isinstance(cv, (int, float)) else None
    return out
