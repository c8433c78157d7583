"""The embedded stack: Apache Kafka broker + Milvus Lite server + one Eddy worker, under EDDY_HOME."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings
from infra.kafka import KafkaBroker
from infra.milvus import MilvusLiteServer
from infra.process import read_pid, spawn, stop, wait_until
from streams.admin import ensure_topics
from worker.bindings import AGENTS
from worker.main import ready_file

log = logging.getLogger(__name__)


@dataclass
class Stack:
    settings: Settings

    @property
    def kafka(self) -> KafkaBroker:
        s = self.settings
        return KafkaBroker(s.home, s.kafka_port, s.kafka_controller_port, s.kafka_heap_mb)

    @property
    def milvus(self) -> MilvusLiteServer:
        s = self.settings
        return MilvusLiteServer(s.home / "milvus", s.milvus_port, s.home / "logs" / "milvus.log",
                                s.home / "run" / "milvus.pid")

    @property
    def worker_pid_file(self) -> Path:
        return self.settings.home / "run" / "worker.pid"

    @property
    def worker_log(self) -> Path:
        return self.settings.home / "logs" / "worker.log"

    def start_infra(self) -> None:
        """Start the broker and Milvus (those not configured as external), then create the topics."""
        if self.settings.embedded_kafka:
            self.kafka.start()
        if self.settings.embedded_milvus:
            self.milvus.start()
        ensure_topics(self.settings)

    def start_worker(self, agents: tuple[str, ...] = AGENTS, timeout_s: float = 900.0) -> int:
        """Start ``eddy worker`` detached and wait until its consumer has partitions (first start converts models)."""
        pid = read_pid(self.worker_pid_file)
        if pid is not None and ready_file(self.settings).exists():
            return pid
        if pid is None:
            ready_file(self.settings).unlink(missing_ok=True)
            argv = [sys.executable, "-m", "eddy", "worker", "--agents", ",".join(agents)]
            env = {**os.environ, **self.settings.to_env()}
            pid = spawn(argv, pid_file=self.worker_pid_file, log_file=self.worker_log, env=env)
        wait_until(lambda: ready_file(self.settings).exists(), timeout_s=timeout_s, what="Eddy worker",
                   log_file=self.worker_log, alive=lambda: read_pid(self.worker_pid_file) is not None)
        return pid

    def up(self, agents: tuple[str, ...] = AGENTS) -> None:
        self.start_infra()
        self.start_worker(agents)

    def stop_worker(self, kill: bool = False) -> bool:
        stopped = stop(self.worker_pid_file, what="Eddy worker", timeout_s=30, kill=kill)
        ready_file(self.settings).unlink(missing_ok=True)
        return stopped

    def down(self) -> dict[str, bool]:
        """Stop worker, Milvus and broker (in that order); returns which were running."""
        return {
            "worker": self.stop_worker(),
            "milvus": self.milvus.stop() if self.settings.embedded_milvus else False,
            "kafka": self.kafka.stop() if self.settings.embedded_kafka else False,
        }

    def worker_status(self) -> dict[str, object]:
        pid = read_pid(self.worker_pid_file)
        return {"running": pid is not None, "pid": pid, "ready": pid is not None and ready_file(self.settings).exists(),
                "log": str(self.worker_log)}
