"""Milvus Lite server fixtures for the vector-store tests (to be merged into conftest.py).

``milvus_server``: one server per test session, started with the same launcher as ``eddy up``
on a free port in a temporary directory, stopped at the end. ``private_milvus``: a server of
its own for one test, for tests that kill or restart it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.milvus import MilvusLiteServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_server(root: Path) -> MilvusLiteServer:
    return MilvusLiteServer(root / "milvus", free_port(), root / "logs" / "milvus.log", root / "run" / "milvus.pid")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLiteServer]:
    server = make_server(tmp_path_factory.mktemp("milvus-session"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_milvus(tmp_path: Path) -> Iterator[MilvusLiteServer]:
    server = make_server(tmp_path)
    server.start()
    yield server
    server.stop(kill=True)
