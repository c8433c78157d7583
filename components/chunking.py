"""Structure-aware chunking of reST, Markdown, HTML and plain-text documents.

:class:`StructureChunker` splits a document into sections by its headings, then each
section into chunks of at most ``max_chars`` characters at paragraph, sentence and word
boundaries. Every chunk depends only on the document title, its section's heading path
and its section's text, so editing one section changes the chunk ids of that section
only: the rest of the document need not be re-embedded.

Sizes are counted in Python ``str`` characters (code points), not bytes or tokens.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass, field
from html.parser import HTMLParser

from components.base import Chunk

__all__ = [
    "CONTENT_TYPES",
    "Section",
    "StructureChunker",
    "docutils_slug",
    "first_rst_title",
    "github_slug",
    "parse_sections",
    "rst_inline_text",
]

#: Content types :meth:`StructureChunker.chunk` accepts (parameters such as ``; charset=`` are ignored).
CONTENT_TYPES = frozenset({"text/x-rst", "text/markdown", "text/plain", "text/html"})

_VERSION = "structure-v1"


@dataclass(slots=True)
class Section:
    """One section of a document: heading path (outermost first), anchor and paragraphs.

    The part of a document before its first heading is a section with an empty ``path``.
    """

    path: tuple[str, ...]
    anchor: str
    paragraphs: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- slugs
_NON_ID = re.compile(r"[^a-z0-9]+")
_NON_ID_AT_ENDS = re.compile(r"^[-0-9]+|-+$")


def docutils_slug(text: str) -> str:
    """HTML id docutils derives from a title or target name (``docutils.nodes.make_id``).

    Lowercase, accents removed, other non-ASCII dropped, runs of non-alphanumerics become
    one ``-``, leading digits/hyphens and trailing hyphens stripped. May return ``""``.
    """
    s = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    s = _NON_ID.sub("-", " ".join(s.split()))
    return _NON_ID_AT_ENDS.sub("", s)


_GH_DROP = re.compile(r"[^\w\- ]", re.UNICODE)


def github_slug(text: str) -> str:
    """Anchor GitHub gives a Markdown heading (without the ``-1``, ``-2`` de-duplication suffix).

    Lowercase, punctuation other than ``-`` and ``_`` removed, each space becomes ``-``.
    """
    return _GH_DROP.sub("", text.strip().lower()).replace(" ", "-")


# --------------------------------------------------------------------------- reST inline markup
_RST_ROLE = re.compile(r"(?::[\w.+-]+)+:`((?:[^`\\]|\\.)*)`")
_RST_REF = re.compile(r"`((?:[^`\\]|\\.)*)`__?")
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_STRONG = re.compile(r"\*\*(.+?)\*\*")
_RST_EMPH = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_RST_INTERP = re.compile(r"`((?:[^`\\]|\\.)*)`(?::[\w.+-]+:)?")
_EXPLICIT_TITLE = re.compile(r"^(.*?)\s*<[^<>]*>$", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)")


def _role_text(m: re.Match[str]) -> str:
    role = m.group(0)[: m.group(0).index("`")].strip(":").lower()
    content = m.group(1)
    t = _EXPLICIT_TITLE.match(content)
    if t and t.group(1):
        return t.group(1)
    if role in ("pep", "rfc"):
        return f"{role.upper()} {content}"
    if content.startswith("!"):
        return content[1:]
    if content.startswith("~"):
        return content[1:].rsplit(".", 1)[-1]
    return content


def _ref_text(m: re.Match[str]) -> str:
    t = _EXPLICIT_TITLE.match(m.group(1))
    return t.group(1) if t and t.group(1) else m.group(1)


def rst_inline_text(text: str) -> str:
    """Text of a one-line reST fragment with inline markup removed, as a reader sees it.

    ``:mod:`os.path` --- Paths`` → ``os.path --- Paths``; ``:func:`~os.path.join``` → ``join``;
    ```Python <https://python.org>`_`` → ``Python``; ````x````, ``**x**``, ``*x*`` → ``x``.
    """
    if not any(c in text for c in "`*\\"):
        return text.strip()
    s = _RST_LITERAL.sub(r"\1", text)
    s = _RST_ROLE.sub(_role_text, s)
    s = _RST_REF.sub(_ref_text, s)
    s = _RST_INTERP.sub(r"\1", s)
    s = _RST_STRONG.sub(r"\1", s)
    s = _RST_EMPH.sub(r"\1", s)
    s = _ESCAPE.sub(lambda m: "" if m.group(1) == " " else m.group(1), s)
    return " ".join(s.split())


# --------------------------------------------------------------------------- common helpers
def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated blocks of ``lines`` (trailing whitespace of each line removed)."""
    out: list[str] = []
    cur: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line:
            cur.append(line)
        elif cur:
            out.append("\n".join(cur))
            cur = []
    if cur:
        out.append("\n".join(cur))
    return out


