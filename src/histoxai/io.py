"""Atomic file and directory writes: a reader never sees a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from histoxai.errors import InputError, UserError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` on success.

    Works for files and directories. On error the temporary is removed and an
    existing ``path`` is left untouched.

    Example:
        >>> with atomic_path("out/report.json") as tmp:
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to {target} for {path}")
        if path.is_dir() and not path.is_symlink():
            replace_dir(target, path)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


COMMITTED = ".committed"
"""Marker file of an :func:`atomic_files` staging directory whose entries are all written."""


@contextlib.contextmanager
def atomic_files(out_dir: str | Path, owned: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success move each entry into ``out_dir`` as one unit.

    Unlike :func:`atomic_path` on a directory, ``out_dir`` itself is kept, so files other
    tools put there (DVC's ``.gitignore``) survive. Entries are moved into place only after
    all were written and the staging directory was marked committed; entries named in
    ``owned`` that this run did not write are removed (stale from an earlier run). On error
    nothing in ``out_dir`` changes. A kill while the entries are moved leaves the marked
    staging directory, and :func:`finish_interrupted` (the next run, under
    :func:`output_lock`) moves the rest, so ``out_dir`` never keeps files of two runs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming.", suffix=".tmp", dir=out_dir))
    try:
        yield tmp
        written = sorted(p.name for p in tmp.iterdir())
        plan = {"written": written, "stale": sorted(set(owned) - set(written))}
        (tmp / f"{COMMITTED}.part").write_text(json.dumps(plan))
        os.replace(tmp / f"{COMMITTED}.part", tmp / COMMITTED)  # the commit point
        _roll_forward(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _roll_forward(tmp: Path, out_dir: Path) -> None:
    """Move the entries of committed staging directory ``tmp`` into ``out_dir``; safe to
    repeat after a kill (an entry already moved is skipped)."""
    plan = json.loads((tmp / COMMITTED).read_text())
    trash = tmp / ".replaced"
    trash.mkdir(exist_ok=True)
    for name in plan["written"]:
        if (tmp / name).exists() or (tmp / name).is_symlink():  # else moved before a kill
            _move_in(tmp / name, out_dir / name, trash)
    for name in plan["stale"]:
        stale = out_dir / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        elif stale.exists() or stale.is_symlink():
            stale.unlink()


def _move_in(new: Path, dest: Path, trash: Path) -> None:
    """Rename ``new`` onto ``dest``; a directory ``dest`` is first moved into ``trash``."""
    if new.is_dir() and dest.is_dir() and not dest.is_symlink():
        os.replace(dest, trash / dest.name)
    os.replace(new, dest)


def finish_interrupted(out_dir: str | Path) -> list[Path]:
    """Finish or undo what killed writes into ``out_dir`` left there.

    A committed :func:`atomic_files` staging directory is moved in (its run had finished
    writing); any other temporary (``.*.tmp``: uncommitted staging, :func:`atomic_path`
    temporaries) is deleted. Call it while holding :func:`output_lock` on ``out_dir``.

    Returns:
        The temporaries found (all removed).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = sorted(p for p in out_dir.glob(".*.tmp") if p.is_dir() and not p.is_symlink())
    for tmp in found:
        if tmp.name.startswith(".incoming.") and (tmp / COMMITTED).is_file():
            _roll_forward(tmp, out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
    return found


def replace_dir(new: Path, path: Path) -> None:
    """Put directory ``new`` in the place of directory ``path`` and delete the old one.

    On Linux the two are exchanged in one atomic ``renameat2(RENAME_EXCHANGE)``, so
    ``path`` always exists; elsewhere the old directory is first renamed to
    ``.<name>.old-<pid>`` (:func:`clean_leftovers` puts it back if a kill lands between).
    """
    if not path.exists():  # first write: nothing to exchange with
        os.replace(new, path)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if _exchange(new, path):
        os.replace(new, old)
    else:
        os.replace(path, old)
        os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class OutputLockedError(UserError, ValueError):
    """Another process is writing the same output."""


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on output ``path`` (a sibling ``.<name>.lock`` file) or fail at once.

    The lock is an ``flock`` that the kernel drops when its process dies, so a killed writer
    never leaves a stale lock. The lock file itself stays (removing it would race).

    Raises:
        OutputLockedError: another process holds the lock.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "?"
            raise OutputLockedError(
                f"{path} is being written by another process (pid {owner}, lock {lock}); "
                "wait for it to finish"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def clean_leftovers(path: str | Path) -> list[Path]:
    """Remove what killed :func:`atomic_path` writes of ``path`` left beside it.

    That is ``.<name>.*.tmp`` directories and ``.<name>.old-<pid>`` copies of a replaced
    directory whose process is gone. Call it while holding :func:`output_lock` on
    ``path`` (a temporary of a live writer would otherwise be removed).

    Returns:
        The paths removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    olds = [p for p in path.parent.glob(f".{path.name}.old-*") if _dead_pid(p)]
    if olds and not path.exists():  # killed between the two renames: put the old one back
        os.replace(max(olds, key=lambda p: p.stat().st_mtime), path)
    for p in sorted(path.parent.glob(f".{path.name}.*")):
        stale = p.name.endswith(".tmp")
        if ".old-" in p.name:
            stale = _dead_pid(p)
        if stale and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _dead_pid(old: Path) -> bool:
    pid = old.name.rsplit(".old-", 1)[1]
    return pid.isdigit() and not _alive(int(pid))


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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_npy(path: Path, remedy: str):
    """``np.load(path, mmap_mode="r")``; a truncated or non-``.npy`` file is an
    :class:`InputError` naming ``path`` and ending with ``remedy`` (e.g. "run `histoxai prepare`")."""
    import numpy as np

    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path} is damaged (truncated or not a .npy file: {err}); {remedy}") from None
