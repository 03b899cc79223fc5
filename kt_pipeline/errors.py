"""The exceptions kt-pipeline raises on purpose, all under `KtPipelineError`.

`UserInputError` means "the user gave us something we cannot use": the CLI turns it
into a single line on stderr and exit code 2. Anything outside this family is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno

__all__ = [
    "DiskFullError",
    "ExportVerificationError",
    "KtPipelineError",
    "SearchAbortedError",
    "UserInputError",
    "is_disk_full",
]


class KtPipelineError(Exception):
    """The base of every error kt-pipeline raises on purpose, so that a caller can
    catch ours apart from TensorFlow's or a bug's."""


class UserInputError(KtPipelineError, ValueError):
    """Bad input from the user: a config value, a data file, a path.

    The message names the field, file or column and shows the value received,
    so it can be printed on its own without a traceback.
    """


class SearchAbortedError(KtPipelineError, RuntimeError):
    """Too many trials in a row failed with an error: the search itself is broken.

    The CLI prints its one-line message (the count and the last trial's reason; the
    tracebacks are in each trial's ``error.txt``) and exits with code 1.
    """


class ExportVerificationError(KtPipelineError, RuntimeError):
    """An export whose reloaded SavedModel does not predict what
    the in-memory model predicts. It is not published as a version; the CLI prints the
    message and exits with code 1."""


class DiskFullError(KtPipelineError, OSError):
    """The disk (or quota) filled up while the search wrote its files. The running
    trial is left to run again, and a finished export is never half-replaced; the CLI
    prints the one-line message and exits with code 1."""


_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says the disk or quota is
    full. h5py and TensorFlow report it in their message rather than in `errno`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(current) for text in _DISK_FULL):
            return True
        current = current.__cause__ or current.__context__
    return False
