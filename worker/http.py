"""The monitor's HTTP server: ``/metrics`` (Prometheus text format) and ``/api/state`` (JSON)."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from components.monitoring import MonitorState
from config.settings import Settings

log = logging.getLogger(__name__)


async def serve_http(settings: Settings, state: MonitorState):
    """Start ``/metrics`` and ``/api/state`` on ``monitor_host:monitor_port``; returns the aiohttp runner.

    Raises OSError when the port is taken.
    """
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(state.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def api_state(_request: web.Request) -> web.Response:
        return web.json_response(state.snapshot(time.time()))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/state", api_state)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.monitor_host, settings.monitor_port).start()
    log.info("monitor serving http://%s:%d/metrics and /api/state", settings.monitor_host, settings.monitor_port)
    return runner
