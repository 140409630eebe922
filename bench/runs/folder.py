"""Files on disk, for every writer: the one translation of an OSError into a one-line user error (the
path, what failed, the remedy), atomic writes, and the lock that keeps a run folder to one process.

The lock is ``<run folder>/.lock``: an ``flock`` held while a run or ``--resume`` writes the folder, the
holder's pid written in it. The kernel drops it when the holder dies (even by SIGKILL), so a stale file
never blocks a later ``--resume``.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path

from bench import UserError

LOCK = ".lock"
REMEDY = {
    errno.ENOSPC: "the disk is full: free some space (or choose another folder) and retry",
    errno.EDQUOT: "the disk quota is used up: free some space (or choose another folder) and retry",
    errno.EFBIG: "the file size limit (ulimit -f) is reached: raise it and retry",
    errno.EACCES: "no permission: make it writable (or choose another folder)",
    errno.EPERM: "no permission: make it writable (or choose another folder)",
    errno.EROFS: "a read-only file system: choose another folder",
    errno.ENOTDIR: "a file is in the way of a folder: remove it (or choose another folder)",
    errno.EEXIST: "a file is in the way of a folder: remove it (or choose another folder)",
    errno.EISDIR: "a folder is in the way of a file: remove it (or choose another folder)",
    errno.EIO: "an I/O error: check the disk and the file",
}


def os_error(e: OSError, path=None, doing: str = "write", hint: str = "") -> UserError:
    """The one-line user error for ``e``, raised while trying to ``doing`` ``path`` (default: the
    error's own file name); ``hint`` adds what else the user can do."""
    where = path if path is not None else (e.filename or "a file")
    remedy = REMEDY.get(e.errno, "check the path and its permissions")
    return UserError(f"cannot {doing} {where}: {e.strerror or e}; {remedy}{hint}")


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, with the
    mode a plain ``open`` would give (0644 under the usual umask); an OSError is a one-line user error
    and leaves neither a partial file nor a temporary one."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise os_error(e, path) from None
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clean_temporaries(folder: Path) -> None:
    """Remove the temporary files a killed writer left behind (call with the folder's lock held)."""
    for tmp in Path(folder).glob(".*.*"):
        if tmp.is_file() and tmp.name != LOCK:
            tmp.unlink(missing_ok=True)


class Lock:
    """The run folder's lock, taken at once or refused with the holder's pid in one line."""

    def __init__(self, folder: Path):
        self.path, self.fd = Path(folder) / LOCK, None

    def acquire(self) -> Lock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise os_error(e, self.path, "lock") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(f"{self.path.parent} is in use by linbench pid {holder} (a run or --resume of it); "
                                "wait for it to end, or end it, and retry") from None
            try:  # the holder may have removed the file between our open and our lock: take the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def meta_json(folder: Path) -> dict:
    """meta.json of a run folder as a dict, whatever its schema (anything unreadable is a one-line error)."""
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing (not a linbench run folder)") from None
    except OSError as e:
        raise os_error(e, path, "read") from None
    except ValueError as e:  # not JSON, or not text at all
        raise UserError(f"{path}: unreadable ({e.__class__.__name__}); not a linbench run folder") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a linbench run's meta.json")
    return meta
