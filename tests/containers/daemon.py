"""A Docker daemon for the container tests: an existing one, or Debian's ``dockerd`` started for the session.

Which daemon: ``DOCKER_HOST``, ``/var/run/docker.sock`` or another running dockerd's socket when one
answers (never stopped here: two daemons would fight over the docker0 bridge); else the
daemon of this checkout, started when missing — as root, or through passwordless ``sudo`` — with its data
root in ``<repo>/.eddy/docker/data`` (the Debian base and the image layers persist between runs, so a
re-run builds nothing) and its socket, exec root and pid file in a short per-checkout folder of the temp
dir (socket paths are limited to 107 bytes). Test sessions using it register in ``holders/``; the last one
to leave stops it (``EDDY_TEST_KEEP_DOCKERD=1``: leave it running). ``python -m tests.containers.daemon
stop`` stops it whatever the holders (``make docker-down``; CI runs it on exit).

Importing this module sets what testcontainers needs here (read when testcontainers is first imported):
no Ryuk reaper (its image cannot be pulled; every container is removed by its fixture) and the
``docker_host`` connection mode (this may itself run in a container: ``/.dockerenv``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config.settings import REPO_ROOT
from infra.process import poll_until, read_pid, spawn, stop, tail

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

log = logging.getLogger(__name__)

#: Persistent state of the container tests: the daemon's data root, the Debian base tarball, build logs.
STATE = REPO_ROOT / ".eddy" / "docker"
RUN = Path(tempfile.gettempdir()) / f"eddy-docker-{hashlib.sha1(str(STATE).encode()).hexdigest()[:10]}"
SOCKET = RUN / "docker.sock"
DAEMON_LOG = STATE / "logs" / "dockerd.log"
_OWNED = RUN / "started-by-eddy"  # present while the daemon on SOCKET is one this module started
_PIDFILE = RUN / "dockerd.pid"  # written by dockerd itself


class DockerUnavailable(RuntimeError):
    """No Docker daemon can be used here; the message says why (the skip reason of the container tests)."""


@dataclass
class Daemon:
    host: str  #: DOCKER_HOST value, e.g. ``unix:///tmp/eddy-docker-…/docker.sock``
    ours: bool  #: started by this module (stopped by the last holder)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host, timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means "not usable"
        return False


def _running_dockerd_hosts() -> list[str]:
    """The ``-H unix://…`` sockets of dockerd processes running on this machine (another checkout's, say):
    a second daemon would fight the first over the docker0 bridge and iptables, so one is reused."""
    hosts = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and Path(argv[0]).name == "dockerd":
            hosts += [arg for prev, arg in zip(argv, argv[1:], strict=False) if prev in ("-H", "--host")]
            hosts += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--host=")]
    return [h for h in hosts if h.startswith("unix://") and h != f"unix://{SOCKET}"]


def _sudo() -> list[str] | None:
    """``[]`` as root, ``["sudo", "-n"]`` with passwordless sudo, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def _start() -> None:
    dockerd = shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None)
    if dockerd is None:
        raise DockerUnavailable("no Docker daemon answers (DOCKER_HOST, /var/run/docker.sock) and dockerd is not "
                                "installed: `make test` installs Debian's docker.io when run as root or with sudo")
    prefix = _sudo()
    if prefix is None:
        raise DockerUnavailable(f"dockerd ({dockerd}) must run as root: run the tests as root or with "
                                "passwordless sudo")
    (STATE / "data").mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    argv = [*prefix, dockerd, "--data-root", str(STATE / "data"), "--exec-root", str(RUN / "exec"),
            "-H", f"unix://{SOCKET}", "--pidfile", str(_PIDFILE)]
    if prefix:
        argv += ["--group", str(os.getegid())]  # the socket's group: this user may use it
    started = time.monotonic()
    spawn(argv, pid_file=RUN / "spawn.pid", log_file=DAEMON_LOG)
    _OWNED.touch()
    host = f"unix://{SOCKET}"
    if not poll_until(lambda: _answers(host) or read_pid(RUN / "spawn.pid") is None, timeout_s=60, interval_s=0.5) \
            or not _answers(host):
        raise DockerUnavailable(f"dockerd did not start within 60 s; last lines of {DAEMON_LOG}:\n{tail(DAEMON_LOG)}")
    log.info("dockerd started in %.1f s (data root %s)", time.monotonic() - started, STATE / "data")


