"""A leadflow service as a real OS process: what ``make run``, the fault tests and the
benchmarks all start, stop, kill and restart.

Each process gets its environment (``LEADFLOW_*``) and its own session, so a
Ctrl-C meant for the supervisor does not reach it before the supervisor
decides the order of shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import httpx

LineSink = Callable[[str, str], None]
"""Receives (service name, one line of its output)."""


class ServiceProcess:
    """``python -m services.<name>`` with an environment; output to a file or a sink."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        log_file: Path | None = None,
        sink: LineSink | None = None,
        inherit_environment: bool = True,
    ) -> None:
        """``inherit_environment=False``: ``env`` is the whole environment, not additions."""
        self.name = name
        self.env = {**os.environ, **env} if inherit_environment else dict(env)
        if port is not None:
            self.env["LEADFLOW_PORT"] = str(port)
        self.port = port
        self.log_file = log_file
        self.sink = sink
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ServiceProcess:
        output: IO[bytes] | int = subprocess.PIPE
        if self.log_file is not None:
            output = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.log_file is not None:
            assert not isinstance(output, int)
            output.close()
        elif self.process.stdout is not None:
            stream, sink = self.process.stdout, self.sink or _discard
            threading.Thread(target=_relay, args=(self.name, stream, sink), daemon=True).start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200: its dependencies are reachable."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with {self.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s")
            time.sleep(0.1)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: a clean shutdown; SIGKILL only if it does not end in time."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed, nothing closed."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()


def _relay(name: str, stream: IO[bytes], sink: LineSink) -> None:
    for raw in iter(stream.readline, b""):
        sink(name, raw.decode(errors="replace"))


def _discard(_: str, __: str) -> None:
    return None
