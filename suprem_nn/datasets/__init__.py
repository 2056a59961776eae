"""Raw datasets: find them, list their cases, read a case, verify everything up front.

Two layouts are read natively and detected automatically:

* nnU-Net v2 raw: ``dataset.json``, ``imagesTr/CASE_XXXX{ending}``, ``labelsTr/CASE{ending}``, ``imagesTs/``.
* AbdomenAtlas: ``CASE/ct.nii.gz`` + ``CASE/segmentations/<organ>.nii.gz`` (one binary mask per organ).

Typical use (the planner does this before any heavy work)::

    ds = load_dataset("RealCT")          # name, numeric id, folder name or path
    verify_dataset(ds, num_processes=4).raise_if_failed()
    images, geometry, label = read_case(ds.cases[0], ds)
"""
from .abdomenatlas import order_class_names
from .checks import grid_difference, nifti_file_problems
from .discovery import resolve_dataset_path
from .loading import load_dataset, read_case
from .model import ABDOMENATLAS_ORDER, LAYOUT_ABDOMENATLAS, LAYOUT_NNUNET, Case, Problem, RawDataset
from .nnunet import parse_dataset_json
from .verification import VerificationReport, verify_dataset

__all__ = ["Case", "RawDataset", "Problem", "VerificationReport", "resolve_dataset_path", "load_dataset",
           "read_case", "verify_dataset", "order_class_names", "parse_dataset_json", "grid_difference",
           "nifti_file_problems", "ABDOMENATLAS_ORDER", "LAYOUT_NNUNET", "LAYOUT_ABDOMENATLAS"]
