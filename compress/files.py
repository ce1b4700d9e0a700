"""How compress writes files: atomically, and a run folder under a lock.

Every file a run writes (JSON records, checkpoints, saved models, the report and its plots) goes
through :func:`atomic_open` or one of its wrappers: the bytes go to a hidden temporary file next to the
target (``.NAME.XXXXXXXX.tmp``, created exclusively under a name of its own, so it never writes
through a planted link), which is flushed to disk and then renamed over the target. A kill, a crash or
a full disk at any moment leaves either the old file or the new one, never a mix, and an error removes
the temporary file again. A full disk raises an :class:`OSError` that names the file and says "No
space left on device". Files get the permissions the user's umask gives a new file (``0o666 & ~umask``).

:func:`lock_folder` takes an exclusive ``fcntl.flock`` on ``FOLDER/.lock`` for as long as a process uses
the folder, so a second process on the same folder is refused at once (:class:`FolderBusyError`) rather
than racing the first; a ``.lock`` that is a link or not a plain file is refused, never followed. The
kernel drops the lock when the process ends, however it ends. While holding it,
:func:`remove_leftovers` deletes the temporary files of killed writers, and only those: names of the
exact form above (a user's ``draft.md.tmp`` is not one).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX (Windows): folders are not locked there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_open", "atomic_write", "write_json", "lock_folder", "remove_leftovers", "is_leftover", "FolderBusyError", "LOCK",
    "reserve_temp",
]

LOCK = ".lock"
_TMP = ".tmp"
# the temporary files compress writes: ``.NAME.XXXXXXXX.tmp`` (mkstemp's 8 characters), nothing else
_LEFTOVER = re.compile(r"^\.[^/]+\.(json|pt|md|png|yaml|yml|onnx)\.[a-z0-9_]{8}\.tmp$")


class FolderBusyError(RuntimeError):
    """Another process holds the lock of a folder (:func:`lock_folder`)."""


def _umask() -> int:
    """The process's umask (read from /proc where it can be, which changes nothing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_temp(path: Path, mode: str) -> tuple[IO[Any], str]:
    """A new temporary file next to ``path`` (created exclusively, with the umask's permissions), opened
    for writing, and its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    return (os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")), tmp


def reserve_temp(path: str | os.PathLike) -> Path:
    """A new, empty temporary file next to ``path`` under a unique name of the atomic form
    (``.NAME.XXXXXXXX.tmp``), for a writer that takes a path (e.g. the ONNX exporter); rename it over
    ``path`` with ``os.replace`` when it is complete, or unlink it."""
    path = Path(path)
    f, tmp = _open_temp(path, "wb")
    f.close()
    return Path(tmp)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a file object that replaces ``path`` when the ``with`` block ends without an error.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8). The parent folder is created. On any error the target is
    left as it was and the temporary file is removed; an ``OSError`` is re-raised naming ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f, tmp = _open_temp(path, mode)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        ours = e.filename is not None and Path(e.filename).name.startswith(f".{path.name}.") and str(e.filename).endswith(_TMP)
        if e.filename is None or e.filename == tmp or ours:  # name the file the caller asked for, not the temporary
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}", str(path)) from e
        raise
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns the path.

    Strict JSON: a NaN or infinity raises ``ValueError`` (nothing is written), because a number in a
    record is a measurement or is absent (``null``). Paths and other objects are written as strings.
    """
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False, default=str) + "\n"
    except ValueError as e:
        raise ValueError(f"refusing to write {path}: it would hold NaN or infinity, which is not a measurement") from e
    return atomic_write(path, text)


def remove_leftovers(folder: str | os.PathLike, depth: int = 1) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (and ``depth`` levels of
    sub-folders); returns what was removed. Call it only while holding the folder's lock."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.is_file() and _LEFTOVER.match(entry.name):
            with suppress(OSError):
                entry.unlink()
                removed.append(entry)
        elif entry.is_dir() and depth > 0 and not entry.is_symlink():
            removed += remove_leftovers(entry, depth - 1)
    return removed


def is_leftover(name: str) -> bool:
    """Whether a file name is a lock file or a temporary file of :func:`atomic_open` (not content)."""
    return name == LOCK or bool(_LEFTOVER.match(name))


@contextmanager
def lock_folder(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the ``with`` block.

    Raises :class:`FolderBusyError` at once if another process holds it (the message gives its pid),
    and ``OSError`` if the folder cannot be created or written. ``what`` names the folder in messages.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{lock} is a symbolic link; compress writes its lock only as a plain file "
                                       "of its own: remove the link, or use another folder", str(lock)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{lock} is not a plain file; remove it, or use another folder", str(lock))
    f = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                f.seek(0)
                holder = f.read().strip() or "unknown"
                raise FolderBusyError(
                    f"{what} {folder} is in use by another process (pid {holder}); wait for it to finish, "
                    "or use another folder"
                ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield folder
    finally:
        f.close()  # closing the descriptor releases the flock

