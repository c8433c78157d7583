"""``run_worker``: what ``eddy worker`` (and ``eddy up``) runs — load the models, create missing topics,
bind the agents and hand control to the faust Worker until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import faust

from config.settings import Settings
from streams.admin import ensure_topics
from streams.faust_adapter import build_app
from worker.bindings import AGENTS, bind_agents
from worker.components import build_components, start_components

log = logging.getLogger(__name__)


def ready_file(settings: Settings) -> Path:
    """Written (pid, partitions assigned) when the worker has joined its group; removed when it stops."""
    return settings.home / "run" / "worker.ready"


def run_worker(settings: Settings, agents: Sequence[str] = AGENTS, *, exporter_stats: object | None = None) -> None:
    """Run a worker hosting ``agents`` until SIGTERM/SIGINT (blocking).

    The caller (an entry point) has set up tracing; ``exporter_stats`` are its span exporter's
    counters, which the monitor exposes. Raises ValueError for an unknown agent name.
    """
    ready = ready_file(settings)
    ready.unlink(missing_ok=True)
    # The monitor alone loads no model and needs no Milvus: a monitor-only worker starts in seconds.
    components = build_components(settings, agents=agents) if set(agents) - {"monitor"} else None
    if components is not None:
        start_components(components)
    ensure_topics(settings)
    app = build_app(settings)
    bind_agents(app, settings, components, agents, exporter_stats)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: object, assigned: set, **_: object) -> None:
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.write_text(f"{os.getpid()}\n{len(assigned)}\n")
        log.info("worker ready: %d partitions assigned (agents: %s)", len(assigned), ", ".join(agents))

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=True)
    try:
        worker.execute_from_commandline()
    finally:
        ready.unlink(missing_ok=True)
        if components is not None:
            components.collections.close()
