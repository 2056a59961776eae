"""Find a dataset's preprocessed folder and its plans by name, id or path."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DatasetError, PlanError
from ..paths import dataset_folder, preprocessed_root
from .plans import Plan


def dataset_preprocessed_folder(dataset: str) -> Path:
    """``<SUPREM_PREPROCESSED>/<dataset folder name>``; ``dataset`` may be a name, a numeric id or a raw path."""
    if "/" in dataset or "\\" in dataset:
        if ".." in Path(dataset).parts and not Path(dataset).exists():
            raise DatasetError("dataset names may not contain '..'", dataset)
        dataset = Path(dataset).name
    return dataset_folder(preprocessed_root(), dataset)


def list_plans(dataset: str) -> list[str]:
    folder = dataset_preprocessed_folder(dataset)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "plans.json").is_file())


def find_plan(dataset: str, plan_name: Optional[str] = None) -> tuple[Path, Plan]:
    """``(plan folder, plan)`` for ``dataset``; with one plan on disk ``plan_name`` may be omitted."""
    folder = dataset_preprocessed_folder(dataset)
    plans = list_plans(dataset)
    if not plans:
        raise PlanError(f"no plans for dataset '{dataset}'; run suprem_plan_and_preprocess -d {dataset} first",
                        folder)
    if plan_name is None:
        if len(plans) > 1:
            raise PlanError(f"dataset '{dataset}' has several plans ({', '.join(plans)}); choose one with --plan",
                            folder)
        plan_name = plans[0]
    if plan_name not in plans:
        raise PlanError(f"no plan '{plan_name}' for dataset '{dataset}' (found: {', '.join(plans)}); "
                        f"run suprem_plan_and_preprocess with the matching --pretrained/--network", folder)
    return folder / plan_name, Plan.load(folder / plan_name / "plans.json")
