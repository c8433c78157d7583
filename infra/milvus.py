"""Milvus Lite served over gRPC, so that several processes share one data directory like a real Milvus.

milvus-lite 3 is pure Python and locks its data directory to one process; its gRPC server lets
the worker, the CLI and the tests all reach it at ``http://127.0.0.1:PORT``. This module both
launches that server (``MilvusLiteServer``, detached, pid file + log) and *is* the server's entry
point (``python -m infra.milvus --data-dir DIR --port P``), a thin wrapper around milvus-lite's
own gRPC adapter that fixes two problems of the stock ``milvus-lite server`` command:

* **Writes are serialised.** The stock server runs RPCs on a thread pool and milvus-lite's engine
  is single-writer: concurrent upserts from two clients interleave their write-ahead-log
  records, and after a crash recovery stops at the first torn record (measured: 6 concurrent
  writers, kill -9, 22,896 rows became 124 — measured once while building this; the integration
  test of concurrent writers + kill -9 checks that nothing is lost here). Every RPC that may write
  runs under one lock here; reads (search, query, describe, ...) stay concurrent.
* **SIGTERM is a clean shutdown** (drain RPCs, flush, release the data-dir lock); the stock
  command only handles Ctrl-C. A SIGKILL loses nothing acknowledged: the WAL is flushed to the
  OS before each write RPC returns.

The server also caps milvus-lite's in-memory write buffer (``MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES``,
default here 2 MiB instead of 128 MiB): rows still in that buffer are searched row by row in
Python (~40 µs/row), flushed rows through the vector index, so a large buffer makes every search
slow (``python -m bench.milvus_search``, 15k rows of 384-d: search p50 504 ms with the default,
81 ms with 2 MiB).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from infra.process import LaunchError, poll_until, port_open, read_pid, spawn, stop, wait_until

log = logging.getLogger(__name__)

#: Default write-buffer size of the server (bytes); see the module docstring.
DEFAULT_MEMTABLE_LIMIT_BYTES = 2 * 1024 * 1024
_MEMTABLE_ENV = "MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES"
_REPO_ROOT = Path(__file__).resolve().parents[1]
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

#: RPCs of milvus-lite's servicer that never write; every other RPC takes the write lock.
_READ_ONLY_RPCS = frozenset({
    "Connect", "GetVersion", "CheckHealth", "HasCollection", "DescribeCollection", "ShowCollections",
    "Query", "Search", "HybridSearch", "DescribeIndex", "GetLoadingProgress", "GetLoadState",
    "HasPartition", "ShowPartitions", "GetFlushState", "GetCollectionStatistics",
    "GetPartitionStatistics", "ListDatabases", "DescribeDatabase", "DescribeAlias", "ListAliases",
    "GetCompactionState",
})


class MilvusLiteServer:
    """A Milvus Lite gRPC server on ``host:port`` storing its data in ``data_dir``.

    Runs detached (survives the caller) with stdout+stderr appended to ``log_file`` and its pid
    in ``pid_file``. ``memtable_limit_bytes`` is milvus-lite's write-buffer budget (smaller =
    faster search, more frequent small flushes).
    """

    def __init__(
        self, data_dir: Path, port: int, log_file: Path, pid_file: Path, host: str = "127.0.0.1",
        memtable_limit_bytes: int = DEFAULT_MEMTABLE_LIMIT_BYTES,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.log_file = Path(log_file)
        self.pid_file = Path(pid_file)
        self.host = host
        self.memtable_limit_bytes = memtable_limit_bytes

    @property
    def uri(self) -> str:
        """``http://HOST:PORT``, what ``pymilvus.MilvusClient`` takes."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True when the pid file names a live process and the port accepts connections."""
        return self._own_pid() is not None and port_open(self.host, self.port)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server unless it already runs; return once it answers ``list_collections``.

        Idempotent: a live server from this pid file is left alone (waited for if still starting).
        Raises LaunchError when the port is taken by another process, when the server exits
        during start-up (e.g. another process holds ``data_dir``) or is not ready in ``timeout_s``;
        the message quotes the end of ``log_file``.
        """
        pid = self._own_pid()
        if pid is None:
            if not self._wait_port_closed(3.0):
                raise LaunchError(
                    f"cannot start Milvus Lite on {self.host}:{self.port}: the port is already in use by "
                    f"another process (not the server of {self.pid_file}); stop it or choose another port"
                )
            self.data_dir.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            env[_MEMTABLE_ENV] = str(self.memtable_limit_bytes)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
            argv = [sys.executable, "-m", "infra.milvus", "--data-dir", str(self.data_dir),
                    "--host", self.host, "--port", str(self.port)]
            pid = spawn(argv, pid_file=self.pid_file, log_file=self.log_file, env=env)
            log.info("Milvus Lite starting on %s (pid %d, data %s)", self.uri, pid, self.data_dir)
        wait_until(
            self._ready, timeout_s=timeout_s, what=f"Milvus Lite server on {self.host}:{self.port}",
            log_file=self.log_file, alive=lambda: read_pid(self.pid_file) is not None, interval_s=0.25,
        )

    def stop(self, timeout_s: float = 30.0, kill: bool = False) -> bool:
        """Stop the server (SIGTERM: clean shutdown; SIGKILL after ``timeout_s`` or at once if ``kill``).

        Returns True when a live server was stopped. Data survives both ways.
        """
        stopped = stop(self.pid_file, what="Milvus Lite server", timeout_s=timeout_s, kill=kill)
        if stopped:
            # A multi-threaded process shows as a zombie before its last thread has closed the
            # listening socket; wait for the port so that an immediate restart can bind it.
            self._wait_port_closed(10.0)
        return stopped

    # ------------------------------------------------------------------ internals
    def _own_pid(self) -> int | None:
        """The pid from the pid file if that process is alive and is a Milvus Lite server."""
        pid = read_pid(self.pid_file)
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid  # no /proc: trust the pid file
        if b"infra.milvus" in cmdline or b"milvus_lite" in cmdline or b"milvus-lite" in cmdline:
            return pid
        log.warning("pid file %s names pid %d, which is not a Milvus Lite server; ignoring it", self.pid_file, pid)
        return None

    def _wait_port_closed(self, timeout_s: float) -> bool:
        """True once nothing listens on the port (polls up to ``timeout_s``)."""
        return poll_until(lambda: not port_open(self.host, self.port), timeout_s=timeout_s)

    def _ready(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(self.uri, timeout=5)
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        try:
            client.list_collections(timeout=5)
            return True
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        finally:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------- the server process
def _serialized_servicer(lock: threading.Lock) -> type:
    """milvus-lite's servicer with every possibly-writing RPC run under ``lock``."""
    import functools

    from milvus_lite.adapter.grpc.servicer import MilvusServicer

    def locked(method):
        @functools.wraps(method)
        def wrapper(self, request, context):
            with lock:
                return method(self, request, context)

        return wrapper

    namespace = {}
    for name in dir(MilvusServicer):
        attr = getattr(MilvusServicer, name)
        if name[:1].isupper() and callable(attr) and name not in _READ_ONLY_RPCS:
            namespace[name] = locked(attr)
    return type("SerializedMilvusServicer", (MilvusServicer,), namespace)


