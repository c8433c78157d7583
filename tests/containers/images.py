"""The images of the container tests, all built on this machine (no image registry is reachable).

* ``eddy-test/debian:bookworm`` — ``debootstrap --variant=minbase bookworm`` (about 40 s) imported with
  ``docker import``; the root file system's tarball is kept in ``.eddy/docker/`` so a new daemon data
  root re-imports it in seconds.
* ``eddy-test/kafka:<version>`` — ``infra/docker/kafka/Dockerfile``: that base + Debian's Java 17 JRE +
  the broker jars Maven resolves from ``infra/maven/pom.xml`` (the embedded broker's, exactly).
* ``eddy-test/eddy:slim`` — the ``app`` stage of the root ``Dockerfile``: that base + Python 3.11 +
  Eddy's source, user ``eddy``. Its Python packages are the host's ``.venv`` site-packages mounted
  read-only: the ``runtime`` stage installs torch with its CUDA libraries (several GB from PyPI), which
  would take most of the test budget on every fresh clone; the slim image shares every other layer.

Builds go through the daemon's classic builder (no BuildKit: the tests never need the ``deps`` stage's
cache mounts), with ``--network host`` semantics; each build's log is ``.eddy/docker/logs/build-*.log``.
A build whose inputs did not change is a cache hit of a second or two. ``BUILD_SECONDS`` records how
long each image took in this session (printed in the test summary).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from config.settings import REPO_ROOT
from infra.kafka import KAFKA_VERSION, KafkaBroker
from tests.containers.daemon import STATE, DockerUnavailable

log = logging.getLogger(__name__)

BASE_IMAGE = "eddy-test/debian:bookworm"
KAFKA_IMAGE = f"eddy-test/kafka:{KAFKA_VERSION}"
EDDY_IMAGE = "eddy-test/eddy:slim"
ROOTFS_TAR = STATE / "debian-bookworm-minbase.tar"
DEBIAN_MIRROR = os.environ.get("EDDY_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")

#: image tag -> seconds its ensure/build took in this session
BUILD_SECONDS: dict[str, float] = {}


def _has_image(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _debootstrap_tarball() -> None:
    """Make ``ROOTFS_TAR`` (needs root and Debian's debootstrap; reaches the Debian mirror)."""
    debootstrap = shutil.which("debootstrap")  # /usr/sbin: on root's PATH, not always on a user's
    if debootstrap is None and os.path.exists("/usr/sbin/debootstrap"):
        debootstrap = "/usr/sbin/debootstrap"
    if debootstrap is None:
        raise DockerUnavailable("debootstrap is not installed (`make test` installs it with docker.io)")
    if os.geteuid() != 0:
        raise DockerUnavailable("debootstrap needs root to build the Debian base image")
    ROOTFS_TAR.parent.mkdir(parents=True, exist_ok=True)
    build_log = STATE / "logs" / "debootstrap.log"
    build_log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eddy-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        with open(build_log, "w") as out:
            proc = subprocess.run([debootstrap, "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                                  stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed (exit {proc.returncode}); see {build_log}")
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        partial = ROOTFS_TAR.with_suffix(".tar.tmp")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.replace(ROOTFS_TAR)


def ensure_base(client) -> str:
    """The Debian bookworm base image, from the cached tarball or a fresh debootstrap."""
    if _has_image(client, BASE_IMAGE):
        return BASE_IMAGE
    started = time.monotonic()
    if not ROOTFS_TAR.exists():
        _debootstrap_tarball()
    repository, tag = BASE_IMAGE.split(":")
    with open(ROOTFS_TAR, "rb") as f:
        client.api.import_image_from_data(f.read(), repository=repository, tag=tag, changes=['CMD ["/bin/bash"]'])
    BUILD_SECONDS[BASE_IMAGE] = time.monotonic() - started
    return BASE_IMAGE


def build(client, *, context: Path, tag: str, dockerfile: str = "Dockerfile", target: str | None = None) -> str:
    """``docker build --network host`` of ``context`` FROM the Debian base; the log goes to ``.eddy/docker/logs``."""
    base = ensure_base(client)
    started = time.monotonic()
    build_log = STATE / "logs" / f"build-{tag.replace('/', '_').replace(':', '_')}.log"
    build_log.parent.mkdir(parents=True, exist_ok=True)
    error = None
    with open(build_log, "w") as out:
        for chunk in client.api.build(path=str(context), dockerfile=dockerfile, tag=tag, target=target, rm=True,
                                      forcerm=True, network_mode="host", buildargs={"BASE_IMAGE": base},
                                      decode=True):
            if "stream" in chunk:
                out.write(chunk["stream"])
            elif "error" in chunk:
                error = chunk["error"]
                out.write(json.dumps(chunk) + "\n")
    if error is not None:
        raise RuntimeError(f"docker build of {tag} failed: {error.strip()}; see {build_log}")
    BUILD_SECONDS[tag] = time.monotonic() - started
    client.images.prune(filters={"dangling": True})  # the previous build of a changed source: no tag left
    return tag


def ensure_kafka_image(client) -> str:
    """The broker image; its context (``.eddy/docker/kafka-image``) holds the jars and the entrypoint."""
    jars_home = STATE / "kafka-jars"
    KafkaBroker(jars_home, 0, 0).ensure_jars()  # Maven, once (the local repository caches it for every checkout)
    context = STATE / "kafka-image"
    libs = jars_home / "kafka" / "libs"
    if not (context / "libs" / f".kafka-{KAFKA_VERSION}").exists():
        shutil.rmtree(context, ignore_errors=True)
        shutil.copytree(libs, context / "libs")
    for name in ("Dockerfile", "entrypoint.sh"):
        shutil.copy2(REPO_ROOT / "infra" / "docker" / "kafka" / name, context / name)
    return build(client, context=context, tag=KAFKA_IMAGE)


def ensure_eddy_image(client) -> str:
    """The slim Eddy image: the ``app`` stage of the repository's Dockerfile (context: the repository)."""
    return build(client, context=REPO_ROOT, tag=EDDY_IMAGE, target="app")
