"""OpenAIChatGenerator against a real OpenAI-compatible server: ``transformers serve`` (transformers 5.17,
with fastapi, uvicorn and openai) serving the converted SmolLM2-135M directory on CPU, on 127.0.0.1.

Quirks of that server, handled here: it answers 500 on /v1/models unless the Hugging Face cache
directory exists (HF_HOME points at a tmp dir that has ``hub/``), it cannot load a GGUF path (the
converted HF directory of :func:`components.models.materialise` is served), and a request must name
the served directory as its model. vLLM's own server is exercised by bench/gpu_check.sh (GPU only).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from components.base import ChatMessage, GenerationParams, GenerationStats, PermanentError, RetryableError
from components.models import materialise
from components.openai_generator import OpenAIChatGenerator
from infra.process import read_pid, spawn, stop, wait_until
from schemas import AnswerEvent, DocumentChange
from tests.conftest import free_port, time_left

pytestmark = pytest.mark.slow

MESSAGES = [
    ChatMessage("system", "You are a helpful Python assistant. Answer briefly."),
    ChatMessage("user", "How do I copy a file in Python?"),
]


@dataclass
class Served:
    url: str  # base URL, up to /v1
    model: str  # the served directory: the model name requests carry
    pid_file: Path
    log_file: Path

    @property
    def pid(self) -> int:
        pid = read_pid(self.pid_file)
        assert pid is not None, f"transformers serve is not running; see {self.log_file}"
        return pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far, seconds."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def served(models_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``transformers serve`` on a free port, the converted SmolLM2 directory preloaded (about 10 s)."""
    model = materialise("smollm2-135m", models_home)
    root = tmp_path_factory.mktemp("transformers-serve")
    (root / "hf" / "hub").mkdir(parents=True)  # without it, /v1/models answers 500
    port = free_port()
    env = {**os.environ, "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    argv = [str(Path(sys.executable).with_name("transformers")), "serve", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--device", "cpu", "--dtype", "bfloat16", "--log-level", "warning"]
    server = Served(f"http://127.0.0.1:{port}/v1", str(model), root / "serve.pid", root / "serve.log")
    spawn(argv, pid_file=server.pid_file, log_file=server.log_file, env=env)
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/health") == 200 and _get(f"{server.url}/models") == 200,
                   timeout_s=time_left(120), what="transformers serve", log_file=server.log_file,
                   alive=lambda: read_pid(server.pid_file) is not None)
        yield server
    finally:
        stop(server.pid_file, what="transformers serve", timeout_s=10)


@pytest.fixture
def gen(served: Served) -> OpenAIChatGenerator:
    generator = OpenAIChatGenerator(served.url, served.model, timeout_s=60, tokenizer=served.model)
    generator.start()
    return generator


async def run(gen, params: GenerationParams | None = None, messages=MESSAGES):
    params = params or GenerationParams(max_new_tokens=16)
    stats = GenerationStats()
    pieces = [piece async for piece in gen.stream(messages, params, stats)]
    return pieces, stats


async def test_streams_pieces_and_fills_stats_that_the_tokenizer_agrees_with(gen):
    pieces, stats = await run(gen, GenerationParams(max_new_tokens=12))
    assert len(pieces) >= 3 and all(pieces) and "".join(pieces).strip()
    assert stats.finish_reason in ("stop", "length") and 0 < stats.completion_tokens <= 12
    assert stats.ttft_ms is not None and 0 < stats.ttft_ms < 30_000
    # the server sent usage; counting ourselves (servers that send none) gives the same figures
    conversation = [{"role": m.role, "content": m.content} for m in MESSAGES]
    prompt, completion = await asyncio.to_thread(gen._count, conversation, "".join(pieces))
    assert prompt == stats.prompt_tokens > 10
    assert abs(completion - stats.completion_tokens) <= 1
    assert (stats.finish_reason == "length") == (stats.completion_tokens == 12)


async def test_max_tokens_ends_with_length(gen):
    _, stats = await run(gen, GenerationParams(max_new_tokens=3))
    assert stats.finish_reason == "length" and stats.completion_tokens == 3


async def test_an_unknown_model_name_is_a_permanent_error(served):
    wrong = OpenAIChatGenerator(served.url, "no-such-adapter")
    with pytest.raises(PermanentError, match="answered 400"):
        await run(wrong)


