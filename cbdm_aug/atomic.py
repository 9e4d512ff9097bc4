"""Files written whole or not at all: write a temporary file beside the target, then rename it.

A crash, a stop or a full disk leaves either the old file or the new one, never half of one, and
no temporary file behind. A write error names the target: Python's ``OSError`` from ``write()``
carries no file name, and "disk full" should say which file it was.

A writer killed outright (SIGKILL, power loss) cannot clean up, so the next write of the same
target removes the temporary files of writers that are no longer running. This is the only module
that renames a temporary file over its target; every file written whole goes through it.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path


def _temporary(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def temporaries(path: str | os.PathLike) -> dict[Path, int]:
    """The temporary files (or folders) that writers of ``path`` left beside it, with each writer's pid."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp(\d+)(\..*)?")
    try:
        found = {p: pattern.fullmatch(p.name) for p in path.parent.iterdir()}
    except OSError:  # no folder yet: nothing left behind
        return {}
    return {p: int(m.group(1)) for p, m in found.items() if m}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def remove_temporaries(path: str | os.PathLike, only_dead: bool = True) -> None:
    """Remove what killed writers of ``path`` left; with ``only_dead=False`` also those of live
    processes (for a caller that knows it is the only writer, such as rank 0's checkpoints)."""
    for p, pid in temporaries(path).items():
        if pid != os.getpid() and not (only_dead and _running(pid)):
            _remove(p)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", previous: str | os.PathLike | None = None):
    """Yields a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    ``suffix`` is for writers that pick the format from the name (".png", ".npz"). With ``previous``,
    the file being replaced is kept under that name (a hard link, no copy) just before the rename.
    The temporary path may also be made a folder (see ``atomic_dir``) or an HDF5 file opened by name.
    """
    path = Path(path)
    remove_temporaries(path)
    tmp = _temporary(path, suffix)
    link = None if previous is None else _temporary(Path(previous))
    try:
        yield tmp
        if link is not None and path.exists():
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, previous)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        _remove(tmp)
        if link is not None:
            link.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yields an empty temporary folder beside ``path``; when the block ends without error it is
    renamed to ``path``, which must not exist or be empty. Otherwise nothing is left behind."""
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        yield tmp


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = False,
                       previous: str | os.PathLike | None = None) -> None:
    """``path`` holds ``data`` or its old contents, never part of ``data``. ``fsync`` makes the bytes
    durable before the rename; ``previous`` keeps the replaced file under that name."""
    with atomic_path(path, previous=previous) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())
