"""The test session's Kafka broker in a container (``EDDY_TEST_KAFKA=container``; tests/conftest.py ``kafka``).

The same Apache Kafka as the embedded broker (the jars of ``infra/maven/pom.xml``), one KRaft node in a
testcontainers ``DockerContainer`` of the locally built ``eddy-test/kafka`` image, its client port
published on 127.0.0.1 only and advertised as that address, so host processes (tests, workers) reach it
as they reach the embedded one. Without a usable Docker daemon the tests that need the broker are
skipped with the reason.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.containers.daemon import DockerUnavailable, acquire, free_port, release
from tests.containers.images import ensure_kafka_image


@dataclass(frozen=True)
class ContainerBroker:
    """What the ``kafka`` fixture's users need of a broker: its bootstrap address."""

    port: int
    container_id: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def _ready(bootstrap: str, security: dict[str, str]) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **security}).list_topics(timeout=2)
    except Exception:  # any client error means "not ready yet"
        return False
    return bool(md.brokers)


@contextlib.contextmanager
def container_broker(log_dir: Path, timeout_s: float = 120.0, *,
                     sasl_users: dict[str, str] | None = None) -> Iterator[ContainerBroker]:
    """Start the broker container (building its image when needed); its log is saved to ``log_dir`` at the end.
    ``sasl_users`` (user -> password): the client listener takes SASL_PLAINTEXT / PLAIN for them."""
    try:
        daemon = acquire()
    except DockerUnavailable as exc:
        pytest.skip(f"EDDY_TEST_KAFKA=container: no Docker daemon: {exc}")
    container = None
    try:
        from testcontainers.core.container import DockerContainer

        image = ensure_kafka_image(daemon.client())
        port = free_port()
        container = (DockerContainer(image)
                     .with_name(f"eddy-test-kafka-{port}")
                     .with_env("KAFKA_PORT", str(port))
                     .with_env("KAFKA_ADVERTISED", f"127.0.0.1:{port}"))
        security = {}
        if sasl_users:
            container.with_env("KAFKA_SASL_USERS", " ".join(f"{u}:{p}" for u, p in sasl_users.items()))
            user, password = next(iter(sasl_users.items()))
            security = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                        "sasl.username": user, "sasl.password": password}
        # Published on 127.0.0.1 only: docker-py takes (address, port); with_bind_ports takes a port alone.
        container.ports[f"{port}/tcp"] = ("127.0.0.1", port)
        container.start()
        broker = ContainerBroker(port, container.get_wrapped_container().id)
        deadline = time.monotonic() + timeout_s
        while not _ready(broker.bootstrap, security):
            wrapped = container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status != "running" or time.monotonic() > deadline:
                logs = wrapped.logs(tail=30).decode(errors="replace")
                raise RuntimeError(f"Kafka container {wrapped.status}, not ready after "
                                   f"{timeout_s:.0f} s; its last lines:\n{logs}")
            time.sleep(0.5)
        yield broker
    finally:
        if container is not None:
            with contextlib.suppress(Exception):
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / f"kafka-container-{port}.log").write_bytes(container.get_wrapped_container().logs())
            container.stop()
        release(daemon)
