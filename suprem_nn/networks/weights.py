"""The released SuPreM weights: where they live, how they are fetched, verified and registered.

Folder: ``$SUPREM_WEIGHTS``, default ``~/suprem_nn_data/weights`` (files are also found in the default folder
when ``SUPREM_WEIGHTS`` points elsewhere). Address: ``checkpoint.url`` of ``plans/<backbone>.json`` (the Hugging
Face release), rewritten by ``SUPREM_WEIGHTS_URL`` (a base URL holding the released file names; a mirror or a
local server) or ``HF_ENDPOINT`` (a Hugging Face mirror). ``SUPREM_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) never
touches the network. ``SUPREM_DOWNLOAD_TIMEOUT`` bounds a stall in seconds (default 30).

A file is placed under its final name only after it has been loaded with ``weights_only=True`` and found to be
the released layout of the expected family (key set and count); until then it is ``<file>.part``. A flock on
the weights folder makes concurrent first uses (several trainings, DDP ranks) download once.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..errors import SupremError
from ..utils.atomic import atomic_path
from ..utils.download import DownloadError, download_file
from .backbones import BACKBONES, released_backbones

log = logging.getLogger("suprem_nn")

DEFAULT_FOLDER = "~/suprem_nn_data/weights"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 30.0


class WeightsError(SupremError):
    """Released weights are missing, cannot be fetched, or a file is not the released layout."""


@dataclass(frozen=True)
class ReleasedWeights:
    """One released SuPreM file: its backbone, file name and the address it is fetched from."""

    backbone: str
    file_name: str
    url: str


# --------------------------------------------------------------------------- where


def weights_folder() -> Path:
    """The folder downloads and registrations go to: ``$SUPREM_WEIGHTS``, else ``~/suprem_nn_data/weights``."""
    return Path(os.environ.get("SUPREM_WEIGHTS") or DEFAULT_FOLDER).expanduser()


def weights_search_path(file_name: str) -> list[Path]:
    """Where a SuPreM weights file is looked for: ``$SUPREM_WEIGHTS/<file>``, then ``~/suprem_nn_data/weights/<file>``."""
    places = [weights_folder() / file_name]
    default = Path(DEFAULT_FOLDER).expanduser() / file_name
    return places if default in places else places + [default]


def find_weights(file_name: str) -> Optional[Path]:
    """The first existing file of :func:`weights_search_path`, or None."""
    return next((p for p in weights_search_path(file_name) if p.is_file()), None)


def released_weights(backbone: str, file_name: Optional[str] = None, url: Optional[str] = None) -> ReleasedWeights:
    """The released file of ``backbone`` from ``plans/<backbone>.json`` (``file_name``/``url`` override it, e.g.
    from a plan), with the address rewritten by ``SUPREM_WEIGHTS_URL`` or ``HF_ENDPOINT``."""
    from ..planning.presets import load_preset  # plans/ JSON only; planning imports networks elsewhere

    if backbone not in released_backbones():
        what = "no SuPreM weights are released for" if backbone in BACKBONES else "unknown SuPreM backbone"
        raise WeightsError(f"{what} '{backbone}'; choose one of {', '.join(released_backbones())}")
    entry = load_preset(backbone)["checkpoint"]
    file_name = file_name or entry["file"]
    url = url or entry["url"]
    base = os.environ.get("SUPREM_WEIGHTS_URL")
    endpoint = os.environ.get("HF_ENDPOINT")
    if base:
        url = f"{base.rstrip('/')}/{file_name}"
    elif endpoint and url.startswith(HF_DEFAULT_ENDPOINT + "/"):
        url = endpoint.rstrip("/") + url[len(HF_DEFAULT_ENDPOINT):]
    return ReleasedWeights(backbone, file_name, url)


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("SUPREM_OFFLINE", "HF_HUB_OFFLINE"))


def _timeout_s() -> float:
    text = os.environ.get("SUPREM_DOWNLOAD_TIMEOUT", "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise WeightsError(f"SUPREM_DOWNLOAD_TIMEOUT must be a positive number of seconds, got '{text}'")
    return value


# --------------------------------------------------------------------------- what


def verify_released_file(path, backbone: Optional[str] = None) -> str:
    """Check that ``path`` is a released SuPreM file (``weights_only`` load, family, key set and count); return
    its family. Raises :class:`WeightsError` naming the file and the problem."""
    from .weights_file import CheckpointError, read_checkpoint

    try:
        parsed = read_checkpoint(path)
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from None
    family = parsed.family
    if backbone is not None and family != backbone:
        raise WeightsError(f"holds SuPreM {family} weights, not {backbone} ones", path)
    release = BACKBONES[family].release  # the reader recognises released families only
    count, universal = release.file_keys, release.universal
    if len(parsed.state_dict) != count or parsed.universal != universal:
        layout = "a Universal Model" if universal else "a plain network with its output head"
        raise WeightsError(f"is not the released {family} layout ({layout}, {count} tensors): found "
                           f"{len(parsed.state_dict)} tensors{' in a Universal Model' if parsed.universal else ''}",
                           path)
    return family


# --------------------------------------------------------------------------- how


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive flock on the folder itself: no lock file to leave behind; released when the process dies.

    A holder that fails removes the folder it created when it is empty, so a waiter re-checks that it locked the
    folder that is still there and otherwise locks the new one.
    """
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"another process is fetching SuPreM weights into {folder}; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(folder).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _advice(rel: ReleasedWeights, folder: Path, use_flag: Optional[str]) -> str:
    also = f", or pass {use_flag}" if use_flag else ""
    return (f"on a machine with internet run `suprem_download_weights {rel.backbone} --to DIR` (or download that "
            f"URL by hand), then put the file in {folder} as {rel.file_name} (or run `suprem_download_weights "
            f"--register FILE`, which checks it first){also}")


