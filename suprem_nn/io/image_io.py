"""Read and write 3D medical images with their geometry kept exactly.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage
(``.mha``, ``.mhd``) and a folder holding one DICOM series, all through
SimpleITK. Arrays follow the axis convention of :mod:`suprem_nn.io.geometry`
(``arr[i, j, k]``, fastest file axis first). Spacing, origin and direction are
passed through as SimpleITK reports them, so a read -> write -> read round trip
returns identical geometry and voxels.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import ImageReadError
from ..utils.atomic import atomic_path
from .geometry import Geometry
from .nifti_file import hidden_nifti_problem, is_gzip_file

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MAX_SPACING_MM = 1000.0


def image_ending(path: str | os.PathLike) -> str | None:
    """The supported image ending of a file name.

    Parameters
    ----------
    path : str or os.PathLike
        A file name or path (case is ignored).

    Returns
    -------
    str or None
        The entry of :data:`IMAGE_ENDINGS` it ends with (``".nii.gz"`` before ``".nii"``), lower case; None for
        other files.
    """
    name = Path(path).name.lower()
    for ending in IMAGE_ENDINGS:
        if name.endswith(ending):
            return ending
    return None


def strip_ending(path: str | os.PathLike) -> str:
    """File name without its image ending: ``case_0000.nii.gz`` -> ``case_0000``.

    Parameters
    ----------
    path : str or os.PathLike
        A file name or path.

    Returns
    -------
    str
        The name part (folders dropped); the whole name when it has no image ending.
    """
    name = Path(path).name
    ending = image_ending(name)
    return name[: -len(ending)] if ending else name


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding at least one DICOM series (as GDCM finds them).

    Parameters
    ----------
    path : str or os.PathLike
        Any path.

    Returns
    -------
    bool
        False for files and for folders without a DICOM series.
    """
    path = Path(path)
    return path.is_dir() and bool(_dicom_series_ids(path))


def _dicom_series_ids(folder: Path) -> tuple:
    """The DICOM series in ``folder``, without ITK's console warning for folders that hold none."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_image(path: str | os.PathLike, check_finite: bool = True) -> tuple[np.ndarray, Geometry]:
    """Read a 3D image file or DICOM series folder.

    Parameters
    ----------
    path : str or os.PathLike
        A file with an ending of :data:`IMAGE_ENDINGS`, or a folder holding one DICOM series.
    check_finite : bool
        Refuse NaN or infinite voxels.

    Returns
    -------
    array : numpy.ndarray
        The stored dtype (after DICOM rescale), indexed ``[i, j, k]`` (fastest file axis first).
    geometry : Geometry
        Shape, spacing (mm), origin (mm, LPS) and direction, as SimpleITK reports them.

    Raises
    ------
    ImageReadError
        Naming the file, for unreadable files, non-3D images, empty axes, non-finite voxels, impossible spacing
        and non-orthogonal direction matrices.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError("file not found", path)
    problem = hidden_nifti_problem(path) if path.is_file() else None
    if problem is not None:
        raise ImageReadError(problem, path)
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            image = sitk.ReadImage(str(path))
    except ImageReadError:
        raise
    except RuntimeError as exc:
        raise ImageReadError(f"cannot read image ({_short_itk_message(exc)})", path) from None
    array, geometry = _to_array(image, path, check_finite)
    if check_finite and np.issubdtype(array.dtype, np.floating) and image_ending(path) in (".nii", ".nii.gz"):
        _check_nifti_finite(path)
    return array, geometry


def _check_nifti_finite(path: Path) -> None:
    """ITK's NIfTI reader turns NaN into 0 silently; look at the stored values with nibabel."""
    import nibabel as nib

    # by content, as ITK does: nibabel goes by the name and cannot open a plain NIfTI named .nii.gz
    image = nib.load(str(path)) if is_gzip_file(path) or not path.name.lower().endswith(".gz") \
        else nib.Nifti1Image.from_bytes(path.read_bytes())
    stored = np.asarray(image.dataobj)
    if not np.isfinite(stored).all():
        raise ImageReadError(f"image holds {int(stored.size - np.isfinite(stored).sum())} NaN or infinite voxels",
                             path)