def _stop_ours() -> bool:
    """Stop the daemon this module started (SIGTERM: it stops its containers first). True if one was running."""
    if not _OWNED.exists():
        return False
    stopped = False
    pid = read_pid(_PIDFILE)
    if pid is not None and os.geteuid() != 0 and (prefix := _sudo()):
        subprocess.run([*prefix, "kill", "-TERM", str(pid)], capture_output=True)
        stopped = poll_until(lambda: read_pid(_PIDFILE) is None, timeout_s=30)
    else:
        stopped = stop(RUN / "spawn.pid", what="dockerd", timeout_s=30)
    _OWNED.unlink(missing_ok=True)
    if os.geteuid() == 0:  # dockerd leaves its network namespace mounted under the exec root
        with open("/proc/mounts") as mounts:
            for target in [line.split()[1] for line in mounts if line.split()[1].startswith(str(RUN))]:
                subprocess.run(["umount", "-l", target], capture_output=True)
    return stopped


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    RUN.mkdir(parents=True, exist_ok=True)
    with open(RUN / "lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _live_holders() -> list[Path]:
    holders = RUN / "holders"
    holders.mkdir(parents=True, exist_ok=True)
    live = []
    for path in holders.iterdir():
        if read_pid(path) is None:
            path.unlink(missing_ok=True)
        else:
            live.append(path)
    return live


_session: tuple[Daemon, int] | None = None  # this process's daemon and how many users it has


def acquire() -> Daemon:
    """The daemon to use (started if needed); raises DockerUnavailable with the reason. Pair with release()."""
    global _session
    if _session is not None:
        _session = (_session[0], _session[1] + 1)
        return _session[0]
    daemon = None
    for host in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock", *_running_dockerd_hosts()):
        if host and host != f"unix://{SOCKET}" and _answers(host):
            daemon = Daemon(host, ours=False)
            break
    if daemon is None:
        with _locked():
            holder = RUN / "holders" / str(os.getpid())
            holder.parent.mkdir(parents=True, exist_ok=True)
            holder.write_text(str(os.getpid()))
            if not _answers(f"unix://{SOCKET}"):
                _OWNED.unlink(missing_ok=True)
                try:
                    _start()
                except BaseException:
                    holder.unlink(missing_ok=True)
                    if not _live_holders():
                        _stop_ours()
                    raise
        daemon = Daemon(f"unix://{SOCKET}", ours=True)
    os.environ["DOCKER_HOST"] = daemon.host  # for testcontainers and docker.from_env()
    _session = (daemon, 1)
    return daemon


def release(daemon: Daemon) -> None:
    """One user fewer; the last holder of a daemon started here stops it."""
    global _session
    if _session is None:
        return
    if _session[1] > 1:
        _session = (_session[0], _session[1] - 1)
        return
    _session = None
    if not daemon.ours:
        return
    with _locked():
        (RUN / "holders" / str(os.getpid())).unlink(missing_ok=True)
        if not _live_holders() and os.environ.get("EDDY_TEST_KEEP_DOCKERD") != "1":
            _stop_ours()


@contextlib.contextmanager
def docker_daemon() -> Iterator[Daemon]:
    daemon = acquire()
    try:
        yield daemon
    finally:
        release(daemon)


if __name__ == "__main__":
    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: python -m tests.containers.daemon stop")
    with _locked():
        print("dockerd stopped" if _stop_ours() else "no dockerd started by Eddy's tests is running")