def download_weights(backbone: str, folder=None, *, file_name: Optional[str] = None, url: Optional[str] = None,
                     progress: bool = True, use_flag: Optional[str] = None, verify_existing: bool = False) -> Path:
    """Make sure ``<folder>/<released file>`` exists (default folder: :func:`weights_folder`); return its path.

    Downloads it when absent (progress bar, resume, bounded stall), verifies the layout before the file gets
    its final name, and holds a folder lock so concurrent callers download once. ``verify_existing`` also checks
    a file that is already there. ``use_flag`` names the option that takes a file by hand in the error message.
    """
    rel = released_weights(backbone, file_name, url)
    folder = Path(folder).expanduser() if folder is not None else weights_folder()
    final = folder / rel.file_name
    if final.is_file():
        if verify_existing:
            verify_released_file(final, backbone)
        return final
    if _offline():
        raise WeightsError(f"SuPreM {backbone} weights {rel.file_name} are not in {folder} and SUPREM_OFFLINE/"
                           f"HF_HUB_OFFLINE forbids downloading {rel.url}; " + _advice(rel, folder, use_flag))
    created = _make_folder(folder, rel, use_flag)
    part = folder / (rel.file_name + ".part")
    with _folder_lock(folder):
        if final.is_file():  # another process finished it while this one waited for the lock
            return final
        try:
            download_file(rel.url, part, timeout_s=_timeout_s(), progress=progress, desc=rel.file_name,
                          announce=f"downloading the SuPreM {backbone} weights from {rel.url} to {final}")
            _verify_download(part, rel, folder, use_flag)
            _place(part, final)
        except DownloadError as exc:
            kept = exc.resumable and part.is_file() and part.stat().st_size > 0
            if not kept:
                _cleanup(part, folder if created else None)
            note = f" ({part} keeps the bytes received; the next run resumes)" if kept else ""
            raise WeightsError(f"cannot download the SuPreM {backbone} weights from {rel.url}: {exc}{note}; "
                               + _advice(rel, folder, use_flag)) from None
        except KeyboardInterrupt:  # keep the bytes received: the next run resumes from them
            raise
        except BaseException:
            _cleanup(part, folder if created else None)
            raise
    log.info(f"SuPreM {backbone} weights verified and saved: {final}")
    return final


