"""One ``leadflow run`` or ``leadflow kafka`` per data directory, held by an OS file lock.

Two brokers on one data directory corrupt its KRaft quorum state, and two supervisors
would share one SQLite file. The lock is ``flock`` on a file in the data directory, held
as long as the process lives: the kernel drops it when the process ends, however it
ends, so a lock file left behind by a crash blocks nothing. The file holds the owner's
pid, only to say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "leadflow.lock"


class AlreadyRunning(RuntimeError):
    """Another process holds the data directory."""


@contextmanager
def holding(data_dir: Path) -> Iterator[Path]:
    """Hold ``data_dir`` for the block, or raise :class:`AlreadyRunning` at once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(
            f"already running (pid {owner}) on {data_dir}: stop it first, "
            "or give this one another --data-dir"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
