"""Answerer against the real broker, Milvus Lite server and a real (small) model:
invariants 4 (exactly one terminal event per query), 5 (ACL) and 7 (bad queries to the DLQ)."""

from __future__ import annotations

import asyncio
import json

import pytest

from schemas import AnswerEvent, DocumentChange
from tests.integration.helpers import dead_letters, read_topic

pytestmark = pytest.mark.integration

DOCS = {
    "public-copy": ("Copying files", [], "Copying files\n=============\n\nUse shutil.copy(src, dst) to copy a file. "
                    "shutil.copy2 also keeps the metadata of the file."),
    "secret-salary": ("Salary bands", ["hr"], "Salary bands\n============\n\nThe salary band for engineers "
                      "is confidential and known only to HR. Salary band details: level five pays best."),
    "eng-deploy": ("Deploying", ["eng", "ops"], "Deploying\n=========\n\nTo deploy the service run the deploy "
                   "pipeline; the salary of the pipeline is zero."),
}


@pytest.fixture
def indexed(settings, client, stack):
    stack.start_worker(("indexer", "answerer"))
    start = client.end_offsets("index.events")
    changes = [
        client.publish_change(DocumentChange(op="upsert", doc_id=d, version=1, title=t, acl=acl, text=text,
                                             uri=f"https://example.test/{d}", content_type="text/x-rst"))
        for d, (t, acl, text) in DOCS.items()
    ]
    client.flush()
    client.wait_indexed([str(c.event_id) for c in changes], start, timeout_s=180)
    return client


async def collect(client, text, **kw) -> list[AnswerEvent]:
    return [e async for e in client.ask(text, timeout_s=180, **kw)]


def test_answer_streams_deltas_then_one_final_with_citations(indexed):
    events = asyncio.run(collect(indexed, "How do I copy a file?", top_k=2))
    kinds = [e.kind for e in events]
    assert kinds[-1] == "final" and kinds.count("final") == 1 and "error" not in kinds
    assert [e.seq for e in events] == list(range(len(events)))
    final = events[-1]
    assert "".join(e.text for e in events[:-1]).strip() == final.text
    assert final.citations and final.citations[0].doc_id == "public-copy"
    assert final.citations[0].uri.startswith("https://example.test/public-copy")
    assert final.usage.completion_tokens > 0 and final.usage.prompt_tokens > 0
    t = final.timings
    assert 0 <= t.retrieve_ms <= t.ttft_ms <= t.total_ms
    assert final.prompt_version and final.model and final.pipeline_version


@pytest.mark.parametrize(
    ("groups", "visible"),
    [
        ([], {"public-copy"}),
        (["hr"], {"public-copy", "secret-salary"}),
        (["ops"], {"public-copy", "eng-deploy"}),
        (["hr", "eng"], {"public-copy", "secret-salary", "eng-deploy"}),
        (["marketing"], {"public-copy"}),
    ],
)
def test_acl_filter_never_leaks_a_chunk(indexed, groups, visible):
    events = asyncio.run(collect(indexed, "What is the salary band?", groups=groups, top_k=10, max_tokens=4))
    final = events[-1]
    assert final.kind == "final"
    assert {c.doc_id for c in final.citations} == visible


def test_concurrent_queries_each_get_exactly_one_terminal_event(settings, indexed):
    async def many():
        return await asyncio.gather(*[
            collect(indexed, f"How do I copy a file? ({i})", max_tokens=8) for i in range(6)
        ])

    results = asyncio.run(many())
    ids = set()
    for events in results:
        assert sum(e.terminal for e in events) == 1 and events[-1].kind == "final"
        ids.add(events[-1].query_id)
    assert len(ids) == 6
    # and on the topic itself, not just in what the client yielded:
    records = read_topic(settings, "answers", min_count=1)
    terminal = [json.loads(m.value()) for m in records if json.loads(m.value())["kind"] in ("final", "error")]
    for qid in ids:
        assert sum(t["query_id"] == qid for t in terminal) == 1


def test_bad_queries_go_to_dlq_with_an_error_answer(settings, indexed):
    producer = indexed._producer
    topic = settings.topic("queries")
    producer.produce(topic, key=b"c1", value=b"{oops")
    producer.produce(topic, key=b"c2", value=json.dumps(
        {"query_id": "q-empty", "conversation_id": "c2", "text": "   "}).encode())
    producer.produce(topic, key=b"c3", value=json.dumps(
        {"query_id": "q-long", "conversation_id": "c3", "text": "why? " * 2000}).encode())
    producer.flush(10)
    # the agent keeps answering after them
    events = asyncio.run(collect(indexed, "How do I copy a file?", max_tokens=4))
    assert events[-1].kind == "final"
    letters = dead_letters(settings, min_count=3)
    reasons = {d["key"]: d for d in letters}
    assert reasons["c1"]["error_type"] == "malformed_json"
    assert "empty query" in reasons["c2"]["reason"]
    assert reasons["c3"]["error_type"] == "oversized"
    answers = [json.loads(m.value()) for m in read_topic(settings, "answers", min_count=1)]
    errors = {a["query_id"]: a for a in answers if a["kind"] == "error"}
    assert "empty query" in errors["q-empty"]["error"]
    assert "above the maximum" in errors["q-long"]["error"]
