"""Resumable HTTP(S) download of one file into a ``.part`` file, with a progress bar and a bounded stall time.

Only the transfer lives here; what the file must contain, where it goes and who may write it is the caller's
job (:mod:`suprem_nn.networks.weights`). The ``.part`` file is never the final name, so a reader never sees a
half file. The standard library is enough: a plain GET with ``Range: bytes=N-`` resumes, which works against
the Hugging Face CDN, any mirror and a test's ``http.server`` alike.
"""
from __future__ import annotations

import errno
import http.client
import logging
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import SupremError

log = logging.getLogger("suprem_nn")

CHUNK_BYTES = 1 << 20
MAX_ATTEMPTS = 5
_MB = 1 << 20


class DownloadError(SupremError):
    """The file could not be fetched; ``resumable`` is True when the bytes kept in the ``.part`` file are valid."""

    def __init__(self, problem: str, resumable: bool = False):
        super().__init__(problem)
        self.resumable = resumable


class _Interrupted(Exception):
    """The transfer stopped mid-file; ``progressed`` says whether this attempt added bytes."""

    def __init__(self, reason: str, progressed: bool):
        super().__init__(reason)
        self.progressed = progressed


def download_file(url: str, part: Path, *, timeout_s: float, progress: bool = True, desc: str = "",
                  announce: str = "") -> int:
    """Fetch ``url`` into ``part``, appending to the bytes it already holds; return the file size in bytes.

    ``announce`` is logged once the server answers with the file (not before: an unreachable server gives one
    error line, nothing else).
    A dropped connection or a stall longer than ``timeout_s`` seconds (per connect or read) is retried with an
    HTTP Range request from the bytes already received, up to :data:`MAX_ATTEMPTS` attempts, as long as each
    attempt makes progress.

    Parameters
    ----------
    url : str
        The file's address.
    part : Path
        The partial file to append to (created when missing).
    timeout_s : float
        Seconds a connect or read may stall before the attempt is retried.
    progress : bool
        Show a progress bar (on a terminal only).
    desc : str
        The bar's label.
    announce : str
        Logged once the server answers with the file.

    Returns
    -------
    int
        The file's size in bytes.

    Raises
    ------
    DownloadError
        With a one-line reason (HTTP status, HTML page instead of a file, unreachable host, full disk, stall).
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            return _attempt(url, part, timeout_s, progress, desc, announce if attempts == 1 else "")
        except _Interrupted as stop:
            have = part.stat().st_size if part.exists() else 0
            if not stop.progressed or attempts >= MAX_ATTEMPTS:
                raise DownloadError(f"{stop} (gave up after {attempts} attempt(s), {have / _MB:.1f} MB received)",
                                    resumable=have > 0) from None
            log.info(f"{desc or url}: {stop}; resuming from {have / _MB:.1f} MB with an HTTP Range request")


def _open(url: str, offset: int, timeout_s: float):
    from .. import __version__

    headers = {"User-Agent": f"suprem_nn/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the kept bytes do not fit this file (it changed): start again
            return None
        raise DownloadError(f"the server answered HTTP {exc.code} {exc.reason}") from None
    except (socket.timeout, TimeoutError):
        raise DownloadError(f"no answer within {timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = f"no answer within {timeout_s:g} s" if isinstance(reason, socket.timeout) else str(reason)
        raise DownloadError(f"cannot reach the server ({text})") from None
    except (http.client.HTTPException, OSError) as exc:
        raise DownloadError(f"cannot reach the server ({type(exc).__name__}: {exc})") from None


def _content_range(resp, offset: int) -> tuple[int, int | None]:
    """(first byte, total bytes) of a response; a 200 restarts at 0."""
    if resp.status != 206:
        length = resp.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
    if not m:
        return 0, None
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


def _attempt(url: str, part: Path, timeout_s: float, progress: bool, desc: str, announce: str) -> int:
    from .progress import Progress

    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, timeout_s)
    if resp is None:
        part.unlink()
        raise _Interrupted("the server refused to resume the kept bytes", progressed=True)
    with resp:
        ctype = resp.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
            raise DownloadError(f"the server sent an HTML page (Content-Type {ctype}) instead of the file; "
                                "the address or the mirror is wrong, or the site wants a login")
        start, total = _content_range(resp, offset)
        if start != offset:  # a server that ignores Range sends the whole file again: overwrite
            offset = start
        _check_free_space(part.parent, None if total is None else total - offset)
        if announce:
            log.info(announce)
        received = 0
        try:
            with open(part, "r+b" if offset else "wb") as f, \
                    Progress(total, desc, "B", unit_scale=True, initial=offset, enabled=progress) as bar:
                f.seek(offset)
                f.truncate()
                while True:
                    try:
                        chunk = resp.read(CHUNK_BYTES)
                    except (socket.timeout, TimeoutError):
                        raise _Interrupted(f"the transfer stalled for {timeout_s:g} s", received > 0) from None
                    except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException, OSError) as exc:
                        raise _Interrupted(f"the connection dropped ({type(exc).__name__})", received > 0) from None
                    if not chunk:
                        break
                    if offset + received == 0 and _looks_like_html(chunk):
                        raise DownloadError("the server sent an HTML page instead of the file; the address or the "
                                            "mirror is wrong, or the site wants a login")
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(f"the disk holding {part.parent} is full") from None
            raise
    size = offset + received
    if total is not None and size < total:
        raise _Interrupted(f"the connection closed after {size} of {total} bytes", received > 0)
    return size


def _looks_like_html(chunk: bytes) -> bool:
    head = chunk[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


def _check_free_space(folder: Path, need_bytes: int | None) -> None:
    """Refuse before writing when the announced size cannot fit (a full disk midway is caught on write)."""
    if not need_bytes:
        return
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if free < need_bytes:
        raise DownloadError(f"the disk holding {folder} has {free / _MB:.1f} MB free, the file needs "
                            f"{need_bytes / _MB:.1f} MB more")
