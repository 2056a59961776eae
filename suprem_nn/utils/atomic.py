"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A reader never sees a half-written file: either the old content or the new one.
A crash (even SIGKILL) leaves at most a ``.tmp-*`` file behind, which
:func:`remove_stale_temporaries` cleans up on the next run.

Several processes may write into one folder at once (prediction parts, a second run started by mistake), so a
temporary file carries its owner, ``.tmp-<name>.@<pid>@<host>@<random><suffix>``, and the sweep removes only
the leftovers whose owner is gone: same host and the pid no longer running, or older than
:data:`STALE_SECONDS` (another host's, or one from before owners were recorded).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

TMP_PREFIX = ".tmp-"
# A temporary file this old is a leftover whoever made it: no single write of ours takes a day, and a pid that is
# alive after that long may well be a recycled one.
STALE_SECONDS = 24 * 3600
_OWNER = re.compile(r"\.@(\d+)@([^@/]*)@")


def _host() -> str:
    """This machine's name as it goes into temporary file names: no '@' or '/', and at most 40 characters, so
    that a long name of the final file still fits the 255-byte limit of a file name."""
    return re.sub(r"[@/]", "_", socket.gethostname())[:40] or "unknown"


def owner_tag() -> str:
    """``@<pid>@<host>@``: the owner part of this process's temporary file names."""
    return f"@{os.getpid()}@{_host()}@"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success rename it over ``final``.

    Parameters
    ----------
    final : str or os.PathLike
        The file to (over)write; its folder is created.
    suffix : str
        A file ending the writer needs to pick its format (SimpleITK chooses the format from ``.nii.gz``, numpy
        appends ``.npy``).

    Yields
    ------
    Path
        The temporary file to write; removed if the block raises.

    Raises
    ------
    OSError
        Naming ``final`` (not the temporary file) when the folder is read-only or the disk is full.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{final.name}.{owner_tag()}", suffix=suffix,
                                   dir=final.parent)
    except OSError as exc:  # read-only or full disk: name the file the user asked for, not the temporary one
        raise _naming_error(exc, final) from exc
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the permissions a plain open() would
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise _naming_error(exc, final) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


# Below this many free bytes a failed write is taken to be a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def _naming_error(exc: OSError, final: Path) -> OSError:
    """The same error, naming ``final`` (not the temporary file) and saying when the disk is full.

    numpy reports a full disk as ``OSError("N requested and M written")`` with neither errno nor file name, and
    ``f.write`` errors carry no file name; users need both to act.
    """
    code = exc.errno
    if code is None or code == errno.EIO:
        with contextlib.suppress(OSError):
            st = os.statvfs(final.parent)
            if st.f_bavail * st.f_frsize < _NEARLY_FULL_BYTES:
                code = errno.ENOSPC
    if code is None:
        return OSError(errno.EIO, f"cannot write the file ({exc})", str(final))
    if exc.filename not in (None, str(final)) and Path(exc.filename).parent != final.parent:
        return exc  # about another file (an input being read): keep it as it is
    return OSError(code, os.strerror(code), str(final))


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``final`` through a temporary file renamed into place (readers never see half a file).

    Parameters
    ----------
    final : str or os.PathLike
        The file to (over)write.
    data : bytes
        Its new contents.
    """
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(final, text.encode("utf-8"))


def atomic_write_json(final: str | os.PathLike, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as JSON, indented by 2, keys in their order, newline at the end."""
    atomic_write_text(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_with(final: str | os.PathLike, writer: Callable[[Path], None], suffix: str = "") -> None:
    """Let ``writer`` write a temporary file and move it into place atomically.

    Parameters
    ----------
    final : str or os.PathLike
        The file to (over)write.
    writer : callable
        ``writer(tmp_path)`` writes the whole file at ``tmp_path``.
    suffix : str
        A file ending ``tmp_path`` must carry (see :func:`atomic_path`).
    """
    with atomic_path(final, suffix=suffix) as tmp:
        writer(tmp)


def remove_stale_temporaries(folder: str | os.PathLike, now: float | None = None) -> int:
    """Delete the ``.tmp-*`` leftovers of interrupted writes in ``folder`` whose owner is gone.

    A temporary file of a process that is still running (on this host, or on another host and younger than
    :data:`STALE_SECONDS`) is another run's write in progress and is kept.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to clean (nothing happens when it does not exist).
    now : float, optional
        The current time in seconds since the epoch (tests pass one).

    Returns
    -------
    int
        How many files were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time() if now is None else now
    n = 0
    for p in folder.glob(TMP_PREFIX + "*"):
        with contextlib.suppress(FileNotFoundError):
            if is_abandoned(p, now):
                p.unlink()
                n += 1
    return n


def is_abandoned(tmp: Path, now: float) -> bool:
    """True when no running process can still be writing ``tmp`` (see :func:`remove_stale_temporaries`)."""
    if now - tmp.stat().st_mtime > STALE_SECONDS:
        return True
    owner = _OWNER.search(tmp.name[len(TMP_PREFIX):])
    if owner is None or owner.group(2) != _host():
        return False  # another machine's (a shared folder) or no owner recorded: only age tells
    return not pid_alive(int(owner.group(1)))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
