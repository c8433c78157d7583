"""OpenAIChatGenerator against a scripted OpenAI-compatible endpoint (an ``httpx2.MockTransport``: no
socket, no server; the real ``openai`` client parses its server-sent events), and the backend selection.

The real-server tests (``transformers serve``) are in tests/integration/test_openai_generator.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from components.base import ChatMessage, GenerationParams, GenerationStats, PermanentError, RetryableError
from components.generation import build_generator
from components.openai_generator import OpenAIChatGenerator
from components.vllm_generator import VLLM_MISSING, VLLMGenerator
from config.settings import Settings

MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "how do I copy a file?")]
URL = "http://llm.test/v1"


def chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    delta = {"content": content} if content is not None else {"role": "assistant"}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return body


@dataclass
class Body(httpx2.AsyncByteStream):
    """A streamed response body: one SSE event per item, ``delay_s`` apart; notes when the client closes it."""

    server: FakeServer
    events: list
    delay_s: float

    async def __aiter__(self):
        for event in self.events:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.server.sent += 1
            yield (event if isinstance(event, bytes) else f"data: {json.dumps(event)}\n\n".encode())

    async def aclose(self) -> None:
        self.server.open_now -= 1
        self.server.closed_at.append(time.perf_counter())


@dataclass
class FakeServer:
    """What the endpoint answers: ``pieces`` then a finish chunk (with usage unless ``usage`` is None), or
    ``status`` with ``error``; the first ``refuse`` requests fail to connect (``failure`` raised instead)."""

    pieces: list[str] = field(default_factory=lambda: ["Use", " shutil", ".copy", "."])
    finish: str | None = "stop"
    usage: dict | None = field(default_factory=lambda: {"prompt_tokens": 31, "completion_tokens": 5,
                                                        "total_tokens": 36})
    delay_s: float = 0.0
    status: int = 200
    error: str = ""
    refuse: int = 0
    failure: type[Exception] = httpx2.ConnectError
    tail: list = field(default_factory=list)  # raw events after the pieces (before [DONE])
    requests: list[httpx2.Request] = field(default_factory=list)
    attempts: int = 0
    sent: int = 0
    open_now: int = 0
    open_max: int = 0
    closed_at: list[float] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.attempts += 1
        if self.attempts <= self.refuse:
            raise self.failure("connection refused", request=request)
        self.requests.append(request)
        if self.status != 200:
            return httpx2.Response(self.status, json={"error": {"message": self.error, "type": "x", "code": None}})
        events = [chunk()] + [chunk(p) for p in self.pieces] + self.tail
        if self.finish is not None:
            events.append(chunk(finish=self.finish, usage=self.usage))
        events.append(b"data: [DONE]\n\n")
        self.open_now += 1  # until the client closes the body
        self.open_max = max(self.open_max, self.open_now)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               stream=Body(self, events, self.delay_s))

    def body(self, i: int = -1) -> dict:
        return json.loads(self.requests[i].content)


def generator(server: FakeServer, **kw) -> OpenAIChatGenerator:
    kw.setdefault("backoff_s", 0.01)
    gen = OpenAIChatGenerator(URL, kw.pop("model", "qwen-lora-a"), transport=httpx2.MockTransport(server), **kw)
    gen.start()
    return gen


async def run(gen, params: GenerationParams | None = None, messages=MESSAGES):
    params = params or GenerationParams(max_new_tokens=16)
    stats = GenerationStats()
    pieces = [p async for p in gen.stream(messages, params, stats)]
    return pieces, stats


class WordTokenizer:
    """Counts whitespace words; the chat template adds 3 tokens per message."""

    def encode(self, text, add_special_tokens=True):
        return text.split()

    def apply_chat_template(self, conversation, add_generation_prompt=True, tokenize=True):
        return [w for m in conversation for w in ["<s>", m["role"], *m["content"].split(), "</s>"]]


async def test_streams_pieces_sends_the_request_and_takes_usage():
    server = FakeServer()
    gen = generator(server, api_key="sk-secret")
    pieces, stats = await run(gen, GenerationParams(max_new_tokens=16, temperature=0.5, seed=7))
    assert pieces == ["Use", " shutil", ".copy", "."]
    assert (stats.prompt_tokens, stats.completion_tokens, stats.finish_reason) == (31, 5, "stop")
    assert stats.ttft_ms is not None and stats.ttft_ms >= 0
    body = server.body()
    assert body["model"] == "qwen-lora-a" and body["stream"] is True and body["max_tokens"] == 16
    assert body["stream_options"] == {"include_usage": True} and body["temperature"] == 0.5 and body["seed"] == 7
    assert body["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "how do I copy a file?"}]
    assert server.requests[0].url == "http://llm.test/v1/chat/completions"
    assert server.requests[0].headers["authorization"] == "Bearer sk-secret"
    assert gen.model_id == "qwen-lora-a" and gen.active_streams == 0


async def test_without_usage_the_tokenizer_counts():
    gen = generator(FakeServer(usage=None), tokenizer=WordTokenizer())
    _, stats = await run(gen)
    # system: <s> system be brief </s> (5) + user: <s> user how do I copy a file? </s> (9);
    # completion "Use shutil.copy.": 2 words
    assert (stats.prompt_tokens, stats.completion_tokens) == (14, 2)


async def test_without_usage_or_tokenizer_pieces_are_counted():
    _, stats = await run(generator(FakeServer(usage=None)))
    assert (stats.prompt_tokens, stats.completion_tokens, stats.finish_reason) == (0, 4, "stop")


async def test_length_finish_is_passed_on_and_no_seed_is_sent_without_one():
    server = FakeServer(finish="length")
    _, stats = await run(generator(server), GenerationParams(max_new_tokens=4))
    assert stats.finish_reason == "length" and "seed" not in server.body() and server.body()["temperature"] == 0


async def test_connection_failures_are_retried_with_backoff_then_succeed():
    server = FakeServer(refuse=2)
    gen = generator(server, retries=2, backoff_s=0.05)
    started = time.perf_counter()
    pieces, _ = await run(gen)
    assert pieces and server.attempts == 3 and gen.connect_retries_total == 2
    # backoff 0.05 * 2**attempt * [0.5, 1): at least 0.025 + 0.05 s slept
    assert time.perf_counter() - started >= 0.075


@pytest.mark.parametrize("failure", [httpx2.ConnectError, httpx2.ConnectTimeout])
async def test_connection_failures_give_retryable_error_after_bounded_attempts(failure):
    server = FakeServer(refuse=10, failure=failure)
    with pytest.raises(RetryableError, match="cannot reach the generator server at http://llm.test/v1 after 3 att"):
        await run(generator(server, retries=2))
    assert server.attempts == 3


@pytest.mark.parametrize(("failure", "message"), [
    (httpx2.ReadError, "connection to http://llm.test/v1 failed"),
    (httpx2.ReadTimeout, "did not answer within 60 s"),
])
async def test_failures_after_connecting_are_not_retried(failure, message):
    server = FakeServer(refuse=1, failure=failure)
    with pytest.raises(RetryableError, match=message):
        await run(generator(server, retries=3))
    assert server.attempts == 1


@pytest.mark.parametrize(("status", "error", "kind", "message"), [
    (400, "This model's maximum context length is 2048 tokens", PermanentError, "answered 400: .*maximum context"),
    (404, "The model `x` does not exist", PermanentError, "check generator_url and generator_model"),
    (401, "bad key", PermanentError, "check generator_api_key"),
    (422, "bad max_tokens", PermanentError, "answered 422"),
    (429, "slow down", RetryableError, "answered 429"),
    (500, "boom", RetryableError, "answered 500"),
    (503, "loading", RetryableError, "answered 503"),
])
async def test_statuses_map_to_permanent_or_retryable_errors_without_retry(status, error, kind, message):
    server = FakeServer(status=status, error=error)
    with pytest.raises(kind, match=message):
        await run(generator(server, retries=3))
    assert server.attempts == 1


async def test_an_error_event_mid_stream_is_retryable():
    server = FakeServer(tail=[{"error": {"message": "engine died"}}])
    got: list[str] = []
    with pytest.raises(RetryableError, match="failed mid-stream: engine died"):
        async for piece in generator(server).stream(MESSAGES, GenerationParams(), GenerationStats()):
            got.append(piece)
    assert got == ["Use", " shutil", ".copy", "."]


async def test_a_stream_without_finish_reason_is_retryable():
    with pytest.raises(RetryableError, match="without a finish reason"):
        await run(generator(FakeServer(finish=None)))


async def test_closing_the_iterator_closes_the_http_stream_at_once():
    server = FakeServer(pieces=[f" w{i}" for i in range(100)], delay_s=0.02)
    gen = generator(server)
    stats = GenerationStats()
    stream = gen.stream(MESSAGES, GenerationParams(max_new_tokens=100), stats)
    assert await stream.__anext__() == " w0"
    closed = time.perf_counter()
    await stream.aclose()
    assert len(server.closed_at) == 1 and server.closed_at[0] - closed < 0.05
    assert gen.active_streams == 0 and server.sent < 10 and stats.finish_reason == ""
    await asyncio.sleep(0.1)
    assert server.sent < 10  # nothing more was read


async def test_cancelling_the_consumer_closes_the_http_stream():
    server = FakeServer(pieces=[f" w{i}" for i in range(100)], delay_s=0.02)
    gen = generator(server)
    first = asyncio.Event()

    async def consume():
        async for _ in gen.stream(MESSAGES, GenerationParams(max_new_tokens=100), GenerationStats()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    cancelled = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(server.closed_at) == 1 and server.closed_at[0] - cancelled < 0.05 and gen.active_streams == 0


async def test_a_deadline_around_the_consumer_closes_the_http_stream():
    server = FakeServer(pieces=[f" w{i}" for i in range(100)], delay_s=0.02)
    gen = generator(server)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await run(gen, GenerationParams(max_new_tokens=100))
    assert len(server.closed_at) == 1 and gen.active_streams == 0 and server.sent < 20


async def test_requests_in_flight_are_bounded():
    server = FakeServer(delay_s=0.02)
    gen = generator(server, max_in_flight=2)
    results = await asyncio.gather(*[run(gen) for _ in range(6)])
    assert all(pieces == ["Use", " shutil", ".copy", "."] for pieces, _ in results)
    assert server.open_max == 2 and len(server.requests) == 6


def test_each_event_loop_gets_its_own_client():
    gen = generator(FakeServer())
    assert asyncio.run(run(gen))[0] == asyncio.run(run(gen))[0]


async def test_bad_input_and_configuration_are_permanent():
    server = FakeServer()
    with pytest.raises(PermanentError, match="unknown chat role 'tool'"):
        await run(generator(server), messages=[ChatMessage("tool", "x")])
    with pytest.raises(PermanentError, match="no messages"):
        await run(generator(server), messages=[])
    assert server.attempts == 0
    with pytest.raises(PermanentError, match="set generator_model"):
        OpenAIChatGenerator(URL, "")
    with pytest.raises(PermanentError, match="not an http"):
        OpenAIChatGenerator("llm.test:8000", "m")
    with pytest.raises(PermanentError, match="neither a packaged generator"):
        OpenAIChatGenerator(URL, "m", tokenizer="/no/such/tokenizer").start()


def test_build_generator_maps_the_settings(tmp_path: Path):
    settings = Settings(home=tmp_path, generator="openai", generator_url="http://gpu-box:8000/v1/",
                        generator_model="faq-lora", generator_api_key="sk-1", generator_timeout_s=9,
                        generator_connect_retries=4, generator_max_in_flight=3)
    gen = build_generator("openai", tmp_path, settings=settings)
    assert isinstance(gen, OpenAIChatGenerator)
    assert (gen.base_url, gen.model_id, gen.timeout_s, gen.connect_timeout_s, gen.retries, gen.max_in_flight) == (
        "http://gpu-box:8000/v1", "faq-lora", 9, 5, 4, 3)
    assert gen._api_key == "sk-1" and "sk-1" not in repr(settings)
    with pytest.raises(PermanentError, match="set generator_model"):
        build_generator("openai", tmp_path, settings=settings.model_copy(update={"generator_model": None}))


def test_vllm_is_imported_only_by_start_and_missing_vllm_says_what_to_do(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vllm: import raises ImportError
    settings = Settings(home=tmp_path, generator="vllm", generator_model="/models/qwen",
                        generator_lora="faq=/adapters/faq")
    gen = build_generator("vllm", tmp_path, settings=settings)
    assert isinstance(gen, VLLMGenerator) and gen.model_id == "/models/qwen+faq" and gen.lora_path == "/adapters/faq"
    with pytest.raises(PermanentError) as info:
        gen.start()
    assert VLLM_MISSING in str(info.value) and "infra/vllm_serve.sh" in str(info.value)
    with pytest.raises(PermanentError, match="not NAME=PATH"):
        VLLMGenerator("m", lora="just-a-path")
