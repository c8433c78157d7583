"""EchoGenerator (the generation fake), the RAG prompt builder and packaged-weight materialisation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from components.base import (
    ChatMessage,
    GenerationParams,
    GenerationStats,
    Generator,
    Hit,
    PermanentError,
    PromptTemplate,
    RetryableError,
)
from components.generation import EchoGenerator, TransformersGenerator, build_generator
from components.models import GENERATORS
from components.prompts import NO_CONTEXT, PROMPT_V1, build_context, build_messages, fit_hits


def hit(i: int, text: str | None = None, title: str = "FAQ", section: str | None = None) -> Hit:
    return Hit(
        chunk_id=f"c{i}", doc_id=f"d{i}", text=text if text is not None else f"passage {i} text",
        section=section if section is not None else f"Section {i}", anchor="", uri=f"https://x/{i}",
        title=title, score=1.0 - i / 100,
    )


MESSAGES = [
    ChatMessage("system", "be brief"),
    ChatMessage("user", "Documents: Document [1] (FAQ) shutil copies files. Question: how to copy?"),
]


async def collect(gen: Generator, messages=MESSAGES, params: GenerationParams | None = None, stats=None) -> list[str]:
    params = params or GenerationParams()
    stats = stats if stats is not None else GenerationStats()
    return [piece async for piece in gen.stream(messages, params, stats)]


# --------------------------------------------------------------------------- EchoGenerator
async def test_echo_streams_word_by_word_and_fills_stats():
    gen = EchoGenerator(words=5)
    gen.start()
    stats = GenerationStats()
    pieces = await collect(gen, stats=stats)
    assert pieces == ["Answer:", " Documents:", " Document", " [1]", " (FAQ)", " shutil", " [1]"]
    assert stats.prompt_tokens == 2 + 11
    assert stats.completion_tokens == len(pieces)
    assert stats.ttft_ms is not None and stats.ttft_ms >= 0
    assert stats.finish_reason == "stop"
    assert gen.requests == [MESSAGES]
    assert isinstance(gen, Generator)


async def test_echo_is_deterministic_and_respects_max_new_tokens():
    gen = EchoGenerator()
    assert await collect(gen) == await collect(gen)
    stats = GenerationStats()
    pieces = await collect(gen, params=GenerationParams(max_new_tokens=3), stats=stats)
    assert len(pieces) == 3 and stats.finish_reason == "length" and stats.completion_tokens == 3


async def test_echo_delay_streams_concurrently():
    gen = EchoGenerator(words=4, delay_s=0.05)
    arrivals: list[tuple[str, int]] = []  # (stream, piece number) in the order the pieces came
    most_active = 0

    async def follow(name: str) -> list[str]:
        nonlocal most_active
        pieces = []
        async for piece in gen.stream(MESSAGES, GenerationParams(), GenerationStats()):
            most_active = max(most_active, gen.active_streams)
            arrivals.append((name, len(pieces)))
            pieces.append(piece)
        return pieces

    a, b = await asyncio.gather(follow("a"), follow("b"))
    assert a == b and len(a) == 6
    # overlapped, not one after the other: both open at once, and b's first piece before a's last
    assert most_active == 2
    assert arrivals.index(("b", 0)) < arrivals.index(("a", 5))


async def test_echo_ttft_counts_the_first_delay():
    stats = GenerationStats()
    started = time.perf_counter()
    await collect(EchoGenerator(words=1, delay_s=0.05), stats=stats)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    assert stats.ttft_ms is not None and 40 <= stats.ttft_ms <= elapsed_ms  # the first 50 ms sleep, within the call


async def test_echo_early_close_stops_the_stream():
    gen = EchoGenerator(words=50, delay_s=0.01)
    stats = GenerationStats()
    agen = gen.stream(MESSAGES, GenerationParams(), stats)
    got = [await agen.__anext__(), await agen.__anext__()]
    assert gen.active_streams == 1
    await agen.aclose()
    assert got == ["Answer:", " Documents:"]
    assert gen.active_streams == 0
    assert stats.completion_tokens == 2 and stats.finish_reason == ""


async def test_echo_cancel_stops_the_stream():
    gen = EchoGenerator(words=50, delay_s=0.05)

    async def consume():
        async for _ in gen.stream(MESSAGES, GenerationParams(), GenerationStats()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.12)
    assert gen.active_streams == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gen.active_streams == 0


async def test_echo_errors():
    with pytest.raises(PermanentError, match="no messages to answer"):
        await collect(EchoGenerator(), messages=[])
    with pytest.raises(PermanentError, match="at most 5"):
        await collect(EchoGenerator(context_words=5))
    gen = EchoGenerator(error=RetryableError("boom"), error_after=2)
    got: list[str] = []
    with pytest.raises(RetryableError, match="boom"):
        async for piece in gen.stream(MESSAGES, GenerationParams(), GenerationStats()):
            got.append(piece)
    assert len(got) == 2


def test_build_generator(tmp_path: Path):
    assert isinstance(build_generator("echo", tmp_path), EchoGenerator)
    real = build_generator("smollm2-135m", tmp_path)  # not started: nothing loaded yet
    assert isinstance(real, TransformersGenerator) and isinstance(real, Generator)
    assert real.model_id == GENERATORS["smollm2-135m"].model_id
    with pytest.raises(PermanentError, match="unknown generator model"):
        build_generator("gpt-5", tmp_path)


def test_transformers_generator_requires_start(tmp_path: Path):
    gen = TransformersGenerator("smollm2-135m", tmp_path)
    with pytest.raises(RuntimeError, match="before start"):
        gen.count_tokens("hello")


# --------------------------------------------------------------------------- prompts
def test_prompt_v1_template_has_placeholders():
    assert isinstance(PROMPT_V1, PromptTemplate) and PROMPT_V1.version == "rag-v1"
    assert "{context}" in PROMPT_V1.user and "{question}" in PROMPT_V1.user
    assert "[N]" in PROMPT_V1.system and "don't know" in PROMPT_V1.system


def test_build_messages_numbers_passages_in_rank_order():
    hits = [hit(1, title="Library FAQ", section="Copying"), hit(2, title="", section=""), hit(3)]
    msgs = build_messages(PROMPT_V1, "  How do I copy a file? ", hits)
    assert [m.role for m in msgs] == ["system", "user"]
    assert msgs[0].content == PROMPT_V1.system
    user = msgs[1].content
    assert "Document [1] (Library FAQ: Copying)\npassage 1 text" in user
    assert "Document [2]\npassage 2 text" in user
    assert "Document [3] (FAQ: Section 3)" in user
    assert user.index("Document [1]") < user.index("Document [2]") < user.index("Document [3]")
    assert user.rstrip().endswith("Question: How do I copy a file?\nAnswer:")


def test_section_path_starting_with_title_is_not_repeated():
    text = build_context([hit(1, title="Programming FAQ", section="Programming FAQ > Numbers")])
    assert text.startswith("Document [1] (Programming FAQ > Numbers)\n")


def test_budget_drops_lowest_ranked_hits_first():
    hits = [hit(i, text="x" * 300) for i in range(1, 6)]
    one = len(build_context(hits[:1], 10_000))
    budget = 3 * one + 2 * 2 + 1  # three passages and their separators fit, a fourth does not
    kept = fit_hits(hits, budget)
    assert [h.chunk_id for h in kept] == ["c1", "c2", "c3"]
    context = build_context(hits, budget)
    assert len(context) <= budget
    assert "Document [3]" in context and "Document [4]" not in context


def test_budget_keeps_rank_order_even_when_a_later_hit_is_small():
    hits = [hit(1, text="a" * 100), hit(2, text="b" * 5000), hit(3, text="tiny")]
    assert [h.chunk_id for h in fit_hits(hits, 1000)] == ["c1"]  # hit 3 is not promoted over hit 2


def test_budget_cuts_a_single_oversized_best_hit():
    context = build_context([hit(1, text="word " * 1000), hit(2)], max_context_chars=300)
    assert context.startswith("Document [1]") and context.endswith("…")
    assert len(context) <= 300 and "Document [2]" not in context


def test_no_hits_gives_placeholder_context():
    msgs = build_messages(PROMPT_V1, "q?", [])
    assert NO_CONTEXT in msgs[-1].content


def test_history_is_included_between_system_and_question():
    history = [("user", "What is shutil?"), ("assistant", "A module for file operations [1].")]
    msgs = build_messages(PROMPT_V1, "And copying?", [hit(1)], history=history)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]
    assert (msgs[1].content, msgs[2].content) == (history[0][1], history[1][1])
    assert "Question: And copying?" in msgs[3].content


def test_history_budget_drops_oldest_turns_and_roles_are_checked():
    history = [("user", "a" * 50), ("assistant", "b" * 50), ("user", "c" * 50)]
    msgs = build_messages(PROMPT_V1, "q", [], history=history, max_history_chars=120)
    assert [m.content[0] for m in msgs[1:-1]] == ["b", "c"]
    with pytest.raises(ValueError, match="history role"):
        build_messages(PROMPT_V1, "q", [], history=[("system", "x")])


def test_context_with_braces_is_not_formatted():
    msgs = build_messages(PROMPT_V1, "what is {x}?", [hit(1, text="d = {'a': 1}  # {context}")])
    assert "d = {'a': 1}  # {context}" in msgs[-1].content and "what is {x}?" in msgs[-1].content


# --------------------------------------------------------------------------- weight materialisation
@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch):
    """Two importable-looking packages (never imported) holding the halves of a fake GGUF."""
    import hashlib

    from components import models

    site = tmp_path / "site"
    for i, payload in enumerate([b"GGUF-part-one;", b"part-two"], start=1):
        (site / f"eddy_fake_part{i}" / "data").mkdir(parents=True)
        (site / f"eddy_fake_part{i}" / "__init__.py").write_text("raise ImportError('never imported')\n")
        (site / f"eddy_fake_part{i}" / "data" / "part.bin").write_bytes(payload)
    monkeypatch.syspath_prepend(str(site))
    whole = b"GGUF-part-one;part-two"
    spec = models.PackagedGenerator(
        model_id="fake", parts=(("eddy_fake_part1", "data/part.bin"), ("eddy_fake_part2", "data/part.bin")),
        sha256=hashlib.sha256(whole).hexdigest(), size=len(whole),
    )
    monkeypatch.setitem(models.GENERATORS, "fake", spec)
    converted: list[bytes] = []

    def fake_convert(spec, gguf: Path, target: Path) -> None:
        converted.append(gguf.read_bytes())
        import time

        time.sleep(0.2)  # long enough for a second caller to queue on the lock
        target.mkdir()
        (target / "eddy-model.json").write_text("{}")

    monkeypatch.setattr(models, "_convert", fake_convert)
    return models, spec, whole, converted


def test_materialise_assembles_verifies_and_converts_once(tmp_path: Path, fake_parts):
    import threading

    models, spec, whole, converted = fake_parts
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(models.materialise("fake", cache)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert converted == [whole]  # one conversion, of the parts concatenated in order
    assert len(set(results)) == 1 and (results[0] / "eddy-model.json").is_file()
    assert not (cache / "fake" / "model.gguf").exists()  # assembled GGUF removed after conversion
    assert models.materialise("fake", cache) == results[0] and len(converted) == 1


def test_materialise_rejects_a_checksum_mismatch(tmp_path: Path, fake_parts, monkeypatch):
    models, spec, _, converted = fake_parts
    monkeypatch.setitem(models.GENERATORS, "fake", models.PackagedGenerator(
        model_id="fake", parts=spec.parts, sha256="0" * 64, size=spec.size))
    with pytest.raises(PermanentError, match="sha256"):
        models.materialise("fake", tmp_path)
    assert converted == [] and not (tmp_path / "fake" / "model.gguf").exists()


def test_materialise_reports_a_missing_package(tmp_path: Path, monkeypatch):
    from components import models

    monkeypatch.setitem(models.GENERATORS, "ghost", models.PackagedGenerator(
        model_id="ghost", parts=(("eddy_no_such_package", "x.gguf"),), sha256="0" * 64, size=1))
    with pytest.raises(PermanentError, match="not installed"):
        models.materialise("ghost", tmp_path)
