"""More lead-stage workers in one scoring service: ``LEADFLOW_SCORING_PROCESSES``.

Scoring is CPU-bound, and a Python process scores on one core. The workers already share
the partitions through their consumer group, and each partition's transactional producer
fences whoever held it before, so another worker process is only another group member:
the exactly-once recipe does not change. The service's first worker runs in the HTTP
process, as with one; the others are child processes (``spawn``: a fresh interpreter,
nothing of the parent's event loop or Kafka clients) that run a worker and nothing else.
The account stage stays in the HTTP process.

Each child holds one end of a pipe to the parent. It reports its worker consuming or not
through it, and it stops when the pipe closes: a parent that is SIGKILLed takes its
children with it instead of leaving members nobody manages. A child that dies makes the
service's ``/healthz`` fail, so the orchestrator restarts the whole service, as it does
when the in-process worker dies.

The children's metrics reach the parent's ``/metrics`` through prometheus_client's
multiprocess mode (:func:`share_metrics`), set up before any metric exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import tempfile
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from services.scoring.model import ScoringModel
from services.scoring.settings import ScoringSettings

log = logging.getLogger(__name__)

METRICS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
STATUS_SECONDS = 1.0
"""How often a child looks at its worker to report a change of consuming."""
STOP_SECONDS = 30.0
"""How long a child has to end its transaction and leave the group on shutdown."""


def share_metrics() -> None:
    """Let every process of the service write its metrics where ``/metrics`` reads them.

    Call it before prometheus_client is imported: its value class is chosen then."""
    if not os.environ.get(METRICS_DIRECTORY):
        os.environ[METRICS_DIRECTORY] = tempfile.mkdtemp(prefix="leadflow-scoring-metrics-")


class WorkerProcesses:
    """The child workers of one service: started and stopped with its lifespan."""

    def __init__(self, settings: ScoringSettings, model: ScoringModel, count: int) -> None:
        self._settings = settings
        self._model = model
        self._count = count
        self._children: list[tuple[BaseProcess, Connection]] = []
        self._consuming: dict[int, bool] = {}

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        for number in range(1, self._count + 1):
            ours, theirs = context.Pipe()
            child = context.Process(
                target=run_child,
                args=(self._settings, self._model, theirs, number),
                name=f"scoring-worker-{number}",
                daemon=True,
            )
            child.start()
            theirs.close()
            self._children.append((child, ours))
            self._consuming[number] = False
            loop.add_reader(ours.fileno(), self._read_status, number, ours)
        log.info("started %d more scoring worker processes", self._count)

    def _read_status(self, number: int, connection: Connection) -> None:
        try:
            self._consuming[number] = bool(connection.recv())
        except (EOFError, OSError):  # the child is gone: alive() says so
            asyncio.get_running_loop().remove_reader(connection.fileno())
            self._consuming[number] = False

    def alive(self) -> bool:
        return all(child.is_alive() for child, _ in self._children)

    def consuming(self) -> bool:
        return self.alive() and all(self._consuming.values())

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for _, connection in self._children:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(connection.fileno())
            connection.close()  # the child's signal to leave the group and end
        for child, _ in self._children:
            await loop.run_in_executor(None, child.join, STOP_SECONDS)
            if child.is_alive():
                log.warning("%s did not stop in %.0f s: killed", child.name, STOP_SECONDS)
                child.kill()
                await loop.run_in_executor(None, child.join)
            if child.pid is not None and os.environ.get(METRICS_DIRECTORY):
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(child.pid)  # type: ignore[no-untyped-call]
        self._children.clear()


def run_child(
    settings: ScoringSettings, model: ScoringModel, parent: Connection, number: int
) -> None:
    """A child's whole life: one worker until the parent closes the pipe or goes away.

    Its log lines name it (``scoring-worker-<n>``): the partitions each process took and
    released are told apart in the service's one log."""
    from shared.log import configure_logging

    configure_logging(f"scoring-worker-{number}", settings.log_level, settings.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to act on
    asyncio.run(_serve_worker(settings, model, parent))


async def _serve_worker(settings: ScoringSettings, model: ScoringModel, parent: Connection) -> None:
    from services.scoring.worker import ScoringWorker
    from shared.background import BackgroundLoop

    worker = BackgroundLoop("scoring-worker", lambda: ScoringWorker(settings, model), settings)
    parent_gone = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(parent.fileno(), parent_gone.set)  # readable only at EOF: nothing is sent
    loop.add_signal_handler(signal.SIGTERM, parent_gone.set)
    worker.start()
    reported: bool | None = None
    try:
        while not parent_gone.is_set() and worker.alive():
            if (now := worker.consuming()) != reported:
                reported = now
                parent.send(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(parent_gone.wait(), STATUS_SECONDS)
    finally:
        loop.remove_reader(parent.fileno())
        await worker.stop()