def _width(s: str) -> int:
    if s.isascii():
        return len(s)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


class _Outline:
    """Heading stack shared by the parsers: turns (level, title, anchor) into sections."""

    def __init__(self) -> None:
        self.sections: list[Section] = [Section((), "")]
        self.stack: list[tuple[int, str, str]] = []  # (level, title, anchor)
        self.used: set[str] = set()

    def heading(self, level: int, title: str, anchor: str) -> Section:
        """Open a section; an empty ``anchor`` falls back to the nearest ancestor's (coarser, but real)."""
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        if not anchor and self.stack:
            anchor = self.stack[-1][2]
        self.stack.append((level, title, anchor))
        sec = Section(tuple(t for _, t, _ in self.stack), anchor)
        self.sections.append(sec)
        return sec


# --------------------------------------------------------------------------- reST
_ADORN = re.compile(r"([!-/:-@\[-`{-~])\1*[ \t]*$")
_TARGET = re.compile(r"\.\.[ \t]+_(`(?:[^`\\]|\\.)+`|(?:[^:`\\]|\\.)+):[ \t]*$")


def _adorn_char(line: str) -> str | None:
    return line[0] if _ADORN.match(line) else None


_EXTERNAL_TARGET = re.compile(r"^\.\.[ \t]+_(`(?:[^`\\]|\\.)+`|(?:[^:`\\]|\\.)+):[ \t]+\S", re.MULTILINE)
_EMBEDDED_URI = re.compile(r"`([^`<>]+)<[^<>`]+>`_(?!_)")
# Explicit markup that renders nothing readable: comments and these directives.
_NOISE_DIRECTIVES = (
    "highlight|highlightlang|currentmodule|index|testsetup|testcleanup|sectionauthor|"
    "moduleauthor|tabularcolumns|toctree|include|contents"
)
_RST_NOISE = re.compile(
    rf"\.\.(?:[ \t]+(?:{_NOISE_DIRECTIVES})::"  # no-output directive
    r"|(?![ \t]+(?:[\w:-]+::|_|\[|\|))(?:[ \t]|$))"  # comment: not directive/target/footnote/substitution
)
_FIELD = re.compile(r":[\w-]+:(?:[ \t].*)?$")


def _indent(s: str) -> int:
    return len(s) - len(s.lstrip(" \t"))


def _rst_clean(paragraphs: list[str], preamble: bool) -> list[str]:
    """Drop no-output explicit markup blocks (with their more-indented bodies) and, in the
    preamble, docinfo field lists such as ``:tocdepth: 2``."""
    out: list[str] = []
    drop_below: int | None = None  # drop paragraphs indented deeper than this
    for p in paragraphs:
        ind = _indent(p)
        if drop_below is not None:
            if ind > drop_below:
                continue
            drop_below = None
        if p[ind] == "." and _RST_NOISE.match(p, ind) and all(_indent(ln) > ind for ln in p.split("\n")[1:]):
            drop_below = ind
            continue
        if preamble and p[0] == ":" and all(_FIELD.match(ln) for ln in p.split("\n")):
            continue
        out.append(p)
    return out


