"""Find a dataset's preprocessed folder and its plans by name, id or path."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DatasetError, PlanError
from ..paths import dataset_folder, preprocessed_root
from .plans import Plan


def dataset_preprocessed_folder(dataset: str) -> Path:
    """The preprocessed folder of a dataset: ``<SUPREM_PREPROCESSED>/<dataset folder name>``.

    Parameters
    ----------
    dataset : str
        A dataset name, numeric id or raw dataset path.

    Returns
    -------
    Path
        The folder (it may not exist yet).

    Raises
    ------
    DatasetError
        A name with ``..`` that is not an existing path.
    """
    if "/" in dataset or "\\" in dataset:
        if ".." in Path(dataset).parts and not Path(dataset).exists():
            raise DatasetError("dataset names may not contain '..'", dataset)
        dataset = Path(dataset).name
    return dataset_folder(preprocessed_root(), dataset)


def list_plans(dataset: str) -> list[str]:
    """Names of the plans written for ``dataset``.

    Parameters
    ----------
    dataset : str
        A dataset name (or a path, whose folder name is used).

    Returns
    -------
    list of str
        The sub-folders of the dataset's preprocessed folder that hold a ``plans.json``, sorted; empty when
        nothing is planned.
    """
    folder = dataset_preprocessed_folder(dataset)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "plans.json").is_file())


def find_plan(dataset: str, plan_name: Optional[str] = None) -> tuple[Path, Plan]:
    """The plan of a dataset.

    Parameters
    ----------
    dataset : str
        A dataset name, numeric id or raw dataset path.
    plan_name : str, optional
        The plan (``suprem_unet`` ...); may be omitted when the dataset has one plan.

    Returns
    -------
    folder : Path
        The plan folder (``plans.json``, ``data/``).
    plan : Plan

    Raises
    ------
    PlanError or DatasetError
        Nothing planned, several plans and no ``plan_name``, no such plan, or not a dataset; each message says
        what to run.
    """
    folder = dataset_preprocessed_folder(dataset)
    plans = list_plans(dataset)
    if not plans:
        _raise_if_not_a_dataset(dataset)
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


def _raise_if_not_a_dataset(dataset: str) -> None:
    """When nothing is planned for ``dataset``, tell "this is not a dataset" apart from "plan it first".

    "run suprem_plan_and_preprocess first" is only good advice for something that is a raw dataset; for a
    file, a missing folder, a folder of other things or an unknown name it would send the user in circles.
    """
    from ..datasets import layouts
    from ..paths import raw_root

    usage = ("give a dataset name (Dataset101_Liver), its numeric id (101) or a raw dataset folder (nnU-Net "
             "layout with dataset.json, or AbdomenAtlas CASE/ct.nii.gz)")
    if "/" in dataset or "\\" in dataset:
        path = Path(dataset).expanduser()
        if not path.exists():
            raise DatasetError(f"not a dataset: no such file or folder; {usage}", path)
        if not path.is_dir():
            raise DatasetError(f"not a dataset: this is a file; {usage}", path)
        if not any(layout.is_dataset(path) for layout in layouts.LAYOUTS):
            raise DatasetError(f"not a dataset folder: it holds no dataset.json or imagesTr/ (nnU-Net) and no "
                               f"CASE/ct.nii.gz (AbdomenAtlas); {usage}", path)
        return
    raw, preprocessed = raw_root(), preprocessed_root()
    if dataset_folder(raw, dataset).is_dir() or dataset_folder(preprocessed, dataset).is_dir():
        return  # a raw dataset (or an unfinished cache) of that name: planning it is the way on
    planned = sorted(d.name for d in preprocessed.iterdir() if d.is_dir() and any(
        (q / "plans.json").is_file() for q in d.iterdir() if q.is_dir())) if preprocessed.is_dir() else []
    found = sorted(d.name for d in raw.iterdir() if d.is_dir() and not d.name.startswith(".")) \
        if raw.is_dir() else []
    raise DatasetError(f"no dataset '{dataset}': planned datasets under {preprocessed}: "
                       f"{_names(planned)}; raw datasets under {raw}: {_names(found)} (SUPREM_PREPROCESSED and "
                       f"SUPREM_RAW set these folders)")


def _names(names: list[str], limit: int = 20) -> str:
    """``a, b, c and 4 more`` (or ``none``) for an error message."""
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
