"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Written by hand because the pattern is four system calls (temp file in the same folder,
fsync, rename, fsync the folder) and no well-kept library offers exactly this without
extra behaviour we would have to work around.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"
# A temp file is named .tmp-<target>.<writer pid>.<random>: clean-up removes it only once its writer
# is gone, so a reader opening the workspace never deletes a file another process is writing.
_TMP_FILE = re.compile(r"^\.tmp-.+\.(\d+)\.[A-Za-z0-9_]+$")
STALE_AFTER_S = 24 * 3600  # a temp file this old is stale whoever wrote it (another host, a reused pid)


def _temp_prefix(path: Path) -> str:
    return f"{TMP_PREFIX}{path.name}.{os.getpid()}."


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
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
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
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
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")  # unique per writer
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
    """Delete temp files whose writer is gone (killed mid-write); returns how many.

    A temp file whose writing process is alive is never touched, so opening a workspace while
    another thread, tab or process writes to it is safe. Files without a readable pid, or older
    than ``STALE_AFTER_S``, count as stale once they are an hour old.
    """
    n = 0
    now = time.time()
    for p in Path(folder).rglob(TMP_PREFIX + "*"):
        try:
            if not p.is_file():
                continue
            age = now - p.stat().st_mtime
        except FileNotFoundError:  # its writer just renamed it into place
            continue
        m = _TMP_FILE.match(p.name)
        stale = age > STALE_AFTER_S or (not _alive(int(m.group(1))) if m else age > 3600)
        if stale:
            p.unlink(missing_ok=True)
            n += 1
    return n


_STALE_EXPORT = re.compile(r"^\.(.+)\.(tmp|old)-(\d+)-[0-9a-f]+(\.build|\.complete)?$")
COMPLETE_SUFFIX = ".complete"  # ``.<name>.tmp-<pid>-<hex>.complete``: that folder was written in full


def remove_stale_exports(folder: str | Path) -> int:
    """Recover, then delete, the hidden folders of exports that were killed; returns how many went.

    An export builds ``.<name>.tmp-<pid>-<hex>``, marks it complete, moves the old ``<name>`` aside to
    ``.<name>.old-<pid>-<hex>`` and renames the new one into place. Killed between those renames,
    ``<name>`` is missing: the complete new folder takes its place, else the old one goes back. A
    folder whose process is still alive (an export running now) is never touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = []
    for p in folder.iterdir():
        m = _STALE_EXPORT.match(p.name)
        if m and not _alive(int(m.group(3))):
            stale.append((m, p))
    for m, p in stale:  # first put back any export whose swap was cut short
        name, kind, suffix = m.group(1), m.group(2), m.group(4)
        target = folder / name
        if suffix or target.exists() or not p.is_dir():
            continue
        complete = p.with_name(p.name + COMPLETE_SUFFIX).exists()
        if (kind == "tmp" and complete) or (kind == "old" and not any(
                q.name.startswith(f".{name}.tmp-") and q.name.endswith(COMPLETE_SUFFIX) for _, q in stale)):
            p.rename(target)
    n = 0
    for _, p in stale:
        if p.exists() or p.is_symlink():
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
