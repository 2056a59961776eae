"""Find the cases in a prediction input and decide where each one's outputs go.

Inputs and the outputs that mirror them:

=================================  ==============================================================
input                              output
=================================  ==============================================================
one image file / DICOM folder      ``-o x.nii.gz``: that file; ``-o folder``: as in a folder below
folder of images (``_0000``)       ``<out>/<case>.nii.gz`` (channels ``<case>_0000``, ``_0001``... grouped)
folder of images (plain names)     ``<out>/<name>_seg.nii.gz``, one case per file
DICOM series folder ``NAME/``      ``<out>/NAME_seg.nii.gz``
AbdomenAtlas folder (CASE/ct.*)    ``<out>/<CASE>/combined_labels.nii.gz`` + ``segmentations/<organ>.nii.gz``
=================================  ==============================================================

The rule: a label map's name never equals its image's. nnU-Net's ``CASE_0000.nii.gz -> CASE.nii.gz`` already
differs (and nnU-Net users and tools rely on it), so it stays; every other image, whose own name carries no
channel suffix, gets ``_seg`` (``ct.nii.gz -> ct_seg.nii.gz``), so a CT and its segmentation cannot be mistaken
for each other once copied side by side. The case id (reports, previews, per-class folders) is the name without
``_seg``. An output path that is the input itself, or an output folder that is the input folder, is refused.

Folders in a dataset layout (nnU-Net ``_0000`` images, AbdomenAtlas case folders) are read and named by that
layout's :meth:`~suprem_nn.datasets.layout.DatasetLayout.prediction_cases`, the same layout objects that read
training data and evaluation folders; this module handles what is not a dataset layout (one file, one DICOM
series, a folder of plainly named images).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..datasets.layout import PredictionCase, image_files
from ..datasets import layouts
from ..errors import SupremError
from ..io.image_io import image_ending, is_dicom_folder, strip_ending

__all__ = ["PredictionCase", "find_cases", "OUTPUT_ENDING", "SEG_SUFFIX"]

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")
OUTPUT_ENDING = ".nii.gz"
SEG_SUFFIX = "_seg"   # label maps of images named without nnU-Net's _0000 channel suffix: ct.nii.gz -> ct_seg.nii.gz


def find_cases(input_path: str | Path, output_path: str | Path) -> list[PredictionCase]:
    """The cases of a prediction input and their output locations.

    Parameters
    ----------
    input_path : str or Path
        One image file, one DICOM series folder, or a folder of cases (see the module docstring).
    output_path : str or Path
        The output folder, or (for one input image) the output label map file.

    Returns
    -------
    list of PredictionCase
        Sorted by case id.

    Raises
    ------
    SupremError
        The input is missing or holds no case, or an output would overwrite the input.
    """
    inp, out = Path(input_path), Path(output_path)
    if not inp.exists():
        raise SupremError("input not found", inp)
    if inp.is_file() or is_dicom_folder(inp) and not image_files(inp):
        if inp.is_file() and image_ending(inp) is None:
            raise SupremError("not a supported image file (.nii.gz, .nii, .nrrd, .mha, .mhd or a DICOM folder)", inp)
        case_id = strip_ending(inp) if inp.is_file() else inp.name
        m = _CHANNEL.match(case_id)
        if m:
            case_id = m.group(1)
        if image_ending(out):
            if out.resolve() == inp.resolve():
                raise SupremError("the output file is the input image; name another file for the label map", out)
            return [PredictionCase(case_id, [inp], out, out.parent)]
        return [PredictionCase(case_id, [inp], out / f"{case_id}{'' if m else SEG_SUFFIX}{OUTPUT_ENDING}", out)]
    if image_ending(out):
        raise SupremError("input is a folder, so the output must be a folder, not an image file name", out)
    if out.resolve() == inp.resolve():
        raise SupremError("the output folder is the input folder; choose another one (label maps beside the images "
                          "would be read as new cases by the next run)", out)
    for layout in layouts.LAYOUTS:
        cases = layout.prediction_cases(inp, out)
        if cases:
            return cases
    files = image_files(inp)
    if not files:
        raise SupremError("folder holds no image files (.nii.gz, .nii, .nrrd, .mha), no DICOM series "
                          "and no AbdomenAtlas case folders (CASE/ct.nii.gz)", inp)
    return [PredictionCase(s, [f], out / f"{s}{SEG_SUFFIX}{OUTPUT_ENDING}", out) for f, s in
            ((f, strip_ending(f)) for f in files)]