async def test_connection_refused_gives_retryable_error_after_bounded_retries():
    nothing = OpenAIChatGenerator(f"http://127.0.0.1:{free_port()}/v1", "m", retries=2, backoff_s=0.1)
    started = time.perf_counter()
    with pytest.raises(RetryableError, match="cannot reach the generator server .* after 3 attempts: ConnectError"):
        await run(nothing)
    assert nothing.connect_retries_total == 2 and time.perf_counter() - started < 5


async def test_a_deadline_closes_the_stream_and_the_server_stops_generating(served, gen):
    """What the answerer's query deadline does: cancel the consumer mid-stream. The HTTP stream closes at
    once and the server stops computing: the CPU it spends after the close is a few tokens' worth, not the
    ~390 tokens left of the request (CPU time, so a loaded machine does not change the verdict)."""
    stats = GenerationStats()
    got: list[str] = []
    deadline = asyncio.timeout(None)  # as the answerer does: the query's deadline around the whole answer

    async def consume() -> None:
        async with deadline:
            async for piece in gen.stream(MESSAGES, GenerationParams(max_new_tokens=400), stats):
                got.append(piece)

    async def pieces_at_least(n: int) -> None:
        while len(got) < n:
            assert not task.done(), "the stream ended early"
            await asyncio.sleep(0.02)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(pieces_at_least(2), time_left(30))
    cpu_from, pieces_from = served.cpu_seconds(), len(got)
    await asyncio.wait_for(pieces_at_least(pieces_from + 6), time_left(30))
    per_piece = (served.cpu_seconds() - cpu_from) / (len(got) - pieces_from)
    cancelled, cpu_at_cancel = time.perf_counter(), served.cpu_seconds()
    deadline.reschedule(asyncio.get_running_loop().time())  # the deadline passes now
    with pytest.raises(TimeoutError):
        await task
    assert time.perf_counter() - cancelled < 0.5 and gen.active_streams == 0
    assert stats.finish_reason == "" and stats.completion_tokens < 100
    idle_by = time.monotonic() + 15
    while True:  # until the server's CPU stays still for 0.5 s
        before = served.cpu_seconds()
        await asyncio.sleep(0.5)
        if served.cpu_seconds() - before < 0.02 or time.monotonic() > idle_by:
            break
    after = served.cpu_seconds() - cpu_at_cancel
    assert time.monotonic() <= idle_by, "the server kept computing for 15 s after the stream was closed"
    assert after < 20 * per_piece, f"server CPU after close {after:.2f} s; {per_piece:.3f} s per piece"
    pieces, _ = await run(gen, GenerationParams(max_new_tokens=4))
    assert pieces


def test_an_answer_through_the_worker_with_the_openai_generator(served, settings, client):
    """The whole query path, Kafka and Milvus included, with ``generator="openai"`` at the served model."""
    from tests.conftest import TestStack

    remote = settings.model_copy(update={"generator": "openai", "generator_url": served.url,
                                         "generator_model": served.model,
                                         "generator_api_key": SecretStr("sk-test")})
    stack = TestStack(remote)
    try:
        stack.start_worker(("indexer", "answerer"))
        start = client.end_offsets("index.events")
        change = client.publish_change(DocumentChange(
            op="upsert", doc_id="copy", version=1, title="Copying files", uri="https://example.test/copy",
            content_type="text/x-rst",
            text="Copying files\n=============\n\nUse shutil.copy(src, dst) to copy a file in Python."))
        client.flush()
        client.wait_indexed([str(change.event_id)], start, timeout_s=time_left(120))

        async def ask() -> list[AnswerEvent]:
            return [e async for e in client.ask("How do I copy a file?", max_tokens=8, timeout_s=time_left(90))]

        events = asyncio.run(ask())
    finally:
        stack.stop_worker(kill=True)
    final = events[-1]
    assert final.kind == "final", f"{final.kind}: {final.error}"
    assert [e.kind for e in events].count("final") == 1 and "error" not in [e.kind for e in events]
    assert final.text and "".join(e.text for e in events[:-1]).strip() == final.text
    assert final.model == served.model and final.citations[0].doc_id == "copy"
    assert final.usage.completion_tokens == 8 and final.usage.prompt_tokens > 20
    assert final.validation["finish_reason"] == "length"
    assert "sk-test" not in json.dumps(remote.model_dump(mode="json"))
