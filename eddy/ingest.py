"""``eddy ingest``: files (or the Python documentation) become DocumentChange events.

A *source* is a set of documents kept in sync: each ingest of a source is its complete
listing, so documents of that source that the index holds but the listing lacks are
published as deletes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas import DocumentChange, IndexEvent
from streams.client import EddyClient, new_version

#: File suffix -> content type. ``.rst.txt`` is how Sphinx ships reST sources.
CONTENT_TYPES = {
    ".rst": "text/x-rst", ".rst.txt": "text/x-rst", ".md": "text/markdown", ".markdown": "text/markdown",
    ".txt": "text/plain", ".text": "text/plain", ".html": "text/html", ".htm": "text/html",
}


class IngestError(Exception):
    """A path that cannot be ingested; the message says why. Nothing is published for it."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    doc_id: str
    title: str
    uri: str
    content_type: str


@dataclass
class IngestResult:
    """Totals of one ingest run (the ``--json`` output)."""

    source: str
    documents: int = 0
    deletes: int = 0
    skipped: list[str] = field(default_factory=list)
    indexed: list[IndexEvent] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, object]:
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


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with numpy's default linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def content_type_of(path: Path) -> str | None:
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
    from eddy.python_docs import python_doc_meta

    out = []
    for path in sorted(sources_dir.rglob("*.rst.txt")):
        doc_id, uri, title = python_doc_meta(sources_dir, path)
        out.append(SourceFile(path=path, doc_id=doc_id, title=title, uri=uri, content_type="text/x-rst"))
    return out


def publish(
    client: EddyClient, files: Iterable[SourceFile], *, source: str, acl: Sequence[str],
    live_doc_ids: set[str], on_published: Callable[[DocumentChange], None] | None = None,
    on_skipped: Callable[[str], None] | None = None, collection: str | None = None,
) -> tuple[list[DocumentChange], list[str]]:
    """Publish an upsert per readable file and a delete per live doc of ``source`` no longer listed,
    into ``collection`` (None = the worker's default collection).

    Returns (changes published, skipped-file messages). Delivery is awaited (``flush``).
    """
    changes: list[DocumentChange] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for f in files:
        try:
            text = read_text(f.path)
        except IngestError as exc:
            skipped.append(str(exc))
            if on_skipped:
                on_skipped(str(exc))
            continue
        seen.add(f.doc_id)
        change = client.publish_document(f.doc_id, text, title=f.title, uri=f.uri, source=source,
                                         content_type=f.content_type, acl=acl, version=new_version(),
                                         collection=collection)
        changes.append(change)
        if on_published:
            on_published(change)
    for doc_id in sorted(live_doc_ids - seen):
        change = client.delete_document(doc_id, source=source, collection=collection)
        changes.append(change)
        if on_published:
            on_published(change)
    client.flush()
    return changes, skipped
