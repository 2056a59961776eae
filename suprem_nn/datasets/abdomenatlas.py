"""The AbdomenAtlas layout: CASE/ct.nii.gz + CASE/segmentations/<organ>.nii.gz (one binary mask per organ)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..io.image_io import image_ending, is_dicom_folder, strip_ending
from .model import ABDOMENATLAS_ORDER, LAYOUT_ABDOMENATLAS, Case, Problem, RawDataset

SEGMENTATIONS = "segmentations"


def order_class_names(names) -> list[str]:
    """AbdomenAtlas 1.1 order for the names it knows, then the remaining names alphabetically."""
    names = set(names)
    known = [n for n in ABDOMENATLAS_ORDER if n in names]
    return known + sorted(names - set(known))


def _ct_entries(case_dir: Path) -> list[Path]:
    out = [p for p in case_dir.iterdir() if p.is_file() and image_ending(p.name) and strip_ending(p.name) == "ct"]
    if (case_dir / "ct").is_dir():
        out.append(case_dir / "ct")  # a DICOM series folder
    return sorted(out)


def is_abdomenatlas_folder(folder: Path) -> bool:
    return any(d.is_dir() and not d.name.startswith(".") and (_ct_entries(d) or (d / SEGMENTATIONS).is_dir())
               for d in folder.iterdir())


def load_abdomenatlas(folder: Path, name: str) -> RawDataset:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    cases: list[Case] = []
    for case_dir in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        cid = case_dir.name
        cts = _ct_entries(case_dir)
        seg_dir = case_dir / SEGMENTATIONS
        if not cts and not seg_dir.is_dir():
            warnings.append(Problem(cid, case_dir, "folder ignored: it holds neither ct.nii.gz nor "
                                                   f"{SEGMENTATIONS}/"))
            continue
        if not cts:
            ct = case_dir / "ct.nii.gz"  # missing; verification reports it
        else:
            ct = sorted(cts, key=lambda p: p.name != "ct.nii.gz")[0]
            if len(cts) > 1:
                problems.append(Problem(cid, ct, f"duplicate CT: {len(cts)} entries: "
                                                 f"{', '.join(p.name for p in cts)}"))
        masks: dict[str, Path] = {}
        if seg_dir.is_dir():
            found: dict[str, list[Path]] = {}
            for p in sorted(seg_dir.iterdir()):
                if p.name.startswith(".") or not p.is_file() or image_ending(p.name) is None:
                    continue
                found.setdefault(strip_ending(p.name), []).append(p)
            for organ, files in sorted(found.items()):
                files = sorted(files, key=lambda p: not p.name.endswith(".nii.gz"))
                if len(files) > 1:
                    problems.append(Problem(cid, files[0], f"duplicate mask {organ!r}: "
                                                           f"{', '.join(p.name for p in files)}"))
                masks[organ] = files[0]
        if not masks:
            warnings.append(Problem(cid, seg_dir, "case has no masks: no class is annotated"))
        cases.append(Case(cid, [ct], None, masks))

    class_names = order_class_names({organ for c in cases for organ in c.masks})
    # Each case's masks in dataset class order, so iteration order is the same everywhere.
    for c in cases:
        c.masks = {n: c.masks[n] for n in class_names if n in c.masks}
    endings = Counter(image_ending(c.images[0].name) or "" for c in cases if not is_dicom_folder(c.images[0]))
    file_ending = endings.most_common(1)[0][0] if endings else ".nii.gz"
    return RawDataset(name=name, path=folder, layout=LAYOUT_ABDOMENATLAS, channel_names=["CT"],
                      class_names=class_names, label_values=list(range(1, len(class_names) + 1)), cases=cases,
                      test_cases=[], file_ending=file_ending, layout_problems=problems, layout_warnings=warnings)