def read_geometry(path: str | os.PathLike) -> Geometry:
    """Geometry of an image from its header only (no voxel data is decoded; a DICOM folder is read whole).

    Parameters
    ----------
    path : str or os.PathLike
        An image file or DICOM series folder.

    Returns
    -------
    Geometry
        Shape per array axis ``(i, j, k)``, spacing (mm), origin (mm, LPS), direction.

    Raises
    ------
    ImageReadError
        An unreadable header or an image that is not 3D.
    """
    path = Path(path)
    if path.is_dir():
        return read_image(path, check_finite=False)[1]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(f"cannot read image header ({_short_itk_message(exc)})", path) from None
    size = reader.GetSize()
    if len(size) != 3:
        raise ImageReadError(f"expected a 3D image, got {len(size)}D with size {tuple(size)}", path)
    return Geometry(tuple(int(s) for s in size), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                    tuple(reader.GetDirection()))


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike, compress: bool = True) -> None:
    """Write an image with its geometry, atomically (temporary file renamed into place).

    Parameters
    ----------
    array : numpy.ndarray
        Indexed ``[i, j, k]``, shape ``geometry.shape``; bool is written as uint8.
    geometry : Geometry
        Spacing (mm), origin (mm, LPS) and direction to store.
    path : str or os.PathLike
        The file; its ending (:data:`IMAGE_ENDINGS`) chooses the format.
    compress : bool
        Compress where the format allows.

    Raises
    ------
    ValueError
        ``array``'s shape differs from ``geometry.shape``.
    OSError
        The file could not be written completely (e.g. a full disk).
    """
    path = Path(path)
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing([float(v) for v in geometry.spacing])
    image.SetOrigin([float(v) for v in geometry.origin])
    image.SetDirection([float(v) for v in geometry.direction])
    ending = image_ending(path) or ""
    with atomic_path(path, suffix=ending) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
        _check_written(tmp, array.nbytes, ending)


def _check_written(tmp: Path, data_bytes: int, ending: str) -> None:
    """Raise OSError when SimpleITK left an incomplete file: on a full disk its NIfTI writer reports nothing and
    leaves an empty or cut file, which must never be renamed into place."""
    size = tmp.stat().st_size
    complete = size > 0
    if complete and ending == ".nii.gz":
        import gzip
        import zlib

        import nibabel as nib

        try:
            with gzip.open(tmp, "rb") as f:
                offset = int(nib.Nifti1Header.from_fileobj(f, check=False).get_data_offset())
            with open(tmp, "rb") as f:
                f.seek(-4, os.SEEK_END)
                complete = int.from_bytes(f.read(4), "little") == (offset + data_bytes) % 2**32
        except (OSError, EOFError, zlib.error, ValueError):
            complete = False
    elif complete and ending == ".nii":
        complete = size >= data_bytes
    if not complete:
        raise OSError(errno.EIO, "the image writer left an incomplete file", str(tmp))


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = _dicom_series_ids(folder)
    if not series:
        raise ImageReadError("folder holds no image file and no DICOM series", folder)
    if len(series) > 1:
        raise ImageReadError(f"folder holds {len(series)} DICOM series; pass one series per folder", folder)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _to_array(image: sitk.Image, path: Path, check_finite: bool) -> tuple[np.ndarray, Geometry]:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} "
                             "components per voxel", path)
    size = image.GetSize()
    if len(size) == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        size = image.GetSize()
    if len(size) != 3:
        raise ImageReadError(f"expected a 3D image, got {len(size)}D with size {tuple(size)}", path)
    if min(size) == 0:
        raise ImageReadError(f"image has an empty axis (size {tuple(size)})", path)
    spacing = tuple(float(v) for v in image.GetSpacing())
    if not all(np.isfinite(spacing)) or min(spacing) <= 0 or max(spacing) > MAX_SPACING_MM:
        raise ImageReadError(f"impossible voxel spacing {spacing} mm (must be > 0 and <= {MAX_SPACING_MM:g})", path)
    direction = tuple(float(v) for v in image.GetDirection())
    d = np.asarray(direction).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise ImageReadError("direction matrix is not orthonormal (sheared or scaled axes)", path)
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    if check_finite and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_bad = int(array.size - np.isfinite(array).sum())
        raise ImageReadError(f"image holds {n_bad} NaN or infinite voxels", path)
    geometry = Geometry(tuple(int(s) for s in size), spacing, tuple(float(v) for v in image.GetOrigin()), direction)
    return array, geometry


# ITK's words for the common failures, and what they mean to a user (the file name is said by the caller)
_ITK_MEANINGS = (
    ("unable to determine imageio reader",
     "no image reader recognises its contents: the file is corrupt, or not a NIfTI/NRRD/MetaImage image"),
    ("file cannot be read", "the file is incomplete, or not in the image format its name says"),
)


def _short_itk_message(exc: Exception) -> str:
    """ITK errors are multi-line C++ dumps in ITK's words (``sitk::ERROR: Unable to determine ImageIO reader for
    "x.nii.gz"``); say what went wrong in ours, without the C++ source lines and without repeating the file."""
    import re

    text = str(exc)
    low = text.lower()
    for words, meaning in _ITK_MEANINGS:
        if words in low:
            return meaning
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "description:" in ln.lower():
            return ln.split(":", 1)[1].strip()[:300]
    for ln in reversed(lines):
        if not ln.lower().startswith(("/", "itk::", "file:", "line:", "exception thrown")):
            # "sitk::ERROR: ..." and "ITK ERROR: NiftiImageIO(0x55aa...): ..." prefixes say nothing to a user
            return re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*(\w+\(0x[0-9a-f]+\):)?\s*", "", ln)[:300] or ln[:300]
    return lines[-1][:300] if lines else "unknown reader error"
