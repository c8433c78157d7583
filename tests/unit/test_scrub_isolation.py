"""A scrub that overruns its deadline cannot stall the other agents (issue 10, item 8): the curator scrubs
on a thread of its own (abandoned and replaced on a timeout) or in a child process (killed and restarted),
never on the event loop's shared pool, and still fails closed."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from agents.curator import Curator
from components.base import Conversation, Scrubbed
from components.curation import JunkRules, MemoryVettedIndex
from components.embedding import HashEmbedder
from config.settings import Settings
from schemas import AnswerEvent, Citation, Feedback, Query
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord
from streams.retry import call_blocking


class Hangs:
    """Identity scrubber that hangs on any text containing ``hang`` (picklable: it also runs in a child)."""

    version = "hangs-fake"

    def __init__(self, hang_s: float = 60.0) -> None:
        self.hang_s = hang_s

    def start(self) -> None:
        pass

    def scrub_batch(self, conversations):
        if any("hang" in text for c in conversations for text in c.texts):
            time.sleep(self.hang_s)
        return [Scrubbed(tuple(t.replace("secret", "<SECRET_0>") for t in c.texts), {"SECRET": 0})
                for c in conversations]


_offset = iter(range(10**6))


def shared_conversation(settings, text: str) -> list[RawRecord]:
    qid = uuid.uuid4().hex
    events = [Query(query_id=qid, conversation_id="c", user_id="u", text=text),
              AnswerEvent(query_id=qid, kind="final", seq=0, text="Use shutil.copy2.", model="m",
                          citations=[Citation(doc_id="d", chunk_id="c", uri="u", title="t", score=0.9)]),
              Feedback(query_id=qid, user_id="u", rating="up", share=True)]
    topics = ("curator.queries", "answers", "feedback")
    return [RawRecord(settings.topic(t), 0, next(_offset), qid.encode(), e.to_bytes())
            for t, e in zip(topics, events, strict=True)]


def curator_with(tmp_path, scrubber, **kw):
    settings = Settings(home=tmp_path, **{"scrub_timeout_s": 0.3, **kw})
    publisher = MemoryPublisher()
    curator = Curator(settings, scrubber, JunkRules(), HashEmbedder(32), MemoryVettedIndex(), publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "curator"), {})
    return curator, publisher, settings


def outcomes(publisher, settings) -> list[str]:
    from schemas import ScrubAudit

    return [ScrubAudit.model_validate_json(v).outcome for v in publisher.on(settings.topic("feedback.audit"))]


async def test_a_stuck_scrub_holds_no_thread_of_the_shared_pool(tmp_path):
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))  # a small machine's shared pool, made smaller
    curator, publisher, settings = curator_with(tmp_path, Hangs(hang_s=3.0))
    await curator.handle_batch(shared_conversation(settings, "please hang on a moment, how do I copy files?"))
    assert outcomes(publisher, settings) == ["rejected"]  # fail closed
    # every agent's blocking calls go through the shared pool: they must not wait for the stuck scrub
    assert await asyncio.wait_for(call_blocking(lambda: "ok", what="another agent's call"), 1.0) == "ok"


async def test_after_a_timeout_the_next_scrub_runs_at_once(tmp_path):
    curator, publisher, settings = curator_with(tmp_path, Hangs(hang_s=3.0))
    await curator.handle_batch(shared_conversation(settings, "please hang on a moment, how do I copy files?"))
    t0 = time.monotonic()
    await curator.handle_batch(shared_conversation(settings, "How do I copy a secret file with shutil?"))
    assert time.monotonic() - t0 < 1.5
    assert outcomes(publisher, settings) == ["rejected", "vetted"]


@pytest.fixture
def process_scrubber():
    from components.scrub_process import ProcessScrubber

    scrubber = ProcessScrubber(partial(Hangs), "hangs-fake", start_timeout_s=120.0)
    scrubber.start()
    yield scrubber
    scrubber.close()


async def test_a_scrub_in_a_child_process_is_killed_on_timeout_and_the_child_restarted(process_scrubber):
    fine = [Conversation("q", ("a secret question",))]
    [result] = await process_scrubber.scrub_async(fine, 30.0)
    assert result.texts == ("a <SECRET_0> question",)
    child = process_scrubber.pid
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await process_scrubber.scrub_async([Conversation("q", ("hang",))], 0.5)
    assert time.monotonic() - t0 < 5.0
    await asyncio.sleep(0.2)
    assert not _alive(child)  # killed, not left running
    [result] = await process_scrubber.scrub_async(fine, 60.0)  # a new child
    assert result.texts == ("a <SECRET_0> question",) and process_scrubber.pid != child


async def test_the_curator_fails_closed_with_a_process_scrubber(tmp_path, process_scrubber):
    curator, publisher, settings = curator_with(tmp_path, process_scrubber, scrub_timeout_s=1.0)
    await curator.handle_batch(shared_conversation(settings, "please hang on a moment, how do I copy files?"))
    await curator.handle_batch(shared_conversation(settings, "How do I copy a secret file with shutil?"))
    assert outcomes(publisher, settings) == ["rejected", "vetted"]
    everything = b"".join(v for _, _, v in publisher.sent)
    assert b"hang on a moment" not in everything and b"a secret file" not in everything


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