def _parse_rst(text: str, first_only: bool = False) -> list[Section]:
    lines = _lines(text)
    n = len(lines)
    out = _Outline()
    for m in _EXTERNAL_TARGET.finditer(text):  # their names clash with section ids in docutils
        label = m.group(1)
        out.used.add(docutils_slug(_ESCAPE.sub(r"\1", label[1:-1] if label[0] == "`" else label)))
    for m in _EMBEDDED_URI.finditer(text):
        out.used.add(docutils_slug(m.group(1).strip()))
    styles: list[tuple[str, bool]] = []
    body: list[str] = []
    labels: list[str] = []
    boundary = True  # previous line blank, a title, a target, or start of text
    i = 0
    while i < n:
        line = lines[i]
        if not line or line.isspace():
            body.append("")
            boundary = True
            i += 1
            continue
        if line[0] == ".":
            m = _TARGET.match(line)
            if m:
                label = m.group(1)
                labels.append(_ESCAPE.sub(r"\1", label[1:-1] if label[0] == "`" else label))
                boundary = True
                i += 1
                continue
        title = None
        if boundary:
            c = _adorn_char(line)
            if c is not None:
                over = line.rstrip()
                if i + 2 < n:
                    t, u = lines[i + 1], lines[i + 2]
                    if (
                        t.strip()
                        and u.rstrip() == over
                        and _adorn_char(t) is None
                        and _width(t.strip()) <= len(over)
                    ):
                        title, style, step = t.strip(), (c, True), 3
                if title is None and len(over) >= 4:
                    nxt = lines[i + 1] if i + 1 < n else ""
                    if not nxt.strip():  # transition: drop it
                        labels.clear()
                        i += 1
                        continue
            elif not line[0].isspace() and i + 1 < n:
                u = lines[i + 1]
                c = _adorn_char(u)
                if c is not None and len(u.rstrip()) >= _width(line.rstrip()):
                    title, style, step = line.strip(), (c, False), 2
        if title is None:
            body.append(line)
            labels.clear()
            boundary = False
            i += 1
            continue
        out.sections[-1].paragraphs = _paragraphs(body)
        body = []
        if style not in styles:
            styles.append(style)
        level = styles.index(style) + 1
        clean = rst_inline_text(title)
        # docutils gives a title whose id is already taken an unpredictable "id<N>": use the parent's.
        slug = docutils_slug(clean)
        anchor = "" if slug in out.used else slug
        out.used.add(slug)
        for lab in labels:
            out.used.add(docutils_slug(lab))
        if labels:
            anchor = docutils_slug(labels[0])
        labels.clear()
        out.heading(level, clean, anchor)
        if first_only:
            return out.sections
        boundary = True
        i += step
    out.sections[-1].paragraphs = _paragraphs(body)
    for k, sec in enumerate(out.sections):
        sec.paragraphs = _rst_clean(sec.paragraphs, k == 0)
    return out.sections


def first_rst_title(text: str) -> str:
    """Text of the first section title of a reST document (inline markup removed), or ``""``."""
    for sec in _parse_rst(text, first_only=True):
        if sec.path:
            return sec.path[0]
    return ""


# --------------------------------------------------------------------------- Markdown
_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARK = re.compile(r"[`*]|(?<!\w)_+|_+(?!\w)")


def _parse_markdown(text: str) -> list[Section]:
    out = _Outline()
    counts: dict[str, int] = {}
    body: list[str] = []
    fence: str | None = None
    for line in _lines(text):
        if fence is not None:
            body.append(line)
            s = line.strip()
            if s.startswith(fence) and set(s) == {fence[0]} and len(line) - len(line.lstrip(" ")) < 4:
                fence = None
            continue
        f = _FENCE.match(line)
        if f and not (f.group(1)[0] == "`" and "`" in line[f.end() :]):
            fence = f.group(1)
            body.append(line)
            continue
        m = _ATX.match(line) if "#" in line[:4] else None
        if m is None:
            body.append(line)
            continue
        title = " ".join(_MD_MARK.sub("", _MD_LINK.sub(r"\1", m.group(2) or "")).split())
        if not title:
            continue
        out.sections[-1].paragraphs = _paragraphs(body)
        body = []
        slug = github_slug(title)
        k = counts.get(slug, 0)
        counts[slug] = k + 1
        out.heading(len(m.group(1)), title, f"{slug}-{k}" if k else slug)
    out.sections[-1].paragraphs = _paragraphs(body)
    return out.sections


# --------------------------------------------------------------------------- HTML
_BLOCK_TAGS = frozenset(
    "address article aside blockquote body br caption dd details dialog div dl dt fieldset "
    "figcaption figure footer form header hr html li main nav ol p pre section summary "
    "table tbody tfoot thead tr ul".split()
)
_SKIP_TAGS = frozenset({"script", "style", "template", "title", "noscript"})
_HEADINGS = {f"h{k}": k for k in range(1, 7)}
# An id on one of these, with no text between it and a heading, is the heading's anchor.
_ANCHOR_TAGS = frozenset({"a", "article", "div", "header", "main", "section", "span"})


