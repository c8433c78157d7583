"""pipelines.ingest: a source's listing becomes upserts, deletes of what vanished, and IndexEvent totals
(a recording client stands in for Kafka and the indexer)."""

from __future__ import annotations

import pathlib

from pipelines.ingest import collect_files, file_changes, ingest_source
from pipelines.progress import Reporter
from schemas import DocumentChange, IndexEvent


class RecordingClient:
    """The EddyClient calls ingest uses: publishes are recorded, every change is 'indexed' at once."""

    def __init__(self, lag_ms: float = 10.0) -> None:
        self.published: list[DocumentChange] = []
        self.flushed = 0
        self.lag_ms = lag_ms

    def end_offsets(self, topic: str) -> list:
        return []

    def publish_change(self, change: DocumentChange) -> DocumentChange:
        self.published.append(change)
        return change

    def delete_document(self, doc_id: str, *, source: str = "", collection: str | None = None) -> DocumentChange:
        return self.publish_change(DocumentChange(op="delete", doc_id=doc_id, version=1, source=source,
                                                  collection=collection))

    def flush(self) -> None:
        self.flushed += 1

    def wait_indexed(self, change_ids, start, *, timeout_s: float, on_event=None) -> list[IndexEvent]:
        by_id = {str(c.event_id): c for c in self.published}
        events = []
        for i, change_id in enumerate(change_ids):
            change = by_id[change_id]
            deleted = change.op == "delete"
            events.append(IndexEvent(doc_id=change.doc_id, version=change.version, change_id=change_id,
                                     status="deleted" if deleted else "indexed", chunks_total=0 if deleted else 2,
                                     chunks_embedded=0 if deleted else 2, chunks_deleted=1 if deleted else 0,
                                     chunks_unchanged=0, collection="c", embedder="e", chunker="k",
                                     lag_ms=self.lag_ms * (i + 1)))
            if on_event:
                on_event(events[-1])
        return events


class Steps(Reporter):
    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def start(self, task: str, total: int) -> None:
        self.totals[task], self.done[task] = total, 0

    def advance(self, task: str, n: int = 1) -> None:
        self.done[task] += n


def test_a_listing_publishes_upserts_deletes_what_vanished_and_totals_the_events(tmp_path: pathlib.Path):
    (tmp_path / "a.md").write_text("# A\n\ntext a\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.rst").write_text("B\n=\n\ntext b\n")
    (tmp_path / "c.txt").write_bytes(b"\x00binary")
    files, problems = collect_files([tmp_path, tmp_path / "missing"], "kb")
    assert [f.doc_id for f in files] == ["kb:a.md", "kb:c.txt", "kb:sub/b.rst"] and len(problems) == 1
    client, steps, skipped = RecordingClient(), Steps(), []
    live = {"kb:a.md", "kb:c.txt", "kb:gone.md"}

    result = ingest_source(client, file_changes(files, source="kb", acl=("staff",), collection="docs"),
                           listing=[f.doc_id for f in files], live_doc_ids=live, source="kb", collection="docs",
                           progress=steps, tasks=("publishing kb", "indexing"), on_skipped=skipped.append)

    # the unreadable file is skipped but stays listed: its indexed version is kept, only kb:gone.md goes
    assert [(c.op, c.doc_id) for c in client.published] == [
        ("upsert", "kb:a.md"), ("upsert", "kb:sub/b.rst"), ("delete", "kb:gone.md")]
    assert all(c.collection == "docs" and c.source == "kb" for c in client.published)
    assert client.published[0].acl == ["staff"] and client.published[0].content_type == "text/markdown"
    assert len(skipped) == 1 and "binary file" in skipped[0] and result.skipped == skipped
    assert steps.totals == steps.done == {"publishing kb": 4, "indexing": 3}
    totals = result.totals()
    assert (totals["documents"], totals["deletes"], totals["indexed_events"]) == (2, 1, 3)
    assert (totals["chunks_total"], totals["chunks_embedded"], totals["chunks_deleted"]) == (4, 4, 1)
    assert totals["lag_ms_p50"] == 20.0 and totals["lag_ms_p99"] == 29.8  # 10, 20, 30 ms interpolated


def test_without_wait_nothing_is_awaited_and_ready_changes_pass_through():
    client = RecordingClient()
    change = DocumentChange(op="upsert", doc_id="d1", version=7, text="text")

    result = ingest_source(client, [change], wait=False)

    assert client.published == [change] and client.flushed == 1
    assert result.indexed == [] and result.totals()["lag_ms_p50"] is None
    assert ingest_source(client, [change]).indexed[0].change_id == str(change.event_id)
