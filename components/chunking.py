"""Structure-aware chunking of reST, Markdown, HTML and plain-text documents.

:class:`StructureChunker` splits a document into sections by its headings
(:func:`components.parsing.parse_sections`), then each section into chunks of at most
``max_chars`` characters at paragraph, sentence and word boundaries. Every chunk depends
only on the document title, its section's heading path and its section's text, so editing
one section changes the chunk ids of that section only: the rest of the document need not
be re-embedded.

What is embedded (``embed_text``) is the chunk's text under its section's own heading
(``prefix="lead"``, the default): neither the document title nor the ancestor headings, which every
sibling section shares and which pull siblings together and away from the question; a section's
later chunks also carry its opening (whole sentences, at most :data:`LEAD_CHARS` characters), so that
each says what its section is about instead of competing as a context-free fragment. ``bench.eval_chunking`` on
python-faq (sections ranked by their best chunk, nDCG@10): title path 0.599, own heading 0.630, own
heading + lead 0.655. ``prefix="heading"`` omits the lead; ``prefix="path"`` embeds
"title > heading path" as before (the ``structure-v1`` ids of collections built then).

Sizes are counted in Python ``str`` characters (code points), not bytes or tokens.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right

from components.base import Chunk
from components.parsing import parse_sections

__all__ = ["PREFIXES", "StructureChunker"]

_VERSION = "structure-v1"
#: What ``embed_text`` may put above a chunk's text (see :class:`StructureChunker`).
PREFIXES = ("heading", "lead", "path")
#: ``prefix="lead"``: at most this many characters of a section's opening (whole sentences, else whole
#: words) are embedded above each of its later chunks.
LEAD_CHARS = 150


# --------------------------------------------------------------------------- splitting
_SENT_BREAK = re.compile(r"[.!?][\"')\]]*(\s+)")
_WS = re.compile(r"\s+")


def _split_long(p: str, limit: int) -> list[tuple[str, str]]:
    """Split ``p`` into ``(joiner, piece)`` with ``len(piece) <= limit``.

    Cuts at the last sentence end that fits, else the last whitespace, else mid-word.
    ``joiner`` restores the cut ("" for the first piece and mid-word cuts).
    """
    sent = [m.span(1) for m in _SENT_BREAK.finditer(p)]
    ws = [m.span() for m in _WS.finditer(p)]
    sent_starts = [s for s, _ in sent]
    ws_starts = [s for s, _ in ws]
    pieces: list[tuple[str, str]] = []
    joiner = ""
    start = 0
    while len(p) - start > limit:
        end_lim = start + limit
        cut = None
        for starts, spans in ((sent_starts, sent), (ws_starts, ws)):
            k = bisect_right(starts, end_lim) - 1
            if k >= 0 and starts[k] > start:
                cut = spans[k]
                break
        if cut is None:
            pieces.append((joiner, p[start:end_lim]))
            joiner, start = "", end_lim
            continue
        pieces.append((joiner, p[start : cut[0]]))
        joiner = "\n" if "\n" in p[cut[0] : cut[1]] else " "
        start = cut[1]
    pieces.append((joiner, p[start:]))
    return pieces


def _head(text: str, n: int) -> str:
    """Longest prefix of ``text`` of at most ``n`` chars made of whole sentences, else whole words."""
    if len(text) <= n:
        return text
    cut = None
    for m in _SENT_BREAK.finditer(text, 0, n + 1):
        cut = m.start(1)
    if cut is None:
        spaces = [m.start() for m in _WS.finditer(text, 0, n + 1)]
        cut = spaces[-1] if spaces else n
    return text[:cut].rstrip()


_TAIL_SENT = re.compile(r"[.!?][\"')\]]*\s+|\n\s*\n")


def _tail(text: str, n: int) -> str:
    """Longest suffix of ``text`` of at most ``n`` chars made of whole sentences, else whole words."""
    if n <= 0:
        return ""
    if len(text) <= n:
        return text
    start = len(text) - n
    window = text[start:]
    for m in _TAIL_SENT.finditer(window):
        if m.end() < len(window):
            return window[m.end() :]
    if text[start - 1].isspace():
        return window.lstrip()
    m = _WS.search(window)
    if m and m.end() < len(window):
        return window[m.end() :]
    return ""


# --------------------------------------------------------------------------- chunker
def _sha256(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


class StructureChunker:
    """Heading-aware chunker for ``text/x-rst``, ``text/markdown``, ``text/html`` and ``text/plain``.

    Args:
        max_chars: largest chunk ``text``, in characters (>= 100). The ``embed_text`` adds
            the heading on top.
        overlap_chars: at most this many trailing characters of a chunk (whole sentences,
            else whole words) are repeated at the start of the next chunk of the same
            section; ``0 <= overlap_chars < max_chars / 2``.
        prefix: what ``embed_text`` puts above the text: ``"lead"`` the section's own
            (innermost) heading (nothing for text outside any heading) and, above every
            chunk but the section's first, the section's opening (whole sentences, else
            words, at most :data:`LEAD_CHARS` characters);
            ``"heading"`` the heading alone; ``"path"`` the document title and the whole
            heading path (``structure-v1`` before prefixes).

    Raises:
        ValueError: on parameters outside those ranges.
    """

    def __init__(self, max_chars: int = 1000, overlap_chars: int = 150, prefix: str = "lead") -> None:
        if max_chars < 100:
            raise ValueError(f"max_chars must be >= 100, got {max_chars}")
        if overlap_chars < 0 or overlap_chars >= max_chars / 2:
            raise ValueError(
                f"overlap_chars must be in [0, max_chars/2), got {overlap_chars} for max_chars={max_chars}")
        if prefix not in PREFIXES:
            raise ValueError(f"prefix must be one of {', '.join(PREFIXES)}, got {prefix!r}")
        self.max_chars = max_chars
        self.overlap_chars = overlap_chars
        self.prefix = prefix
        # Pieces of an over-long paragraph leave room for a full overlap plus a 1-char joiner.
        self._piece_limit = max_chars - overlap_chars - 1 if overlap_chars else max_chars

    @property
    def config_id(self) -> str:
        """``structure-v1:max=<max_chars>,overlap=<overlap_chars>[,prefix=<prefix>]`` (no ``prefix`` part
        for ``"path"``, the ids of collections built before prefixes); changes whenever output would."""
        tail = "" if self.prefix == "path" else f",prefix={self.prefix}"
        return f"{_VERSION}:max={self.max_chars},overlap={self.overlap_chars}{tail}"

    def chunk(self, doc_id: str, text: str, content_type: str, title: str = "") -> list[Chunk]:
        """Split one document into chunks, in document order.

        Args:
            doc_id: document id, part of every ``chunk_id``.
            text: the document source.
            content_type: one of :data:`components.parsing.CONTENT_TYPES` (``; charset=...`` ignored).
            title: document title; with ``prefix="path"`` prefixed to each ``embed_text``
                (omitted when empty or equal to the outermost heading of the chunk's section).

        Returns:
            Chunks with ``ordinal`` 0, 1, ...; ``[]`` for blank text. Each ``text`` has at
            most ``max_chars`` characters. Unless ``prefix="path"``, a chunk under a heading has
            its id hashed over its section path and anchor too (see ``Chunk`` for the rest).

        Raises:
            ValueError: unsupported content type.
        """
        sections = parse_sections(text, content_type)
        chunks: list[Chunk] = []
        seen: dict[str, int] = {}
        title = " ".join(title.split())
        for sec in sections:
            if not sec.paragraphs:
                continue
            section = " > ".join(sec.path)
            if self.prefix == "path":
                head = " > ".join(
                    p for p in ((title if not sec.path or sec.path[0] != title else ""), section) if p
                )
            else:
                head = sec.path[-1] if sec.path else ""
            lead = _head(sec.paragraphs[0], LEAD_CHARS) if self.prefix == "lead" else ""
            for part, body in enumerate(self._split_section(sec.paragraphs)):
                above = "\n".join(p for p in (head, lead if part else "") if p)
                embed = f"{above}\n{body}" if above else body
                h = _sha256(embed)
                occ = seen.get(h, 0)
                seen[h] = occ + 1
                # embed_text no longer names the heading path or anchor: the id does, so that a renamed
                # parent heading or a new anchor rewrites the chunk's stored section and link.
                where = f"\x00{section}\x00{sec.anchor}" if self.prefix != "path" and (section or sec.anchor) else ""
                cid = _sha256(f"{doc_id}\x00{h}\x00{occ}{where}")[:32]
                chunks.append(Chunk(cid, doc_id, body, embed, section, sec.anchor, h, len(chunks)))
        return chunks

    def _split_section(self, paragraphs: list[str]) -> list[str]:
        units: list[tuple[str, str]] = []
        for p in paragraphs:
            if len(p) <= self.max_chars:
                units.append(("\n\n", p))
            else:
                pieces = _split_long(p, self._piece_limit)
                units.append(("\n\n", pieces[0][1]))
                units.extend(pieces[1:])
        out: list[str] = []
        cur: str | None = None
        for joiner, unit in units:
            if cur is None:
                cur = unit
            elif len(cur) + len(joiner) + len(unit) <= self.max_chars:
                cur = cur + joiner + unit
            else:
                out.append(cur)
                ov = _tail(cur, min(self.overlap_chars, self.max_chars - len(unit) - len(joiner or " ")))
                cur = f"{ov}{joiner or ' '}{unit}" if ov else unit
        if cur is not None:
            out.append(cur)
        return out
