"""One writer per experiment directory.

Two searches on one directory would both run every trial and overwrite each other's
files. The search (or a parallel search's chief) holds an exclusive lock on
``<experiment>/.lock`` for its whole life, and writes its pid, host and start time
into the file so that a second search can say who holds it. The lock is the kernel's
(`fcntl.flock`), so it dies with its process: a file left behind by a killed search
holds no lock, and the next search takes it over. Workers of a parallel search write
through the chief's oracle and take no lock; commands that only read take none.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kt_pipeline.errors import UserInputError

__all__ = ["LOCK_FILE", "experiment_lock"]

log = logging.getLogger("kt_pipeline")

LOCK_FILE = ".lock"


def _holder(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def experiment_lock(experiment: Path, *, command: str = "search") -> Iterator[None]:
    """Holds the experiment's lock for the duration of the block.

    Raises:
        UserInputError: another live process holds it; the message names its pid,
            host and start time.
    """
    path = experiment / LOCK_FILE
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserInputError(
            f"experiment directory {str(experiment)!r} cannot hold its lock file: "
            f"{error.strerror or error}"
        ) from error
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path.read_text(encoding="utf-8", errors="replace"))
            raise UserInputError(
                f"experiment directory {str(experiment)!r} is in use by another "
                f"{holder.get('command', 'search')} (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('started', '?')}): wait for it "
                "to end, or choose another --experiment-dir"
            ) from None
        stale = _holder(path.read_text(encoding="utf-8", errors="replace"))
        if stale:  # its process ended without removing the file: the lock is free
            log.info(
                "experiment lock: taking over from pid %s on %s (no longer running)",
                stale.get("pid", "?"),
                stale.get("host", "?"),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": command,
        }
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(record).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(handle, 0)  # an empty file: released by an orderly exit
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
