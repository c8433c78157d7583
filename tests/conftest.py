"""Fixtures for integration and end-to-end tests: a real Apache Kafka broker and a real Milvus Lite server,
started through the same launchers as ``eddy up``, once per test session; every test gets its
own topic prefix, consumer group and collection, and (when it needs one) its own worker process.

Also: the ``unit`` / ``integration`` / ``e2e`` marker of each test, from its folder; and
:func:`time_left`, which keeps every wait of a test (a subprocess, a worker start) inside the
test's pytest-timeout limit, so that it fails with its own message rather than being killed.
"""

from __future__ import annotations

import os
import socket
import time
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


TESTS = Path(__file__).resolve().parent
#: The marker every test of a folder gets: ``pytest -m unit`` runs the fakes-only tests.
MARKER_BY_FOLDER = {"unit": pytest.mark.unit, "integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except (ValueError, IndexError):
            continue
        marker = MARKER_BY_FOLDER.get(folder)
        if marker is not None:
            item.add_marker(marker)


#: When pytest-timeout stops the running test (``time.monotonic()``); None: no limit.
_deadline: float | None = None


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings) -> None:
    """Notes the running test's limit; returns None, so pytest-timeout still sets its own timer."""
    global _deadline
    _deadline = time.monotonic() + settings.timeout


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    global _deadline
    _deadline = None


def time_left(cap_s: float, margin_s: float = 20.0) -> float:
    """``cap_s``, or what is left of the running test's pytest-timeout limit less ``margin_s`` when that
    is less (at least 1 s): a wait given this times out, with its own message, before the test is killed."""
    if _deadline is None:
        return cap_s
    return max(1.0, min(cap_s, _deadline - time.monotonic() - margin_s))


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eddy-home")


@pytest.fixture(scope="session")
def kafka(stack_home: Path) -> Iterator[KafkaBroker]:
    """The session's broker; ``EDDY_TEST_KAFKA=container``: the same Kafka in a Docker container
    (tests/containers/kafka_container.py; skipped with the reason where no Docker daemon can run)."""
    if os.environ.get("EDDY_TEST_KAFKA") == "container":
        from tests.containers.kafka_container import container_broker

        with container_broker(stack_home / "logs") as container:
            yield container
        return
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


@pytest.fixture(scope="session")
def python_docs_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``data`` folder holding Debian's python3.11-doc, fetched once per session (``apt-get download``).

    A test links ``settings.home / "data"`` to it; ``ensure_python_docs`` then finds the sources there.
    """
    from pipelines.python_docs import ensure_python_docs

    data = tmp_path_factory.mktemp("data")
    ensure_python_docs(data)
    return data


@pytest.fixture
def settings(kafka: KafkaBroker, milvus: MilvusLiteServer, tmp_path: Path, models_home: Path) -> Settings:
    """Settings isolated for one test: unique topic prefix, group and collection; smallest real generator.

    ``home`` is under ``tmp_path``, so workers' faust data (``home/faust``, see ``build_app``) is too.
    """
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


class TestStack(Stack):
    """:class:`Stack` whose worker start waits at most 300 s (first start: the generator's conversion),
    and never past the test's own limit (``Stack``'s 900 s default is for a user's first ``eddy up``)."""

    __test__ = False  # not a test class

    def start_worker(self, agents: tuple[str, ...] | None = None, timeout_s: float = 300.0) -> int:
        args = () if agents is None else (agents,)
        return super().start_worker(*args, timeout_s=time_left(timeout_s))


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    """Worker control for the test's settings (Kafka and Milvus are the session's). Stops the worker after."""
    s = TestStack(settings)
    yield s
    s.stop_worker(kill=True)
