"""The dashboard server: page and offline Plotly bundle served, /api/state relayed from the monitor."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from eddy.dashboard import build_dashboard
from tests.conftest import free_port


async def _client(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_page_bundle_and_relay():
    async def run():
        async def fake_state(_request: web.Request) -> web.Response:  # stands in for the monitor
            return web.json_response({"totals": {"answers": 3}})

        monitor_app = web.Application()
        monitor_app.router.add_get("/api/state", fake_state)
        monitor = await _client(monitor_app)
        dashboard = await _client(build_dashboard(str(monitor.make_url("")).rstrip("/")))
        try:
            page = await (await dashboard.get("/")).text()
            assert '<script src="/static/plotly.min.js"></script>' in page and "chart-steps" in page
            bundle = await dashboard.get("/static/plotly.min.js")
            assert bundle.status == 200 and len(await bundle.read()) > 1_000_000  # served locally, no CDN
            assert (await dashboard.get("/static/dashboard.js")).status == 200
            state = await dashboard.get("/api/state")
            assert state.status == 200 and (await state.json())["totals"]["answers"] == 3
        finally:
            await dashboard.close()
            await monitor.close()

    asyncio.run(run())


def test_unreachable_monitor_is_a_502_with_the_reason():
    async def run():
        dashboard = await _client(build_dashboard(f"http://127.0.0.1:{free_port()}"))
        try:
            response = await dashboard.get("/api/state")
            assert response.status == 502 and "unreachable" in (await response.json())["error"]
        finally:
            await dashboard.close()

    asyncio.run(run())
