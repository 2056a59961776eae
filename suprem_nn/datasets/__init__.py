"""Raw datasets: find them, list their cases, read a case, verify everything up front.

Two layouts are read natively and detected automatically, each one module with one
:class:`~suprem_nn.datasets.layout.DatasetLayout` that also serves prediction inputs and evaluation folders:

* nnU-Net v2 raw (:mod:`.nnunet`): ``dataset.json``, ``imagesTr/CASE_XXXX{ending}``, ``labelsTr/CASE{ending}``,
  ``imagesTs/``.
* AbdomenAtlas (:mod:`.abdomenatlas`): ``CASE/ct.nii.gz`` + ``CASE/segmentations/<organ>.nii.gz`` (one binary
  mask per organ).

Typical use (the planner does this before any heavy work)::

    ds = load_dataset("RealCT")          # name, numeric id, folder name or path
    verify_dataset(ds, num_processes=4).raise_if_failed()
    images, geometry, label = read_case(ds.cases[0], ds)
"""
from .abdomenatlas import order_class_names
from .checks import grid_difference, nifti_file_problems
from .discovery import resolve_dataset_path
from .layout import CaseSegmentation, DatasetLayout, PredictionCase
from .layouts import LAYOUTS, layout_of
from .loading import load_dataset, read_case
from .model import ABDOMENATLAS_ORDER, LAYOUT_ABDOMENATLAS, LAYOUT_NNUNET, Problem, RawCase, RawDataset
from .nnunet import parse_dataset_json
from .verification import VerificationReport, verify_dataset

__all__ = ["RawCase", "RawDataset", "DatasetLayout", "LAYOUTS", "layout_of", "PredictionCase", "CaseSegmentation",
           "Problem", "VerificationReport", "resolve_dataset_path", "load_dataset",
           "read_case", "verify_dataset", "order_class_names", "parse_dataset_json", "grid_difference",
           "nifti_file_problems", "ABDOMENATLAS_ORDER", "LAYOUT_NNUNET", "LAYOUT_ABDOMENATLAS"]
