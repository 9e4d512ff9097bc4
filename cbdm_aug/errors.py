"""Exceptions for bad user input. The CLI prints these as one line, without a traceback; a full disk
within a stage of work (``stage_errors``) is one of them."""
import contextlib
import errno
from pathlib import Path

from cbdm_aug.stopping import Stopped


class UserError(ValueError):
    """Bad input from the user: the message names the file or value and says what is accepted."""


class ConfigError(UserError):
    """Options or settings that are invalid or contradict each other."""


class NoSpace(UserError):
    """A write refused before it starts, because it cannot fit where it goes."""

    def __init__(self, filename, reason: str, hint: str = "free space and rerun"):
        super().__init__(f"{filename}: {reason}; {hint}")
        self.filename, self.strerror = str(filename), reason


# No space left, a file-size limit (ulimit -f) or a quota: the user frees space and reruns.
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DISK_FULL_TEXT = ("No space left on device", "File too large", "Disk quota exceeded")


def exception_chain(e: BaseException | None):
    """``e``, then the exception it was raised from or while handling, and so on down the chain."""
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def is_disk_full(e: BaseException | None) -> bool:
    """Whether ``e``, or an exception it was raised from, is a write that ran out of space. h5py
    reports the errno only inside its message, and as a RuntimeError when closing a file, so the
    message is checked too."""
    return any(isinstance(x, NoSpace) or (isinstance(x, OSError) and x.errno in _DISK_FULL_ERRNOS) or (
        isinstance(x, (OSError, RuntimeError)) and any(t in str(x) for t in _DISK_FULL_TEXT))
        for x in exception_chain(e))


class DiskFull(UserError):
    """A stage ran out of disk space: one line naming the stage and the file, and how to go on."""

    def __init__(self, stage: str, error: BaseException, folder: Path | None = None):
        file = _filename(error)
        where = f" while writing {file}" if file else f" while writing in {folder}" if folder else ""
        super().__init__(f"disk full in stage {stage!r}{where} ({_reason(error)}); free space and run the same "
                         "command again: it resumes there")


def _filename(e: BaseException) -> str | None:
    """The file named by ``e`` or an exception it was raised from (h5py names it only in its message)."""
    import re

    for x in exception_chain(e):
        if isinstance(x, (OSError, NoSpace)) and x.filename:
            return str(x.filename)
    for x in exception_chain(e):
        m = re.search(r"file ?name = '([^']+)'", str(x))
        if m:
            return m.group(1)
    return None


def _reason(e: BaseException) -> str:
    for x in exception_chain(e):
        if isinstance(x, (OSError, NoSpace)) and x.strerror:
            return x.strerror
    return "no space left on device"


@contextlib.contextmanager
def stage_errors(name: str, folder: Path | None = None):
    """Within the block, a full disk becomes ``DiskFull`` naming stage ``name`` (and ``folder``, the
    stage's outputs, where the error names no file), and a ``Stopped`` learns its stage."""
    try:
        yield
    except Stopped as e:
        e.stage = e.stage or name
        raise
    except Exception as e:
        if is_disk_full(e) and not isinstance(e, DiskFull):
            raise DiskFull(name, e, folder) from e
        raise
