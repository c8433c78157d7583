"""Detached background processes with pid files and readiness checks (no home-made supervision)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A process could not be started or did not become ready; the message names its log file."""


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    if _is_zombie(pid):
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def spawn(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session (survives the caller), stdout+stderr appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    log.info("started %s (pid %d), log %s", argv[0], proc.pid, log_file)
    return proc.pid


def poll_until(condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Check ``condition()`` every ``interval_s`` until it is true (True) or ``timeout_s`` passed (False).

    For states of other processes (a port, a pid) that offer nothing to wait on.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    log_file: Path,
    alive: Callable[[], bool] | None = None,
    interval_s: float = 0.2,
) -> None:
    """Poll ``ready()`` until true; LaunchError (quoting the log's tail) on timeout or early exit."""
    exited = False

    def done() -> bool:
        nonlocal exited
        exited = alive is not None and not alive()
        return exited or ready()

    finished = poll_until(done, timeout_s=timeout_s, interval_s=interval_s)
    if exited and not ready():
        raise LaunchError(f"{what} exited during start-up; last lines of {log_file}:\n{tail(log_file)}")
    if not finished:
        raise LaunchError(f"{what} not ready after {timeout_s:.0f}s; last lines of {log_file}:\n{tail(log_file)}")


def stop(pid_file: Path, *, what: str, timeout_s: float = 20.0, kill: bool = False) -> bool:
    """Stop the process in ``pid_file`` (SIGTERM, then SIGKILL after ``timeout_s``; SIGKILL at once if ``kill``).

    Returns True when a live process was stopped.
    """
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    gone = lambda: read_pid(pid_file) is None  # noqa: E731
    if not poll_until(gone, timeout_s=timeout_s):
        log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing", what, pid, timeout_s)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not poll_until(gone, timeout_s=10.0, interval_s=0.05):
            raise LaunchError(f"{what} (pid {pid}) survived SIGKILL for 10 s")
    pid_file.unlink(missing_ok=True)
    return True


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
