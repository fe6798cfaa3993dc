"""Errors a user can act on (the CLI prints them as one line and exits with code 2), the one place
that reads a user's files, and the one that writes outputs (atomically: complete or absent)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


class NasError(ValueError):
    """Bad input from a user: a genome, a space file, a flag, a measurements file.

    The message names the file or field and the reason, e.g.
    ``space mobile.yaml: dimensions.qkv_groups: 3 does not divide hidden_size 512``.
    """


# ---- the one place that opens a user's files ---------------------------------------------------------
# Any OS or decoding error on a path a user gave is a user error: it names the path and the reason.


def check_fields(data: Any, cls: type, source: str, error: type[NasError] = NasError, what: str = "field",
                 objects: str = "fields") -> None:
    """Strict loading of the dataclass `cls` from a dict: one line naming `source` when `data` is not
    a JSON object, or holds a key `cls` has no field for (a typo, never silently dropped)."""
    import dataclasses

    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object of {objects}, got {type(data).__name__}")
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"{source}: unknown {what} {unknown[0]!r}; known: {', '.join(known)}")


def path_error(path: str | os.PathLike, err: OSError | UnicodeDecodeError, doing: str = "read") -> NasError:
    """A NasError for an OS or decoding error on a user's path: the path, the reason, the fix."""
    if isinstance(err, UnicodeDecodeError):
        return NasError(f"{path}: not a UTF-8 text file (byte 0x{err.object[err.start]:02x} at offset {err.start}); give a text file")
    if isinstance(err, IsADirectoryError) or err.errno == errno.EISDIR:
        return NasError(f"{path}: is a folder; give a file")
    if isinstance(err, NotADirectoryError):
        return NasError(f"{path}: a part of this path is a file, not a folder")
    if isinstance(err, FileNotFoundError):
        return NasError(f"{path}: no such file or folder")
    if isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.EACCES):
        where = "a read-only file system" if err.errno == errno.EROFS else "permission denied"
        return NasError(f"{path}: cannot {doing} ({where}); choose a location you can {doing}")
    if err.errno == errno.ENOSPC:
        return NasError(f"{path}: no space left on the device")
    return NasError(f"{path}: cannot {doing} ({err.strerror or err})")


@contextmanager
def open_user_file(path: str | os.PathLike, mode: str = "r", **kwargs) -> Iterator[IO]:
    """``open`` for a file a user gave (text is UTF-8): OS and decoding errors, on opening or
    while reading, become one NasError naming the path."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    doing = "read" if mode.startswith("r") and "+" not in mode else "write"
    try:
        handle = open(path, mode, **kwargs)
    except OSError as err:
        raise path_error(path, err, doing) from None
    try:
        with handle:
            yield handle
    except (UnicodeDecodeError, OSError) as err:
        if isinstance(err, OSError) and getattr(err, "filename", None) not in (None, str(path), os.fspath(path)):
            raise  # an error on some other path, raised inside the block
        raise path_error(path, err, doing) from None


def read_user_text(path: str | os.PathLike) -> str:
    """The text of a user's file (UTF-8), or one NasError naming the path and the reason."""
    with open_user_file(path) as handle:
        return handle.read()


def check_writable_folder(path: str | os.PathLike, flag: str = "") -> None:
    """NasError unless `path` (or, when it does not exist yet, its nearest existing parent) is a
    folder this process may create files in."""
    folder = Path(path)
    label = f"{flag} {folder}" if flag else str(folder)
    if folder.exists() and not folder.is_dir():
        raise NasError(f"{label}: is a file; give a folder")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NasError(f"{label}: {probe} is a file, not a folder")
    try:  # ask the file system itself: permission bits say nothing for root or read-only mounts
        fd, name = tempfile.mkstemp(prefix=".nas-write-check-", dir=probe)
    except OSError as err:
        reason = "read-only" if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else (err.strerror or str(err))
        raise NasError(f"{label}: cannot write in {probe} ({reason}); choose a folder you can write to") from None
    os.close(fd)
    os.unlink(name)


# ---- the one place that writes outputs ----------------------------------------------------------------


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary name next to `path` to write to; flushed to disk and renamed to `path` when the
    block succeeds, removed when it fails: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are for sharing
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")
