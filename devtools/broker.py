"""A real single-node Apache Kafka broker (KRaft) for development and tests.

The official jars are resolved from Maven Central by ``deploy/kafka/pom.xml``
into a cache outside the repository, keyed by the pom's hash, so a second
start needs no network and takes seconds. ``make run`` and the pytest fixtures
both use :class:`LocalKafka`; nothing else in leadflow starts a broker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.topic_admin import wait_until_ready

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leadflow"
    return Path(os.environ.get("LEADFLOW_CACHE_DIR", default))


def resolve_jars(pom: Path = POM) -> Path:
    """The folder holding the broker's classpath, resolved once per pom content."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    jars = cache_root() / f"kafka-jars-{digest}"
    if (jars / ".complete").exists():
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Kafka jars; install it first")
    partial = jars.with_name(jars.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("resolving the Kafka jars with Maven into %s", jars)
    subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={partial}", "-DincludeScope=runtime"],
        check=True,
    )  # fmt: skip
    shutil.rmtree(jars, ignore_errors=True)
    partial.rename(jars)
    (jars / ".complete").touch()
    return jars


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


class LocalKafka:
    """One combined broker/controller node on loopback, with its data in ``data_dir``.

    Stopping keeps the data, so ``start()`` again is a broker restart (the
    reliability tests rely on that); ``wipe()`` forgets everything.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 9092,
        controller_port: int | None = None,
        heap: str = "512m",
        log_level: str = "INFO",
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "3",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.backoff.ms": "1000",
        }
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(
            LOG4J2.format(log_file=self.log_file, level=self.log_level)
        )
        return config

    def _java(self, jars: Path, main: str, *args: str) -> list[str]:
        return [
            shutil.which("java") or "java",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            # a short-lived tool starts faster without the optimising compiler
            *(["-XX:TieredStopAtLevel=1"] if main != "kafka.Kafka" else []),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Format the storage on first use, start the node, wait until it accepts clients."""
        jars = resolve_jars()
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            subprocess.run(
                self._java(jars, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                           "-c", str(config)),
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        out = (self.data_dir / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            self._java(jars, "kafka.Kafka", str(config)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches our supervisor, which stops it in order
        )
        out.close()
        try:
            self._wait_until_listening(timeout)
            # a thread of its own, so start() also works from inside a running event loop
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, wait_until_ready(self.bootstrap_servers, timeout)).result()
        except BaseException:
            self.kill()  # never leave a half-started broker behind
            raise

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Kafka exited at start; see {self.log_file}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"Kafka did not listen on {self.port} in {timeout}s")

    def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown (SIGTERM); SIGKILL only when it does not finish in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """A crash: SIGKILL, no clean shutdown."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
