"""Sections, not fragments: the chunks of a vector search grouped into the sections they belong to.

A section is a document's ``(doc_id, section path, anchor)``; the chunker cuts a long one into several
chunks. Answers rank, quote and cite sections: a section scores as its best chunk (max over its
chunks, "MaxP"), so a section is neither cited twice nor pushed down the list by its own fragments.
``bench.eval_chunking`` compares this with a section's first chunk and with a per-section centroid.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.base import Hit

__all__ = ["rank_sections", "section_key"]


def section_key(hit: Hit) -> tuple[str, str, str]:
    """The section a chunk belongs to: ``(doc_id, section path, anchor)``."""
    return hit.doc_id, hit.section, hit.anchor


def rank_sections(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per section, best first: the section's best chunk (its first in ``hits``, which are
    best first), the sections in the order of those chunks.

    The hit's ``score`` is the section's score (its best chunk's); its ``chunk_id`` and ``text`` the
    best chunk's, the passage a prompt quotes and a citation names.
    """
    seen: set[tuple[str, str, str]] = set()
    out: list[Hit] = []
    for hit in hits:
        key = section_key(hit)
        if key not in seen:
            seen.add(key)
            out.append(hit)
    return out
