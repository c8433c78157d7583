"""Ingest: documents of a source become DocumentChange events on ``docs.changes``, then IndexEvents.

A *source* is a set of documents kept in sync: each ingest of a source is its complete
listing, so documents of that source that the index holds but the listing lacks are
published as deletes. :func:`ingest_source` is that loop for every caller (``eddy ingest``,
``eddy demo``, ``eddy eval``, the integration tests, the benchmarks); :func:`ingest_files` is
``eddy ingest`` on files (:func:`collect_files`, :func:`python_docs_files`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.stats import percentile
from config.settings import Settings
from pipelines.progress import Reporter
from pipelines.python_docs import python_doc_meta
from schemas import DocumentChange, IndexEvent
from streams.client import EddyClient, new_version

#: File suffix -> content type. ``.rst.txt`` is how Sphinx ships reST sources.
CONTENT_TYPES = {
    ".rst": "text/x-rst", ".rst.txt": "text/x-rst", ".md": "text/markdown", ".markdown": "text/markdown",
    ".txt": "text/plain", ".text": "text/plain", ".html": "text/html", ".htm": "text/html",
}


class IngestError(Exception):
    """A document that cannot be ingested; the message says why. Nothing is published for it."""


@dataclass(frozen=True)
class SourceFile:
    """A file of a source: where it lies, its document id, title, URI and content type."""

    path: Path
    doc_id: str
    title: str
    uri: str
    content_type: str


@dataclass
class IngestResult:
    """Totals of one ingest run (the ``eddy ingest --json`` output); ``seconds`` from the first
    publish to the last awaited IndexEvent (to the flush without waiting)."""

    source: str
    documents: int = 0
    deletes: int = 0
    skipped: list[str] = field(default_factory=list)
    indexed: list[IndexEvent] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, object]:
        """Counts of the run and chunk totals of its IndexEvents; lag percentiles in ms (None without events)."""
        lags = [e.lag_ms for e in self.indexed]
        return {
            "source": self.source,
            "documents": self.documents,
            "deletes": self.deletes,
            "skipped": self.skipped,
            "indexed_events": len(self.indexed),
            "chunks_total": sum(e.chunks_total for e in self.indexed),
            "chunks_embedded": sum(e.chunks_embedded for e in self.indexed),
            "chunks_deleted": sum(e.chunks_deleted for e in self.indexed),
            "chunks_unchanged": sum(e.chunks_unchanged for e in self.indexed),
            "lag_ms_p50": round(percentile(lags, 50), 1) if lags else None,
            "lag_ms_p99": round(percentile(lags, 99), 1) if lags else None,
            "seconds": round(self.seconds, 2),
        }


def content_type_of(path: Path) -> str | None:
    """The content type of a file by its suffix (:data:`CONTENT_TYPES`); None for other suffixes."""
    name = path.name.lower()
    for suffix in sorted(CONTENT_TYPES, key=len, reverse=True):
        if name.endswith(suffix):
            return CONTENT_TYPES[suffix]
    return None


def read_text(path: Path) -> str:
    """The file as UTF-8 text; IngestError for binary, non-UTF-8 or blank files."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise IngestError(f"{path}: binary file (contains NUL bytes), not ingested")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}), not ingested") from exc
    if not text.strip():
        raise IngestError(f"{path}: empty file, not ingested")
    return text


def collect_files(paths: Sequence[Path], source: str) -> tuple[list[SourceFile], list[str]]:
    """Files under ``paths`` with a known text suffix (a file named directly may have any suffix).

    Returns (files, problems); problems are human-readable lines for missing paths.
    ``doc_id`` = ``source:`` + path relative to the argument it was found under.
    """
    files: list[SourceFile] = []
    problems: list[str] = []
    for root in paths:
        if not root.exists():
            problems.append(f"{root}: no such file or directory, not ingested")
            continue
        if root.is_file():
            candidates = [(root, root.name)]
        else:
            candidates = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*"))
                          if p.is_file() and content_type_of(p) is not None]
        for path, rel in candidates:
            files.append(SourceFile(path=path, doc_id=f"{source}:{rel}", title=path.name,
                                    uri=path.resolve().as_uri(), content_type=content_type_of(path) or "text/plain"))
    return files, problems


