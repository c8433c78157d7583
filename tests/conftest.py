"""Fixtures for integration and end-to-end tests: a real Apache Kafka broker and a real Milvus Lite server,
started through the same launchers as ``eddy up``, once per test session; every test gets its
own topic prefix, consumer group and collection, and (when it needs one) its own worker process.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from eddy.stack import Stack
from infra.kafka import KafkaBroker
from infra.milvus import MilvusLiteServer
from streams.admin import ensure_topics
from streams.client import EddyClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eddy-home")


@pytest.fixture(scope="session")
def kafka(stack_home: Path) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(stack_home, free_port(), free_port(), heap_mb=512)
    broker.start()
    yield broker
    broker.stop()


def make_milvus(root: Path) -> MilvusLiteServer:
    return MilvusLiteServer(root / "milvus", free_port(), root / "logs" / "milvus.log", root / "run" / "milvus.pid")


@pytest.fixture(scope="session")
def milvus(stack_home: Path) -> Iterator[MilvusLiteServer]:
    server = make_milvus(stack_home)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_milvus(tmp_path: Path) -> Iterator[MilvusLiteServer]:
    """A server of its own, for tests that kill or restart it."""
    server = make_milvus(tmp_path)
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def tiny_buffer_milvus(tmp_path: Path) -> Iterator[MilvusLiteServer]:
    """A server whose 64 KiB write buffer flushes every few hundred rows (rows spread over many segments)."""
    server = make_milvus(tmp_path)
    server.memtable_limit_bytes = 64 * 1024
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared across the session's workers so the generator's GGUF is converted once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(kafka: KafkaBroker, milvus: MilvusLiteServer, tmp_path: Path, models_home: Path) -> Settings:
    """Settings isolated for one test: unique topic prefix, group and collection; smallest real generator."""
    tag = uuid.uuid4().hex[:8]
    home = tmp_path / "home"
    (home).mkdir()
    (home / "models").symlink_to(models_home, target_is_directory=True)
    s = Settings(
        home=home, kafka_bootstrap=kafka.bootstrap, milvus_uri=milvus.uri, topic_prefix=f"t{tag}.",
        group_id=f"eddy-test-{tag}", collection=f"c{tag}", generator="smollm2-135m", max_new_tokens=24,
        partitions=2, log_level="INFO",
    )
    ensure_topics(s)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[EddyClient]:
    c = EddyClient.from_settings(settings)
    yield c
    c.close()


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    """Worker control for the test's settings (Kafka and Milvus are the session's). Stops the worker after."""
    s = Stack(settings)
    yield s
    s.stop_worker(kill=True)
