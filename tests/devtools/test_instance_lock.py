"""A data directory in use refuses a second run; a lock file left by a crash does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.instance_lock import LOCK_FILE, AlreadyRunning, holding


def test_a_second_holder_of_the_same_directory_is_refused_with_the_owner(tmp_path: Path) -> None:
    with holding(tmp_path), pytest.raises(AlreadyRunning) as refused, holding(tmp_path):
        pytest.fail("two holders of one data directory")
    assert f"already running (pid {os.getpid()})" in str(refused.value)


def test_the_directory_is_free_again_once_released(tmp_path: Path) -> None:
    with holding(tmp_path):
        pass
    with holding(tmp_path) as lock:
        assert lock.read_text() == f"{os.getpid()}\n"


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """The other process takes the lock and is killed: the kernel released it."""
    take = (
        "import sys, time; from pathlib import Path; from devtools.instance_lock import holding\n"
        "with holding(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(120)\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", take, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline() == "held\n"
        refused = rf"already running \(pid {other.pid}\)"
        with pytest.raises(AlreadyRunning, match=refused), holding(tmp_path):
            pass
    finally:
        other.kill()
        other.wait()
        if other.stdout is not None:
            other.stdout.close()
    assert (tmp_path / LOCK_FILE).read_text() == f"{other.pid}\n"  # left behind, stale
    with holding(tmp_path):
        pass
