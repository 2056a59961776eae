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
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SupremError
from ..io.image_io import image_ending, is_dicom_folder, strip_ending

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")
OUTPUT_ENDING = ".nii.gz"
SEG_SUFFIX = "_seg"   # label maps of images named without nnU-Net's _0000 channel suffix: ct.nii.gz -> ct_seg.nii.gz


@dataclass
class Case:
    case_id: str
    images: list[Path]      # one file (or DICOM folder) per channel
    output: Path            # the label map; its existence marks the case finished
    case_folder: Path       # where per-class masks, probabilities, previews of this case go
    atlas: bool = False     # AbdomenAtlas layout (segmentations/ beside combined_labels)

    def segmentation_folder(self) -> Path:
        return self.case_folder / "segmentations" if self.atlas else self.case_folder / self.case_id / "segmentations"


def find_cases(input_path: str | Path, output_path: str | Path) -> list[Case]:
    """The cases of ``input_path`` and their output locations under ``output_path``."""
    inp, out = Path(input_path), Path(output_path)
    if not inp.exists():
        raise SupremError("input not found", inp)
    if inp.is_file() or is_dicom_folder(inp) and not _image_files(inp):
        if inp.is_file() and image_ending(inp) is None:
            raise SupremError("not a supported image file (.nii.gz, .nii, .nrrd, .mha, .mhd or a DICOM folder)", inp)
        case_id = strip_ending(inp) if inp.is_file() else inp.name
        m = _CHANNEL.match(case_id)
        if m:
            case_id = m.group(1)
        if image_ending(out):
            if out.resolve() == inp.resolve():
                raise SupremError("the output file is the input image; name another file for the label map", out)
            return [Case(case_id, [inp], out, out.parent)]
        return [Case(case_id, [inp], out / f"{case_id}{'' if m else SEG_SUFFIX}{OUTPUT_ENDING}", out)]
    if image_ending(out):
        raise SupremError("input is a folder, so the output must be a folder, not an image file name", out)
    if out.resolve() == inp.resolve():
        raise SupremError("the output folder is the input folder; choose another one (label maps beside the images "
                          "would be read as new cases by the next run)", out)
    atlas = sorted(p for p in inp.iterdir() if p.is_dir() and _atlas_ct(p) is not None)
    if atlas:
        return [Case(p.name, [_atlas_ct(p)], out / p.name / f"combined_labels{OUTPUT_ENDING}", out / p.name,
                     atlas=True) for p in atlas]
    files = _image_files(inp)
    if not files:
        raise SupremError("folder holds no image files (.nii.gz, .nii, .nrrd, .mha), no DICOM series "
                          "and no AbdomenAtlas case folders (CASE/ct.nii.gz)", inp)
    stems = [strip_ending(f) for f in files]
    seen: dict[str, Path] = {}
    for f, s in zip(files, stems):  # case.nii.gz beside case.nrrd: both would write the same output file
        if s in seen:
            raise SupremError(f"two files for the same case '{s}' ({seen[s].name} and {f.name}); keep one", inp)
        seen[s] = f
    if all(_CHANNEL.match(s) for s in stems):
        groups: dict[str, list[tuple[int, Path]]] = {}
        for f, s in zip(files, stems):
            m = _CHANNEL.match(s)
            groups.setdefault(m.group(1), []).append((int(m.group(2)), f))
        cases = []
        for cid in sorted(groups):
            chans = sorted(groups[cid])
            if [c for c, _ in chans] != list(range(len(chans))):
                raise SupremError(f"case '{cid}' has channels {[c for c, _ in chans]}; expected _0000.._"
                                  f"{len(chans) - 1:04d} without gaps", inp)
            cases.append(Case(cid, [f for _, f in chans], out / f"{cid}{OUTPUT_ENDING}", out))
        return cases
    return [Case(s, [f], out / f"{s}{SEG_SUFFIX}{OUTPUT_ENDING}", out) for f, s in zip(files, stems)]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and image_ending(p) and not p.name.startswith("."))


def _atlas_ct(folder: Path) -> Path | None:
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha"):
        p = folder / f"ct{ending}"
        if p.is_file():
            return p
    return None
