"""Exceptions for bad user input. The CLI prints these as one line, without a traceback."""
import errno


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
