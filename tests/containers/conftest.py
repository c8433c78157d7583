"""Fixtures of the container tests (marker ``containers``): the Docker daemon — the tests are skipped, with
the reason, where none can be used or started (tests/containers/daemon.py) — and the slim Eddy image.
The image build times of the session are printed in the test summary."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.containers.daemon import Daemon, DockerUnavailable, acquire, release
from tests.containers.images import BUILD_SECONDS, EDDY_IMAGE, ensure_eddy_image


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
    """The slim image built here, or ``EDDY_TEST_EDDY_IMAGE``: a full image (``docker build .``) to test instead."""
    return os.environ.get("EDDY_TEST_EDDY_IMAGE") or ensure_eddy_image(docker_client)


@pytest.fixture(scope="session")
def host_packages(eddy_image: str) -> bool:
    """Whether worker containers need this interpreter's site-packages mounted (the slim image has none)."""
    return eddy_image == EDDY_IMAGE


def pytest_terminal_summary(terminalreporter) -> None:
    if BUILD_SECONDS:
        built = ", ".join(f"{tag} {seconds:.1f} s" for tag, seconds in BUILD_SECONDS.items())
        terminalreporter.write_line(f"container images (built or found in the layer cache): {built}")
