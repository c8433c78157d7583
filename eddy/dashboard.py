"""``eddy dashboard``: a live web page of the monitor's figures, served on loopback.

The page (``eddy/dashboard_static/``) polls ``/api/state`` once a second; this server relays
that request to the monitor's ``/api/state`` (``http://monitor_host:monitor_port``) and serves
the charting library, Plotly.js, from the ``plotly`` Python package's bundled
``package_data/plotly.min.js`` — no CDN, the page works offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from config.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "dashboard_static"
_SESSION = web.AppKey("session", ClientSession)


def plotly_js() -> Path:
    """Path of the Plotly.js bundle shipped inside the ``plotly`` package (raises FileNotFoundError)."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package at {path}")
    return path


def monitor_url(settings: Settings) -> str:
    return f"http://{settings.monitor_host}:{settings.monitor_port}"


def build_dashboard(monitor: str, poll_ms: int = 1000) -> web.Application:
    """The dashboard's aiohttp app: ``/`` (page), ``/static/*``, ``/api/state`` (relayed from ``monitor``).

    ``/api/state`` answers 502 with ``{"error": …}`` when the monitor cannot be reached.
    """
    plotly_path = plotly_js()
    index = (STATIC / "index.html").read_text().replace("{{POLL_MS}}", str(poll_ms))

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=index, content_type="text/html")

    async def plotly_bundle(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(plotly_path, headers={"Content-Type": "application/javascript"})

    async def state(request: web.Request) -> web.Response:
        session = request.app[_SESSION]
        try:
            async with session.get(f"{monitor}/api/state") as response:
                return web.Response(body=await response.read(), status=response.status,
                                    content_type="application/json")
        except (ClientError, TimeoutError) as exc:
            return web.json_response({"error": f"monitor at {monitor} unreachable: {exc}"}, status=502)

    async def session_ctx(app: web.Application):
        app[_SESSION] = ClientSession(timeout=ClientTimeout(total=5))
        yield
        await app[_SESSION].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/", page)
    app.router.add_get("/static/plotly.min.js", plotly_bundle)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/state", state)
    return app


def serve_dashboard(settings: Settings, port: int, monitor: str | None = None) -> None:
    """Serve the dashboard on ``127.0.0.1:port`` until interrupted (raises OSError if the port is taken)."""
    web.run_app(build_dashboard(monitor or monitor_url(settings)), host="127.0.0.1", port=port,
                print=None, access_log=None)
