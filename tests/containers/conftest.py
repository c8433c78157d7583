"""Fixtures of the container tests (marker ``containers``): the Docker daemon — the tests are skipped, with
the reason, where none can be used or started (tests/containers/daemon.py) — and the slim Eddy image.
The image build times of the session are printed in the test summary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers.daemon import Daemon, DockerUnavailable, acquire, release
from tests.containers.images import BUILD_SECONDS, ensure_eddy_image


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[Daemon]:
    try:
        daemon = acquire()
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker daemon: {exc}")
    yield daemon
    release(daemon)


@pytest.fixture(scope="session")
def docker_client(docker_daemon: Daemon):
    client = docker_daemon.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def eddy_image(docker_client) -> str:
    return ensure_eddy_image(docker_client)


def pytest_terminal_summary(terminalreporter) -> None:
    if BUILD_SECONDS:
        built = ", ".join(f"{tag} {seconds:.1f} s" for tag, seconds in BUILD_SECONDS.items())
        terminalreporter.write_line(f"container images (built or found in the layer cache): {built}")
