"""Eddy workers in containers of the slim image, against the session's broker and Milvus on this host.

Each container runs ``eddy worker --agents …`` as the image's non-root user with host networking (the
broker and the Milvus Lite server listen on 127.0.0.1 here, and advertise that address). Its Python
packages are this interpreter's site-packages (the project's ``.venv``) mounted read-only at
``/opt/eddy-site`` — or, with ``EDDY_TEST_EDDY_IMAGE`` naming a full image (``docker build .``), its own;
its ``EDDY_HOME`` is a folder of the test's own, mounted at ``/var/lib/eddy``, whose
``models`` link points at the session's shared model folder — mounted at the same path, so the link
resolves inside too. The worker's ready file therefore appears on the host, as for a worker process.
"""

from __future__ import annotations

import contextlib
import os
import sysconfig
from pathlib import Path

from config.settings import Settings
from infra.process import poll_until

SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
CONTAINER_HOME = "/var/lib/eddy"


def _open_up(path: Path) -> None:
    """Writable by the container's user (uid 10001): test folders belong to whoever runs the tests."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)


class WorkerContainer:
    """One worker container; ``start``, ``wait_ready``, ``kill`` (SIGKILL), ``stop`` (SIGTERM) and ``remove``."""

    def __init__(self, image: str, settings: Settings, home: Path, agents: tuple[str, ...], name: str,
                 host_packages: bool = True) -> None:
        """``host_packages``: mount this interpreter's site-packages (the slim image has none of its own)."""
        from testcontainers.core.container import DockerContainer

        self.home = home
        self.name = name
        _open_up(home)
        for sub in ("run", "logs", "faust"):
            _open_up(home / sub)
        models = settings.home / "models"
        shared_models = models.resolve()
        _open_up(shared_models)
        for path in shared_models.rglob("*"):  # a conversion started by a host process: its folders and lock
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o777)
            elif path.name == ".lock":
                path.chmod(0o666)
        if not (home / "models").exists():
            (home / "models").symlink_to(shared_models, target_is_directory=True)
        env = {**settings.to_env(), "EDDY_HOME": CONTAINER_HOME}
        if host_packages:
            env["PYTHONPATH"] = "/app:/opt/eddy-site"
        self.container = DockerContainer(image).with_name(name).with_command(["worker", "--agents", ",".join(agents)])
        for key, value in env.items():
            self.container.with_env(key, value)
        if host_packages:
            self.container.with_volume_mapping(str(SITE_PACKAGES), "/opt/eddy-site", mode="ro")
        self.container.with_volume_mapping(str(home), CONTAINER_HOME, mode="rw")
        self.container.with_volume_mapping(str(shared_models), str(shared_models), mode="rw")
        self.container.with_kwargs(network_mode="host")

    @property
    def ready_file(self) -> Path:
        return self.home / "run" / "worker.ready"

    def start(self) -> WorkerContainer:
        self.ready_file.unlink(missing_ok=True)
        self.container.start()
        return self

    def running(self) -> bool:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return wrapped.status == "running"

    def wait_ready(self, timeout_s: float) -> int:
        """Until the worker joined its group; returns the partitions assigned. AssertionError with its log if not."""
        poll_until(lambda: self.ready_file.exists() or not self.running(), timeout_s=timeout_s, interval_s=0.5)
        if not self.ready_file.exists():
            raise AssertionError(f"worker container {self.name} not ready after {timeout_s:.0f} s "
                                 f"(running: {self.running()}); its last lines:\n{self.logs(40)}")
        return self.assigned()

    def assigned(self) -> int:
        """Partitions assigned at the last rebalance (the ready file's second line); 0 before any."""
        try:
            return int(self.ready_file.read_text().split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            return 0

    def logs(self, lines: int | None = None) -> str:
        with contextlib.suppress(Exception):
            return self.container.get_wrapped_container().logs(tail=lines or "all").decode(errors="replace")
        return "(no logs)"

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()  # SIGKILL

    def stop(self, timeout_s: int = 30) -> None:
        self.container.get_wrapped_container().stop(timeout=timeout_s)  # SIGTERM, then SIGKILL

    def remove(self, log_dir: Path | None = None) -> None:
        """Save its log to ``log_dir/<name>.log`` and remove it (killed if still running)."""
        if log_dir is not None:
            with contextlib.suppress(Exception):
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / f"{self.name}.log").write_text(self.logs())
        with contextlib.suppress(Exception):
            self.container.stop()

    def user(self) -> str:
        """The user the worker process runs as inside the container (``id -un`` there)."""
        result = self.container.get_wrapped_container().exec_run(["id", "-un"])
        return result.output.decode().strip()


def container_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{os.urandom(3).hex()}"
