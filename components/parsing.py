"""Document parsing: reST, Markdown, HTML and plain text split into sections by their headings.

:func:`parse_sections` returns a document's :class:`Section` list (heading path, anchor,
paragraphs) in document order; :func:`first_rst_title` reads the title of a reST document.
Anchors are the ids each format's renderer gives its headings (docutils for reST, GitHub
for Markdown, ``id`` attributes for HTML), so a section can be linked to.

Parsing takes time linear in the text (``tests/unit/test_linear_time.py``): no pattern is applied
where a failed attempt would be retried from each of many later starts over the same stretch (see
the comment at each pattern), and the HTML parser ends an unterminated tag, comment or declaration at
the end of the input (HTML5 tokenizer; :class:`_HTMLSections`) instead of re-scanning the rest once
per ``<``, which Python 3.11.7's ``html.parser`` does.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser

from components.markup import docutils_slug, github_slug, rst_inline_text, rst_target_name

__all__ = ["CONTENT_TYPES", "Section", "first_rst_title", "parse_sections"]

#: Content types :func:`parse_sections` accepts (parameters such as ``; charset=`` are ignored).
CONTENT_TYPES = frozenset({"text/x-rst", "text/markdown", "text/plain", "text/html"})


@dataclass(slots=True)
class Section:
    """One section of a document: heading path (outermost first), anchor and paragraphs.

    The part of a document before its first heading is a section with an empty ``path``.
    """

    path: tuple[str, ...]
    anchor: str
    paragraphs: list[str] = field(default_factory=list)


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
_ADORN = re.compile(r"([!-/:-@\[-`{-~])\1*+[ \t]*$")  # possessive: no backtrack state per character
_TARGET = re.compile(r"\.\.[ \t]+_(`(?:[^`\\]|\\.)+`|(?:[^:`\\]|\\.)+):[ \t]*$")


def _adorn_char(line: str) -> str | None:
    return line[0] if _ADORN.match(line) else None


# A target name goes on over indented lines only (docutils' explicit markup block): from each
# ".. _" the scan stops at the next unindented line, which holds the next start.
_EXTERNAL_TARGET = re.compile(
    r"^\.\.[ \t]+_(`(?:[^`\\\n]|\\.|\n(?=[ \t]))+`|(?:[^:`\\\n]|\\.|\n(?=[ \t]))+):[ \t]+\S", re.MULTILINE)
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
        out.used.add(docutils_slug(rst_target_name(m.group(1))))
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
                labels.append(rst_target_name(m.group(1)))
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
# The title is empty or ends in a non-blank (the shortest one always does), so the closing
# sequence is tried after non-blanks only and a run of blanks is scanned once, not once per blank.
_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(|.*?[^ \t\n]))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
# A link, else (group 3 None) the stretch every later "[" inside it would fail on too, kept as is.
_MD_LINK = re.compile(r"!?\[([^\]]*+)(?:\]\(([^)]*+)(\))?)?")
# "(?<!_)": a run of "_" is tried from its first "_" only (a later one reaches the same end).
_MD_MARK = re.compile(r"[`*]|(?<!\w)_+|(?<!_)_++(?!\w)")


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
        text = _MD_LINK.sub(lambda k: k.group(1) if k.group(3) else k.group(0), m.group(2) or "")
        title = " ".join(_MD_MARK.sub("", text).split())
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
    """Sections of an HTML document; linear time.

    ``html.parser`` (3.11.7) answers "unterminated" for a ``<tag``, ``</``, ``<!--``, ``<!``, ``<?``
    without its end, and at the end of input re-parses from the next ``<``: every later ``<`` scans
    the rest again (``"<a" * n``: quadratic). Here an unterminated construct at the end of input takes
    the rest of it, as the HTML5 tokenizer does and as CPython does from 3.11.13 (gh-135462); a
    ``<![`` that is not a marked section is a bogus comment (the stdlib raised AssertionError).
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.eof = False
        self.out = _Outline()
        self.buf: list[str] = []
        self.skip = 0
        self.pre = 0
        self.head_level = 0
        self.head_buf: list[str] = []
        self.head_ids: list[str] = []
        self.pending_id = ""

    # --- linear-time end of input (see the class docstring)
    def close(self) -> None:
        self.eof = True
        super().close()

    def _rest(self, k: int) -> int:
        return len(self.rawdata) if k < 0 and self.eof else k

    def parse_starttag(self, i: int) -> int:
        return self._rest(super().parse_starttag(i))

    def parse_endtag(self, i: int) -> int:
        if i + 2 == len(self.rawdata):  # a final "</" is text
            return -1
        return self._rest(super().parse_endtag(i))

    def parse_comment(self, i: int, report: bool = True) -> int:
        return self._rest(super().parse_comment(i, report))

    def parse_pi(self, i: int) -> int:
        return self._rest(super().parse_pi(i))

    def parse_html_declaration(self, i: int) -> int:
        try:
            k = super().parse_html_declaration(i)
        except AssertionError:  # "<![" without a known marked-section keyword
            k = self.parse_bogus_comment(i)
        return self._rest(k)

    # --- sections
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
