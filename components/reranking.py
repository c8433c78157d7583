"""Rerankers: reorder the hits of a vector search for a query before the prompt is built.

:class:`KeepOrder` is the default until a reranker trained on Eddy's own data is promoted (the
retrieval-loop work): it returns the hits in retrieval order, scores untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.base import Hit


class KeepOrder:
    """The identity Reranker: hits in retrieval order (cosine similarity, best first)."""

    version = "keep-order"

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        return list(hits)