def python_docs_files(sources_dir: Path) -> list[SourceFile]:
    """The Python documentation's ``_sources/**/*.rst.txt`` as SourceFiles (doc ids ``python-docs:<path>``)."""
    out = []
    for path in sorted(sources_dir.rglob("*.rst.txt")):
        doc_id, uri, title = python_doc_meta(sources_dir, path)
        out.append(SourceFile(path=path, doc_id=doc_id, title=title, uri=uri, content_type="text/x-rst"))
    return out


def file_changes(
    files: Iterable[SourceFile], *, source: str, acl: Sequence[str] = (), collection: str | None = None,
) -> Iterator[DocumentChange | IngestError]:
    """An upsert per file, read when the previous one is published; the IngestError of a file
    :func:`read_text` refuses instead of its upsert."""
    for f in files:
        try:
            text = read_text(f.path)
        except IngestError as exc:
            yield exc
            continue
        yield DocumentChange(op="upsert", doc_id=f.doc_id, version=new_version(), text=text, title=f.title,
                             uri=f.uri, source=source, content_type=f.content_type, acl=list(acl),
                             collection=collection)


def ingest_source(
    client: EddyClient, changes: Iterable[DocumentChange | IngestError], *, listing: Collection[str] = (),
    live_doc_ids: Collection[str] = (), source: str = "", collection: str | None = None, wait: bool = True,
    timeout_s: float = 300.0, progress: Reporter | None = None, tasks: tuple[str, str] = ("publishing", "indexing"),
    on_skipped: Callable[[str], None] | None = None,
) -> IngestResult:
    """Publish ``changes`` in order, then a delete (of ``source`` in ``collection``, None = the
    worker's default collection) per doc id of ``live_doc_ids`` missing from ``listing`` (the doc
    ids of the source's complete listing, skipped documents included); flush; with ``wait``,
    wait until an IndexEvent reports every change published.

    ``changes`` is consumed lazily (each change is stamped when it is built, so ``lag_ms``
    counts from its publish); an IngestError item is a skipped document: its message goes to
    ``skipped`` and ``on_skipped``. ``progress`` gets the phases ``tasks[0]`` (one step per
    item of ``listing`` plus one per delete) and ``tasks[1]`` (one per IndexEvent).
    ``timeout_s`` is the wait's idle timeout. Raises EddyClientError when a record cannot be
    delivered or no awaited IndexEvent arrived for ``timeout_s`` seconds.
    """
    progress = progress or Reporter()
    deletes = sorted(set(live_doc_ids) - set(listing))
    result = IngestResult(source=source)
    start = client.end_offsets("index.events")
    started = time.perf_counter()
    progress.start(tasks[0], len(listing) + len(deletes))
    published: list[DocumentChange] = []
    for change in changes:
        if isinstance(change, IngestError):
            result.skipped.append(str(change))
            if on_skipped:
                on_skipped(str(change))
        else:
            published.append(client.publish_change(change))
        progress.advance(tasks[0])
    for doc_id in deletes:
        published.append(client.delete_document(doc_id, source=source, collection=collection))
        progress.advance(tasks[0])
    client.flush()
    result.documents = sum(c.op == "upsert" for c in published)
    result.deletes = sum(c.op == "delete" for c in published)
    if wait and published:
        progress.start(tasks[1], len(published))
        result.indexed = client.wait_indexed([str(c.event_id) for c in published], start, timeout_s=timeout_s,
                                             on_event=lambda _e: progress.advance(tasks[1]))
    result.seconds = time.perf_counter() - started
    return result


def ingest_files(
    settings: Settings, files: Sequence[SourceFile], *, source: str, acl: Sequence[str] = (),
    collection: str | None = None, wait: bool = True, progress: Reporter | None = None,
    on_skipped: Callable[[str], None] | None = None,
) -> IngestResult:
    """``eddy ingest``: ``files`` as the complete listing of ``source`` in ``collection`` (None =
    ``settings.collection``), readable to the groups ``acl`` (empty = public); waits for the
    indexer with ``wait``. Progress phases ``publishing <source>`` and ``indexing``.

    Raises ComponentError when Milvus cannot be read and EddyClientError as :func:`ingest_source`.
    """
    from components.milvus_admin import read_live_doc_ids

    client = EddyClient.from_settings(settings)
    live = read_live_doc_ids(settings.milvus_address, collection or settings.collection, source)
    return ingest_source(client, file_changes(files, source=source, acl=acl, collection=collection),
                         listing=[f.doc_id for f in files], live_doc_ids=live, source=source, collection=collection,
                         wait=wait, progress=progress, tasks=(f"publishing {source}", "indexing"),
                         on_skipped=on_skipped)
