"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Written by hand because the pattern is four system calls (temp file in the same folder,
fsync, rename, fsync the folder) and no well-kept library offers exactly this without
extra behaviour we would have to work around.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomic UTF-8 text write."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write (indented, keys in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_create_text(path: str | Path, text: str) -> bool:
    """Create ``path`` with ``text`` only if it does not exist yet; False if it already did.

    The content is complete before the name appears (link of a finished temp file), so a
    concurrent writer can use the name as a claim without ever exposing a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the name exists: an atomic create-if-absent
        except FileExistsError:
            return False
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    _fsync_dir(path.parent)
    return True


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Fill a folder that appears at ``path`` complete or not at all.

    Yields a temporary sibling (``<name>.tmp-<pid>``) to write into; on success its files are
    fsynced (the rename must not publish data still only in the page cache) and it replaces
    ``path``; on an error it is removed. A crash leaves only the temporary folder, which
    ``glob("*.tmp*")`` finds for clean-up.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: str | Path) -> int:
    """Delete temp files left by writers that were killed mid-write; returns how many."""
    n = 0
    for p in Path(folder).rglob(TMP_PREFIX + "*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


_STALE_EXPORT = re.compile(r"^\..+\.(tmp|old)-(\d+)-[0-9a-f]+(\.build)?$")


def remove_stale_exports(folder: str | Path) -> int:
    """Delete hidden ``.<name>.tmp-<pid>-<hex>`` / ``.old-`` folders left by exports that were killed.

    A folder whose process is still alive (an export running now) is kept. Returns how many went.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.iterdir():
        m = _STALE_EXPORT.match(p.name)
        if not m or _alive(int(m.group(2))):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