def serve(data_dir: Path, host: str, port: int, max_workers: int = 16) -> None:
    """Run the server in this process until SIGTERM/SIGINT, then shut down cleanly."""
    from concurrent import futures

    import grpc
    from milvus_lite.db import MilvusLite
    from pymilvus.grpc_gen import milvus_pb2_grpc

    db = MilvusLite(str(data_dir))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="milvus-rpc"),
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # never share the port with another server
            # pymilvus pings every 10 s even when idle; without these the server answers
            # GOAWAY "too_many_pings" and clients log errors and reconnect.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(_serialized_servicer(threading.Lock())(db), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        db.close()
        raise SystemExit(f"cannot bind {host}:{port}: {exc}") from exc
    if bound == 0:
        db.close()
        raise SystemExit(f"cannot bind {host}:{port}")
    server.start()
    log.info("Milvus Lite (milvus-lite %s) listening on %s:%d, data %s, write buffer %s bytes",
             _milvus_lite_version(), host, port, data_dir, os.environ.get(_MEMTABLE_ENV, "default"))

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(1.0):
        pass
    server.stop(grace=5).wait()
    db.close()
    log.info("Milvus Lite stopped")


def _milvus_lite_version() -> str:
    try:
        from milvus_lite import __version__

        return str(__version__)
    except Exception:  # noqa: BLE001
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.milvus", description="Milvus Lite gRPC server")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-workers", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    serve(args.data_dir, args.host, args.port, args.max_workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