def _make_folder(folder: Path, rel: ReleasedWeights, use_flag: Optional[str]) -> bool:
    if folder.is_dir():
        return False
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as exc:
        raise WeightsError(f"cannot create the weights folder {folder} ({exc.strerror}); set SUPREM_WEIGHTS to a "
                           f"writable folder or {_advice(rel, folder, use_flag)}") from None
    return True


def _verify_download(part: Path, rel: ReleasedWeights, folder: Path, use_flag: Optional[str]) -> None:
    try:
        verify_released_file(part, rel.backbone)
    except WeightsError as exc:
        problem = str(exc).removeprefix(f"{part}: ")
        raise WeightsError(f"the file downloaded from {rel.url} is not the released SuPreM {rel.backbone} "
                           f"checkpoint ({problem}); nothing was saved; " + _advice(rel, folder, use_flag)) from None


def _place(part: Path, final: Path) -> None:
    """Give the verified ``.part`` file its final name (same folder: an atomic rename), then persist the rename."""
    os.replace(part, final)
    with contextlib.suppress(OSError):
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cleanup(part: Path, created_folder: Optional[Path]) -> None:
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    if created_folder is not None:
        with contextlib.suppress(OSError):  # only when still empty: another process may have put files there
            created_folder.rmdir()


def ensure_weights(backbone: str, *, file_name: Optional[str] = None, url: Optional[str] = None,
                   progress: bool = True, use_flag: Optional[str] = None) -> Path:
    """The released ``backbone`` file from :func:`weights_search_path`, downloaded into :func:`weights_folder`
    on first use."""
    rel = released_weights(backbone, file_name, url)
    found = find_weights(rel.file_name)
    if found is not None:
        return found
    return download_weights(backbone, file_name=rel.file_name, url=url, progress=progress, use_flag=use_flag)


def register_weights(path, backbone: Optional[str] = None, folder=None) -> Path:
    """Copy a released file obtained elsewhere into the weights folder under its released name, after the same
    verification as a download; the backbone is read from the file (``backbone`` must match when given)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError("no such file to register", path)
    family = verify_released_file(path, backbone)
    rel = released_weights(family)
    folder = Path(folder).expanduser() if folder is not None else weights_folder()
    final = folder / rel.file_name
    if final.exists() and final.resolve() == path.resolve():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        with atomic_path(final) as tmp:
            shutil.copyfile(path, tmp)
    log.info(f"registered {path} as the SuPreM {family} weights: {final}")
    return final


def resolve_pretrained_checkpoint(plan, explicit: Optional[str], progress: bool = True) -> Path:
    """The weights file a pretrained training starts from: ``explicit`` (``--pretrained-checkpoint``), else the
    plan's released file from the weights folder, downloaded on first use."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise SupremError("pretrained checkpoint not found", p)
        return p
    file_name = plan.checkpoint.get("file")
    if not file_name:
        raise SupremError(f"plan '{plan.plan_name}' names no SuPreM weights file; pass --pretrained-checkpoint PATH "
                          f"or train --from-scratch")
    found = find_weights(file_name)
    if found is not None:
        return found
    if plan.pretrained not in released_backbones():
        places = weights_search_path(file_name)
        raise SupremError(f"SuPreM weights '{file_name}' not found (looked in {', '.join(map(str, places))}); put "
                          f"it in {places[0].parent} or pass --pretrained-checkpoint PATH")
    return download_weights(plan.pretrained, file_name=file_name, url=plan.checkpoint.get("url"), progress=progress,
                            use_flag="--pretrained-checkpoint PATH")


def prefetch_weights(backbone: str, progress: bool = True) -> Optional[Path]:
    """:func:`ensure_weights` for steps that do not need the weights yet (planning): a failure is one warning
    that says what to do, not an error (an info line when SUPREM_OFFLINE asked for no network); returns the path
    or None."""
    try:
        path = ensure_weights(backbone, progress=progress, use_flag="--pretrained-checkpoint PATH to suprem_train")
    except SupremError as exc:
        level, word = (logging.INFO, "note") if _offline() else (logging.WARNING, "warning")
        log.log(level, f"{word}: {exc}. Planning does not need the weights; training with --pretrained {backbone} "
                       f"does")
        return None
    log.info(f"SuPreM {backbone} weights: {path}")
    return path
