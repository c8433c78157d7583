"""Apache Kafka broker in KRaft mode (single node, combined broker+controller, loopback).

The broker's jars are resolved once by Maven from the pinned ``infra/maven/pom.xml``
(``mvn dependency:copy-dependencies``) into ``<home>/kafka/libs``; the storage is formatted
once with Kafka's StorageTool; then ``kafka.Kafka server.properties`` runs detached with its
log in ``<home>/logs/kafka.log``.
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from pathlib import Path

from config.settings import MAX_RECORD_BYTES
from infra.process import LaunchError, port_open, read_pid, spawn, stop, wait_until

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "maven" / "pom.xml"
KAFKA_VERSION = "3.9.1"


def random_cluster_id() -> str:
    """A KRaft cluster id as ``kafka-storage random-uuid`` prints it: Kafka's ``Uuid.toString()``, the 16
    random bytes in unpadded base64url, drawn again when it starts with ``-`` (as ``Uuid.randomUuid()``
    does), which the storage tool's argument parser would take for an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """One Apache Kafka broker under ``home`` (``home/kafka``: libs, config, data; ``home/logs/kafka.log``).

    ``port`` is the client listener, ``controller_port`` the KRaft controller listener, both on
    127.0.0.1. ``heap_mb`` sets ``-Xmx``. Raises LaunchError (naming the log file) when Java,
    Maven or the broker fail.
    """

    def __init__(self, home: Path, port: int, controller_port: int, heap_mb: int = 512) -> None:
        self.root = home / "kafka"
        self.libs = self.root / "libs"
        self.data = self.root / "data"
        self.config = self.root / "server.properties"
        self.log4j = self.root / "log4j.properties"
        self.log_file = home / "logs" / "kafka.log"
        self.pid_file = home / "run" / "kafka.pid"
        self.port = port
        self.controller_port = controller_port
        self.heap_mb = heap_mb

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return read_pid(self.pid_file) is not None and port_open("127.0.0.1", self.port)

    def ensure_jars(self) -> None:
        """Resolve the broker's classpath with Maven (once; about 56 MB from Maven Central)."""
        marker = self.libs / f".kafka-{KAFKA_VERSION}"
        if marker.exists():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LaunchError("Maven (mvn) is not on PATH; it is needed once to fetch Apache Kafka's jars")
        if shutil.which("java") is None:
            raise LaunchError("Java is not on PATH; Apache Kafka needs Java 17+")
        tmp = self.libs.with_name("libs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("resolving Apache Kafka %s jars with Maven into %s", KAFKA_VERSION, self.libs)
        proc = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise LaunchError(f"mvn dependency:copy-dependencies failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        shutil.rmtree(self.libs, ignore_errors=True)
        tmp.rename(self.libs)
        marker.touch()

    def _java(self, main: str, *args: str, heap: bool = False) -> list[str]:
        argv = ["java"]
        if heap:
            argv += [f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m", "-XX:+UseG1GC"]
        argv += [f"-Dlog4j.configuration=file:{self.log4j}", "-cp", f"{self.libs}/*", main, *args]
        return argv

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.data}",
                "num.partitions=1",
                "default.replication.factor=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.cleaner.enable=true",
                f"message.max.bytes={MAX_RECORD_BYTES}",
                f"replica.fetch.max.bytes={MAX_RECORD_BYTES}",
                "",
            ])
        )
        self.log4j.write_text(
            "\n".join([
                "log4j.rootLogger=INFO, file",
                "log4j.appender.file=org.apache.log4j.FileAppender",
                f"log4j.appender.file.File={self.log_file}",
                "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
                "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
                "log4j.logger.kafka=INFO",
                "log4j.logger.org.apache.kafka=INFO",
                "",
            ])
        )

    def _format_storage(self) -> None:
        if (self.data / "meta.properties").exists():
            return
        cluster_id = random_cluster_id()
        proc = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config)),
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise LaunchError(f"formatting KRaft storage failed:\n{proc.stdout}\n{proc.stderr}")

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the broker (idempotent) and wait until it accepts clients and serves metadata."""
        if self.running:
            return
        if port_open("127.0.0.1", self.port):
            raise LaunchError(
                f"port {self.port} is taken by another process; set EDDY_KAFKA_PORT to a free port "
                "(or EDDY_KAFKA_BOOTSTRAP to use that Kafka)"
            )
        self.ensure_jars()
        self._write_config()
        self._format_storage()
        spawn(self._java("kafka.Kafka", str(self.config), heap=True), pid_file=self.pid_file,
              log_file=self.log_file.with_suffix(".out"))
        wait_until(self._ready, timeout_s=timeout_s, what="Apache Kafka broker", log_file=self.log_file,
                   alive=lambda: read_pid(self.pid_file) is not None)
        log.info("Apache Kafka %s ready on %s", KAFKA_VERSION, self.bootstrap)

    def _ready(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any client error means "not ready yet"
            return False
        return bool(md.brokers)

    def stop(self, kill: bool = False) -> bool:
        """Stop the broker (SIGTERM: controlled shutdown; ``kill``: SIGKILL). True if it was running."""
        return stop(self.pid_file, what="Apache Kafka broker", timeout_s=30, kill=kill)
