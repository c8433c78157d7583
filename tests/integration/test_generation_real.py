"""Real in-process generation with SmolLM2-135M (converted from its packaged GGUF once per session)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from components.base import ChatMessage, GenerationParams, GenerationStats, PermanentError
from components.generation import TransformersGenerator

pytestmark = pytest.mark.slow

MESSAGES = [
    ChatMessage("system", "You are a helpful Python assistant. Answer briefly."),
    ChatMessage("user", "How do I copy a file in Python?"),
]


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> TransformersGenerator:
    generator = TransformersGenerator("smollm2-135m", tmp_path_factory.mktemp("models"))
    generator.start()
    return generator


def gen_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("eddy-gen-")]


async def run(gen, params: GenerationParams | None = None, messages=MESSAGES) -> tuple[list[str], GenerationStats]:
    params = params or GenerationParams(max_new_tokens=24)
    stats = GenerationStats()
    pieces = [piece async for piece in gen.stream(messages, params, stats)]
    return pieces, stats


async def test_streams_pieces_and_fills_stats(gen):
    pieces, stats = await run(gen, GenerationParams(max_new_tokens=40))
    assert len(pieces) >= 5 and all(pieces)
    assert "".join(pieces).strip()
    assert stats.prompt_tokens == gen.count_prompt_tokens(MESSAGES) > 10
    assert 0 < stats.completion_tokens <= 40
    assert stats.ttft_ms is not None and 0 < stats.ttft_ms < 10_000
    assert stats.finish_reason in ("stop", "length")
    assert (stats.finish_reason == "length") == (stats.completion_tokens == 40)
    assert gen.count_tokens("hello world") >= 2 and gen.context_tokens == 8192


async def test_length_limit(gen):
    _, stats = await run(gen, GenerationParams(max_new_tokens=3))
    assert stats.completion_tokens == 3 and stats.finish_reason == "length"


async def test_greedy_is_deterministic(gen):
    a, _ = await run(gen)
    b, _ = await run(gen)
    assert "".join(a) == "".join(b)


async def test_seeded_sampling_is_reproducible(gen):
    params = GenerationParams(max_new_tokens=16, temperature=0.9, seed=1234)
    a, _ = await run(gen, params)
    b, _ = await run(gen, params)
    assert "".join(a) == "".join(b)


async def test_early_close_stops_the_thread(gen):
    stats = GenerationStats()
    agen = gen.stream(MESSAGES, GenerationParams(max_new_tokens=200), stats)
    first = await agen.__anext__()
    assert first and gen.active_streams == 1 and len(gen_threads()) == 1
    await agen.aclose()
    assert gen.active_streams == 0 and gen_threads() == []
    assert stats.completion_tokens < 200


async def test_cancel_stops_the_thread(gen):
    started = asyncio.Event()

    async def consume():
        async for _ in gen.stream(MESSAGES, GenerationParams(max_new_tokens=200), GenerationStats()):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gen.active_streams == 0 and gen_threads() == []


async def test_prompt_longer_than_context_is_permanent(gen):
    too_long = [ChatMessage("user", "hello " * 9000)]
    with pytest.raises(PermanentError, match=r"prompt is \d+ tokens.*at most 8192"):
        await run(gen, messages=too_long)
    assert gen_threads() == []


async def test_concurrent_streams_keep_the_loop_responsive(gen):
    solo, _ = await run(gen)
    order: list[str] = []  # "tick" (the loop ran another task), "a" / "b" (a piece of that stream)
    both_generating = 0  # ticks that saw the two generation threads alive at once
    stop = asyncio.Event()

    async def ticker():
        nonlocal both_generating
        while not stop.is_set():
            await asyncio.sleep(0.01)
            order.append("tick")
            both_generating += len(gen_threads()) == 2

    async def follow(name: str) -> tuple[list[str], GenerationStats]:
        stats = GenerationStats()
        pieces = []
        async for piece in gen.stream(MESSAGES, GenerationParams(max_new_tokens=24), stats):
            order.append(name)
            pieces.append(piece)
        return pieces, stats

    tick = asyncio.create_task(ticker())
    try:
        (a, sa), (b, sb) = await asyncio.gather(follow("a"), follow("b"))
    finally:
        stop.set()
        await tick
    assert "".join(a) == "".join(b) == "".join(solo)  # no cross-talk between threads
    assert sa.completion_tokens == sb.completion_tokens > 0
    # Generation runs on threads of its own, both at once, and the loop keeps serving other tasks
    # between the pieces (a generation on the loop's thread would leave no tick between them).
    # Counted, not timed: the size of the loop's gaps depends on the machine's load.
    pieces = [i for i, x in enumerate(order) if x != "tick"]
    assert both_generating >= 1
    assert order[pieces[0]:pieces[-1]].count("tick") >= 3, order
    assert gen.active_streams == 0