class _HTMLSections(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _Outline()
        self.buf: list[str] = []
        self.skip = 0
        self.pre = 0
        self.head_level = 0
        self.head_buf: list[str] = []
        self.head_ids: list[str] = []
        self.pending_id = ""

    def flush(self) -> None:
        text = "".join(self.buf)
        self.buf = []
        if self.pre:
            self.out.sections[-1].paragraphs.extend(_paragraphs(_lines(text)))
        else:
            text = " ".join(text.split())
            if text == "-":  # a list item's marker: keep it for the item's first block
                self.buf = ["- "]
            elif text:
                self.out.sections[-1].paragraphs.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
            return
        ident = next((v for k, v in attrs if k in ("id", "name") and v), "")
        if tag in _HEADINGS:
            self.flush()
            self.head_level = _HEADINGS[tag]
            self.head_buf = []
            self.head_ids = [ident] if ident else []
            return
        if self.head_level:
            if ident:
                self.head_ids.append(ident)
            return
        if tag in _BLOCK_TAGS:
            self.flush()
            if tag == "pre":
                self.pre += 1
            elif tag == "li":
                self.buf = ["- "]
        elif tag in ("td", "th"):
            self.buf.append(" ")
        if ident and tag in _ANCHOR_TAGS:
            self.pending_id = ident

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
            return
        if tag in _HEADINGS and self.head_level:
            title = " ".join("".join(self.head_buf).split()).rstrip("¶").rstrip()
            anchor = self.head_ids[0] if self.head_ids else self.pending_id
            level = self.head_level
            self.head_level = 0
            self.pending_id = ""
            if title:
                self.out.heading(level, title, anchor)
            return
        if tag in _BLOCK_TAGS and not self.head_level:
            self.flush()
            if tag == "li":
                self.buf = []  # an empty item's marker
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.head_level:
            self.head_buf.append(data)
            return
        if data.strip():
            self.pending_id = ""
        self.buf.append(data)


def _parse_html(text: str) -> list[Section]:
    p = _HTMLSections()
    p.feed(text)
    p.close()
    p.flush()
    return p.out.sections


def _parse_plain(text: str) -> list[Section]:
    return [Section((), "", _paragraphs(_lines(text)))]


_PARSERS = {
    "text/x-rst": _parse_rst,
    "text/markdown": _parse_markdown,
    "text/html": _parse_html,
    "text/plain": _parse_plain,
}


def _normalise_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_sections(text: str, content_type: str) -> list[Section]:
    """Sections of ``text`` in document order (the first may have an empty path; any may be empty).

    Raises ValueError for a content type not in :data:`CONTENT_TYPES`.
    """
    parser = _PARSERS.get(_normalise_type(content_type))
    if parser is None:
        raise ValueError(f"unsupported content type {content_type!r}; expected one of {sorted(CONTENT_TYPES)}")
    return parser(text)


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
            the title and section path on top.
        overlap_chars: at most this many trailing characters of a chunk (whole sentences,
            else whole words) are repeated at the start of the next chunk of the same
            section; ``0 <= overlap_chars < max_chars / 2``.

    Raises:
        ValueError: on parameters outside those ranges.
    """

    def __init__(self, max_chars: int = 1000, overlap_chars: int = 150) -> None:
        if max_chars < 100:
            raise ValueError(f"max_chars must be >= 100, got {max_chars}")
        if overlap_chars < 0 or overlap_chars >= max_chars / 2:
            raise ValueError(f"overlap_chars must be in [0, max_chars/2), got {overlap_chars} for max_chars={max_chars}")
        self.max_chars = max_chars
        self.overlap_chars = overlap_chars
        # Pieces of an over-long paragraph leave room for a full overlap plus a 1-char joiner.
        self._piece_limit = max_chars - overlap_chars - 1 if overlap_chars else max_chars

    @property
    def config_id(self) -> str:
        """``structure-v1:max=<max_chars>,overlap=<overlap_chars>``; changes whenever output would."""
        return f"{_VERSION}:max={self.max_chars},overlap={self.overlap_chars}"

    def chunk(self, doc_id: str, text: str, content_type: str, title: str = "") -> list[Chunk]:
        """Split one document into chunks, in document order.

        Args:
            doc_id: document id, part of every ``chunk_id``.
            text: the document source.
            content_type: one of :data:`CONTENT_TYPES` (``; charset=...`` parameters ignored).
            title: document title, prefixed to each ``embed_text`` (omitted when empty or
                equal to the outermost heading of the chunk's section).

        Returns:
            Chunks with ``ordinal`` 0, 1, ...; ``[]`` for blank text. Each ``text`` has at
            most ``max_chars`` characters.

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
            head = " > ".join(
                p for p in ((title if not sec.path or sec.path[0] != title else ""), section) if p
            )
            for body in self._split_section(sec.paragraphs):
                embed = f"{head}\n{body}" if head else body
                h = _sha256(embed)
                occ = seen.get(h, 0)
                seen[h] = occ + 1
                cid = _sha256(f"{doc_id}\x00{h}\x00{occ}")[:32]
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
