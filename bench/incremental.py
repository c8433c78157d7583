"""Incremental edit: change one section of one large document and re-index it.

    .venv/bin/python -m bench.incremental [--doc library/stdtypes]

Prints: chunks of the document, chunks whose content the edit changed (computed with the
chunker), chunks the indexer embedded (must be equal), and the time of the edit relative to
indexing the whole (edited) document from scratch under a new doc id.
"""

from __future__ import annotations

import argparse

from bench.common import bench_stack
from components.chunking import StructureChunker
from config.settings import Settings
from pipelines.ingest import ingest_source, python_docs_files, read_text
from pipelines.python_docs import ensure_python_docs
from schemas import DocumentChange, IndexEvent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="library/stdtypes", help="Python docs page to edit")
    parser.add_argument("--repeat", type=int, default=3, help="edits (and full re-indexes) to time")
    args = parser.parse_args()
    base = Settings()
    [f] = [f for f in python_docs_files(ensure_python_docs(base.home / "data")) if f.doc_id.endswith(":" + args.doc)]
    text = read_text(f.path)
    chunker = StructureChunker(base.chunk_max_chars, base.chunk_overlap_chars)

    def change(doc_id: str, version: int, body: str) -> DocumentChange:
        return DocumentChange(op="upsert", doc_id=doc_id, version=version, title=f.title, uri=f.uri, text=body,
                              content_type="text/x-rst", source="bench")

    def ids(doc_id: str, body: str) -> set[str]:
        return {c.chunk_id for c in chunker.chunk(doc_id, body, "text/x-rst", f.title)}

    def index(client, doc_id: str, version: int, body: str) -> tuple[IndexEvent, float]:
        """The IndexEvent of one upsert and the seconds from its publish to that event."""
        result = ingest_source(client, [change(doc_id, version, body)], timeout_s=600)
        [event] = result.indexed
        return event, result.seconds

    with bench_stack("incremental", ("indexer",)) as (settings, stack, client):
        first, t_first = index(client, f.doc_id, 1, text)
        print(f"{f.doc_id}: {first.chunks_total} chunks, first index {t_first:.2f} s")
        marker = "Truth Value Testing"  # a section in the middle of library/stdtypes
        anchor = text.find(marker) if marker in text else len(text) // 2
        edits, fulls = [], []
        previous = text
        for i in range(args.repeat):
            para_end = text.find("\n\n", anchor + 200)
            edited = text[:para_end] + f" Edited sentence number {i} for the benchmark." + text[para_end:]
            changed = len(ids(f.doc_id, edited) - ids(f.doc_id, previous))
            ev, t_edit = index(client, f.doc_id, 2 + i, edited)
            full, t_full = index(client, f"{f.doc_id}#copy{i}", 1, edited)
            print(f"edit {i}: changed chunks {changed}, embedded {ev.chunks_embedded}, deleted {ev.chunks_deleted}; "
                  f"edit {t_edit * 1e3:.0f} ms vs full re-index {t_full * 1e3:.0f} ms ({full.chunks_embedded} chunks)")
            assert ev.chunks_embedded == changed, "the indexer must embed exactly the changed chunks"
            edits.append(t_edit)
            fulls.append(t_full)
            previous = edited
        ratio = sum(edits) / sum(fulls)
        print(f"edit/full time ratio: {ratio:.3f} (mean edit {1e3 * sum(edits) / len(edits):.0f} ms, "
              f"mean full {1e3 * sum(fulls) / len(fulls):.0f} ms)")


if __name__ == "__main__":
    main()
