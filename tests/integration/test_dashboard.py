"""`eddy dashboard` in a real headless Chromium (Debian's ``chromium``, driven by Playwright): the page
is loaded while queries flow, its tiles and charts follow the live numbers and end equal to what
the monitor reports; a screenshot is saved as a test artifact.

Artifacts go to ``$EDDY_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository, git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from config.settings import REPO_ROOT
from infra.process import poll_until
from schemas import DocumentChange
from tests.conftest import free_port
from tests.integration.helpers import publish_and_wait

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("EDDY_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
QUERIES = 6


def monitor_state(settings) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.monitor_port}/api/state", timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def dashboard(obs_settings, obs_stack):
    """Worker (indexer, answerer, monitor) + `eddy dashboard` on a free port; yields its URL."""
    obs_stack.start_worker(("indexer", "answerer", "monitor"))
    port = free_port()
    env = {**os.environ, **obs_settings.to_env()}
    proc = subprocess.Popen([sys.executable, "-m", "eddy", "dashboard", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"

        def up() -> bool:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                return True
            except OSError:
                return False

        assert poll_until(up, timeout_s=30), f"eddy dashboard did not start: {proc.poll()=}"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def page_value(page, tile: str) -> str:
    return page.get_attribute(f"#tile-{tile}", "data-value")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (`make test` installs it)")
def test_dashboard_shows_the_live_numbers_in_chromium(obs_settings, client, dashboard):
    from playwright.sync_api import sync_playwright

    s = obs_settings
    publish_and_wait(client, [DocumentChange(op="upsert", doc_id="copy", version=1, title="Copying files",
                                             text="Use shutil.copy(src, dst) to copy a file.",
                                             content_type="text/plain")], timeout_s=120)

    finals = []

    def traffic() -> None:
        async def run():
            for i in range(QUERIES):
                events = [e async for e in client.ask(f"How do I copy a file? ({i})", timeout_s=120)]
                finals.append(events[-1])
                rating = "up" if i % 3 else "down"
                client.publish_feedback(events[-1].query_id, rating)
                client.flush()
                await asyncio.sleep(0.7)

        asyncio.run(run())

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1300})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(dashboard)
        page.wait_for_selector("#status.ok", timeout=30_000)
        worker = threading.Thread(target=traffic)
        worker.start()
        seen = set()
        while worker.is_alive():  # the page follows the traffic while it flows
            seen.add(page_value(page, "answers"))
            time.sleep(0.3)
        worker.join()
        assert len({v for v in seen if v not in ("", "0", None)}) >= 2, f"answers tile never moved live: {seen}"

        # Once the traffic stops, the page shows exactly what the monitor reports.
        def settled() -> bool:
            state = monitor_state(s)
            return (state["totals"]["answers"] == QUERIES and state["totals"]["feedback_up"]
                    + state["totals"]["feedback_down"] == QUERIES and page_value(page, "answers") == str(QUERIES)
                    and page_value(page, "feedback") == f"{state['totals']['feedback_up']}/"
                    f"{state['totals']['feedback_down']}")

        assert poll_until(settled, timeout_s=60, interval_s=0.5), f"never settled: {monitor_state(s)['totals']}"
        # the charts follow the history samples: wait until the token chart's last point is the final total
        page.wait_for_function("""(expected) => {
            const data = (document.getElementById("chart-tokens") || {}).data;
            return Boolean(data && data[0] && data[0].y.length) && data[0].y.at(-1) === expected;
        }""", arg=monitor_state(s)["totals"]["input_tokens"], timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        state = monitor_state(s)
        figures, totals = state["figures"], state["totals"]
        assert totals["output_tokens"] == sum(f.usage.completion_tokens for f in finals)
        assert page_value(page, "tokens") == f"{totals['input_tokens']}/{totals['output_tokens']}"
        assert float(page_value(page, "queries_per_min")) == pytest.approx(figures["queries_per_min"])
        assert float(page_value(page, "ttft_p95_ms")) == pytest.approx(figures["ttft_p95_ms"])
        assert float(page_value(page, "cost_usd")) == pytest.approx(totals["cost_usd"])
        assert page.inner_text("#tile-answers") == str(QUERIES)

        assert not errors, f"errors in the page: {errors}"
        page.wait_for_function(
            """() => [...document.querySelectorAll("#traces > .waterfall")].every((el) => el.data)""")
        charts = page.evaluate("""() => {
            const data = (id) => document.getElementById(id).data || [];
            return {
                feedback: data("chart-feedback")[0].y,
                steps: data("chart-steps")[0] ? data("chart-steps")[0].y : [],
                tokens_last: data("chart-tokens")[0].y.at(-1),
                throughput_points: data("chart-throughput")[0].y.length,
                svg_charts: document.querySelectorAll(".chart .main-svg").length,
                waterfalls: [...document.querySelectorAll("#traces > .waterfall")].map(
                    (el) => [el.id, Number(el.dataset.spans), (el.data || [{}])[0].y.length]),
            };
        }""")
        assert charts["feedback"] == [totals["feedback_up"], totals["feedback_down"]]
        assert charts["tokens_last"] == totals["input_tokens"]
        assert charts["throughput_points"] > 1 and charts["svg_charts"] >= 8
        assert set(charts["steps"]) == {f"{st['agent']} · {st['step']}" for st in state["steps"]}
        by_id = {f"trace-{t['trace_id']}": len(t["spans"]) for t in state["traces"]}
        assert charts["waterfalls"], "no trace waterfall drawn"
        for element_id, spans, bars in charts["waterfalls"]:
            assert by_id.get(element_id) == spans == bars
        browser.close()
