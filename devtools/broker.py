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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shared.settings import LeadflowSettings
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


SCRAM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class BrokerSecurity:
    """A SASL_SSL listener instead of PLAINTEXT: what a managed Kafka asks of its clients.

    ``keystore`` is a PEM file with the broker's private key (PKCS#8, unencrypted) and
    its certificate chain, for ``127.0.0.1``; ``ca_file`` is the CA that signed it, which
    clients trust. Every user in ``users`` (name to password) can log in with
    SCRAM-SHA-512 (credentials stored when the storage is formatted) and with PLAIN; the
    broker itself connects to its own listener as ``broker_user``, the first of them.
    """

    ca_file: Path
    keystore: Path
    users: Mapping[str, str]

    @property
    def broker_user(self) -> str:
        return next(iter(self.users))

    def properties(self, port: int, controller_port: int) -> dict[str, str]:
        user = self.broker_user
        password = self.users[user]
        plain_users = "".join(f' user_{name}="{secret}"' for name, secret in self.users.items())
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": f"{SCRAM},PLAIN",
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{user}" password="{password}";'
            ),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{user}" password="{password}"{plain_users};'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }

    def format_arguments(self) -> list[str]:
        """``StorageTool format`` arguments storing each user's SCRAM credentials (KIP-900)."""
        arguments: list[str] = []
        for name, secret in self.users.items():
            arguments += ["--add-scram", f"{SCRAM}=[name={name},password={secret}]"]
        return arguments


class LocalKafka:
    """One combined broker/controller node on loopback, with its data in ``data_dir``.

    Stopping keeps the data, so ``start()`` again is a broker restart (the
    reliability tests rely on that); ``wipe()`` forgets everything. With ``security``
    its one client listener is SASL_SSL (see :class:`BrokerSecurity`), else PLAINTEXT.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 9092,
        controller_port: int | None = None,
        heap: str = "512m",
        log_level: str = "INFO",
        security: BrokerSecurity | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.security = security
        self.port = port
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_settings(
        self, base: LeadflowSettings | None = None, user: str | None = None
    ) -> LeadflowSettings:
        """``base`` (default settings if none) pointed at this broker, logged in as ``user``
        (the broker's own user if none) over SASL_SSL when the broker has security."""
        fields: dict[str, object] = {"kafka_bootstrap_servers": self.bootstrap_servers}
        if self.security is not None:
            name = user or self.security.broker_user
            fields |= {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": SCRAM,
                "kafka_sasl_username": name,
                "kafka_sasl_password": self.security.users[name],
                "kafka_ssl_ca_file": self.security.ca_file,
            }
        if base is None:
            return LeadflowSettings.model_validate(fields)
        return type(base).model_validate({**base.model_dump(), **fields})

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
        if self.security is not None:
            props |= self.security.properties(self.port, self.controller_port)
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
                           "-c", str(config),
                           *(self.security.format_arguments() if self.security else [])),
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
                ready = wait_until_ready(self.client_settings(), timeout)
                pool.submit(asyncio.run, ready).result()
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
