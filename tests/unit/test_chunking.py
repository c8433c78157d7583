"""Behaviour of components.chunking.StructureChunker and the parsing beneath it (components.parsing, .markup)."""

from __future__ import annotations

import hashlib
import re

import pytest

from components.base import Chunker
from components.chunking import LEAD_CHARS, StructureChunker
from components.markup import docutils_slug, github_slug, rst_inline_text
from components.parsing import first_rst_title

RST = """\
.. _top-label:

=============
The Document
=============

Intro paragraph of the document.

Part One
========

Text of part one.

Sub A
-----

Text of sub A.

.. _custom-b:

Sub B
-----

Text of sub B.

Part Two
========

Deep
----

Deeper
~~~~~~

Text of deeper.
"""


def sections(chunks):
    return [(c.section, c.anchor) for c in chunks]


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def long_section_text(n_sentences: int = 60, tag: str = "") -> str:
    paras = []
    for p in range(n_sentences // 5):
        paras.append(
            " ".join(f"Sentence {tag}{p}-{s} says something about topic {p} in detail." for s in range(5))
        )
    return "\n\n".join(paras)


# --------------------------------------------------------------------------- construction
def test_protocol_and_config_id():
    ch = StructureChunker()
    assert isinstance(ch, Chunker)
    assert ch.config_id == "structure-v1:max=1000,overlap=150,prefix=lead"
    assert StructureChunker(500, 0).config_id == "structure-v1:max=500,overlap=0,prefix=lead"
    assert StructureChunker(500, 0, prefix="heading").config_id == "structure-v1:max=500,overlap=0,prefix=heading"
    # "path" keeps the ids of collections built before prefixes existed
    assert StructureChunker(500, 0, prefix="path").config_id == "structure-v1:max=500,overlap=0"
    assert StructureChunker(500, 100).config_id != StructureChunker(500, 99).config_id
    with pytest.raises(ValueError, match="prefix"):
        StructureChunker(prefix="title")


@pytest.mark.parametrize(("max_chars", "overlap", "message"), [
    (99, 10, "max_chars must be >= 100, got 99"),
    (1000, 500, r"overlap_chars must be in \[0, max_chars/2\), got 500 for max_chars=1000"),
    (1000, 600, "got 600 for max_chars=1000"),
    (200, -1, "got -1 for max_chars=200"),
])
def test_bad_parameters(max_chars, overlap, message):
    with pytest.raises(ValueError, match=message):
        StructureChunker(max_chars, overlap)


def test_blank_text_gives_no_chunks():
    ch = StructureChunker()
    for ct in ("text/x-rst", "text/markdown", "text/plain", "text/html"):
        assert ch.chunk("d", "", ct) == []
        assert ch.chunk("d", "  \n\n\t \n", ct) == []


def test_unknown_content_type():
    with pytest.raises(ValueError, match="content type"):
        StructureChunker().chunk("d", "hello", "application/pdf")


def test_content_type_parameters_ignored():
    ch = StructureChunker()
    assert ch.chunk("d", "# H\n\nx", "text/markdown; charset=utf-8") == ch.chunk("d", "# H\n\nx", "text/markdown")


# --------------------------------------------------------------------------- reST
def test_rst_hierarchy_paths_and_anchors():
    chunks = StructureChunker().chunk("doc", RST, "text/x-rst")
    assert sections(chunks) == [
        ("The Document", "top-label"),
        ("The Document > Part One", "part-one"),
        ("The Document > Part One > Sub A", "sub-a"),
        ("The Document > Part One > Sub B", "custom-b"),
        ("The Document > Part Two > Deep > Deeper", "deeper"),  # empty sections skipped
    ]
    assert [c.text for c in chunks] == [
        "Intro paragraph of the document.",
        "Text of part one.",
        "Text of sub A.",
        "Text of sub B.",
        "Text of deeper.",
    ]
    assert [c.ordinal for c in chunks] == list(range(5))
    assert all(c.doc_id == "doc" for c in chunks)


def test_rst_adornment_and_target_lines_dropped():
    chunks = StructureChunker().chunk("doc", RST, "text/x-rst")
    body = "\n".join(c.text for c in chunks)
    assert ".. _" not in body
    assert not re.search(r"^[=\-~]{3,}$", body, re.M)


def test_rst_hierarchy_follows_first_appearance_of_styles():
    # '-' appears first, so it is level 1 here; '=' second; overline '=' is a distinct style.
    text = "A\n-\n\na\n\nB\n=\n\nb\n\n===\nC\n===\n\nc\n\nD\n-\n\nd\n\nE\n=\n\ne\n"
    chunks = StructureChunker().chunk("d", text, "text/x-rst")
    assert [c.section for c in chunks] == ["A", "A > B", "A > B > C", "D", "D > E"]


def test_rst_underline_shorter_than_title_is_not_a_heading():
    text = "Not a title here\n---\n\nbody\n"
    chunks = StructureChunker().chunk("d", text, "text/x-rst")
    assert [c.section for c in chunks] == [""]
    assert "Not a title here\n---" in chunks[0].text


def test_rst_transition_is_not_a_heading():
    text = "Title\n=====\n\nbefore\n\n----------\n\nafter\n"
    chunks = StructureChunker().chunk("d", text, "text/x-rst")
    assert [c.section for c in chunks] == ["Title"]
    assert chunks[0].text == "before\n\nafter"


def test_rst_indented_lines_are_not_headings():
    text = "Title\n=====\n\nExample::\n\n    code\n    ====\n\nmore\n"
    chunks = StructureChunker().chunk("d", text, "text/x-rst")
    assert [c.section for c in chunks] == ["Title"]
    assert "    code\n    ====" in chunks[0].text


def test_rst_inline_markup_in_titles():
    text = ":mod:`os.path` --- Common pathname manipulations\n" + "=" * 50 + "\n\nbody\n"
    (c,) = StructureChunker().chunk("d", text, "text/x-rst")
    assert c.section == "os.path --- Common pathname manipulations"
    assert c.anchor == "os-path-common-pathname-manipulations"
    assert first_rst_title(text) == "os.path --- Common pathname manipulations"
    assert rst_inline_text(":func:`~os.path.join` and ``x``") == "join and x"
    assert rst_inline_text("`Python <https://python.org>`_ *is* **fun**") == "Python is fun"
    assert rst_inline_text(":pep:`8`") == "PEP 8"


def test_rst_duplicate_title_falls_back_to_parent_anchor():
    text = "Top\n===\n\nA\n-\n\nDeprecated\n~~~~~~~~~~\n\na\n\nB\n-\n\nDeprecated\n~~~~~~~~~~\n\nb\n"
    chunks = StructureChunker().chunk("d", text, "text/x-rst")
    assert sections(chunks) == [("Top > A > Deprecated", "deprecated"), ("Top > B > Deprecated", "b")]


def test_rst_noise_directives_and_comments_dropped():
    text = (
        ":tocdepth: 2\n\n.. highlight:: c\n\nTitle\n=====\n\n.. index:: single: foo\n\n"
        ".. XXX internal comment\n   continued\n\n   still the comment\n\nReal text.\n\n"
        ".. note::\n\n   Kept note.\n\n"
        ".. function:: f()\n\n   .. index::\n      single: f\n\n   Doc of f.\n"
    )
    chunks = StructureChunker().chunk("d", text, "text/x-rst")
    assert [c.text for c in chunks] == [
        "Real text.\n\n.. note::\n\n   Kept note.\n\n.. function:: f()\n\n   Doc of f."
    ]


def test_docutils_slug():
    assert docutils_slug("What is Python?") == "what-is-python"
    assert docutils_slug("3.1. Numbers & Strings") == "numbers-strings"
    assert docutils_slug("Café  au lait") == "cafe-au-lait"
    assert docutils_slug("tut_functions") == "tut-functions"


FAQ = """\
:tocdepth: 2

==================
General Python FAQ
==================

.. only:: html

   .. contents::


General Information
===================

What is Python?
---------------

Python is an interpreted, interactive, object-oriented programming language.  It
incorporates modules, exceptions, dynamic typing, very high level dynamic data
types, and classes.

To find out more, start with :ref:`tutorial-index`.


.. _faq-psf:

What is the Python Software Foundation?
---------------------------------------

The Python Software Foundation is an independent non-profit organization that
holds the copyright on Python versions 2.1 and newer.


Are there copyright restrictions on the use of Python?
------------------------------------------------------

You can do anything you want with the source.
"""


def test_python_faq_style_document():
    chunks = StructureChunker().chunk("python-docs:faq/general", FAQ, "text/x-rst", title="General Python FAQ")
    by_section = {c.section: c for c in chunks}
    q1 = by_section["General Python FAQ > General Information > What is Python?"]
    assert q1.anchor == "what-is-python"
    assert q1.text.startswith("Python is an interpreted")
    assert q1.text.endswith("start with :ref:`tutorial-index`.")
    # Only the section's own heading is embedded, not the path its siblings share.
    assert q1.embed_text == "What is Python?\n" + q1.text
    by_path = {c.section: c for c in StructureChunker(prefix="path").chunk(
        "python-docs:faq/general", FAQ, "text/x-rst", title="General Python FAQ")}
    # "path": the doc title equals the outermost heading, so it is not repeated.
    assert by_path[q1.section].embed_text == "General Python FAQ > General Information > What is Python?\n" + q1.text
    q2 = by_section["General Python FAQ > General Information > What is the Python Software Foundation?"]
    assert q2.anchor == "faq-psf"
    q3 = by_section["General Python FAQ > General Information > Are there copyright restrictions on the use of Python?"]
    assert q3.anchor == "are-there-copyright-restrictions-on-the-use-of-python"
    assert "tocdepth" not in " ".join(c.text for c in chunks)
    assert first_rst_title(FAQ) == "General Python FAQ"


# --------------------------------------------------------------------------- Markdown
MD = """\
Preamble text.

# Guide

Intro.

## Install `pkg`

Run it:

```bash
# not a heading
pip install pkg
```

## Install `pkg`

Again.

### Deep *dive* ###

Deep text.

~~~
## also not a heading
~~~
"""


def test_markdown_headings_and_fences():
    chunks = StructureChunker().chunk("d", MD, "text/markdown")
    assert sections(chunks) == [
        ("", ""),
        ("Guide", "guide"),
        ("Guide > Install pkg", "install-pkg"),
        ("Guide > Install pkg", "install-pkg-1"),
        ("Guide > Install pkg > Deep dive", "deep-dive"),
    ]
    assert "# not a heading\npip install pkg\n```" in chunks[2].text
    assert "## also not a heading" in chunks[4].text


def test_github_slug():
    assert github_slug("Hello, World!") == "hello-world"
    assert github_slug("snake_case & more") == "snake_case--more"
    assert github_slug("Ünïcode Title") == "ünïcode-title"


# --------------------------------------------------------------------------- HTML
HTML = """\
<html><head><title>Ignored title</title><style>p { color: red }</style></head>
<body>
<section id="intro"><h1>Intro<a class="headerlink" href="#intro">¶</a></h1>
<p>First   paragraph
with <b>bold</b> text.</p>
<script>var notText = 1;</script>
<section id="details"><h2>Details</h2>
<ul><li>one</li><li><p>two</p></li><li></li></ul>
<pre>line 1
    indented</pre>
</section></section>
<h2 id="own-id">Other</h2><p>Other text &amp; entities.</p>
</body></html>
"""


def test_html_headings_text_and_anchors():
    chunks = StructureChunker().chunk("d", HTML, "text/html")
    # nesting follows heading levels (h2 under the preceding h1), not the element tree
    assert sections(chunks) == [("Intro", "intro"), ("Intro > Details", "details"), ("Intro > Other", "own-id")]
    assert chunks[0].text == "First paragraph with bold text."
    assert chunks[1].text == "- one\n\n- two\n\nline 1\n    indented"
    assert chunks[2].text == "Other text & entities."
    joined = " ".join(c.embed_text for c in chunks)
    assert "notText" not in joined and "color" not in joined and "Ignored title" not in joined


# --------------------------------------------------------------------------- plain text
def test_plain_text_paragraphs_only():
    text = "Title-looking line\n==================\n\n# not a heading\n\nSecond paragraph.\n"
    chunks = StructureChunker().chunk("d", text, "text/plain", title="Notes")
    assert len(chunks) == 1
    (c,) = chunks
    assert (c.section, c.anchor) == ("", "")
    assert c.text == "Title-looking line\n==================\n\n# not a heading\n\nSecond paragraph."
    assert c.embed_text == c.text  # the document title is not embedded
    (p,) = StructureChunker(prefix="path").chunk("d", text, "text/plain", title="Notes")
    assert p.embed_text == "Notes\n" + c.text


def test_plain_text_packs_paragraphs_up_to_max():
    paras = [f"Paragraph {i:02d} " + "x" * 61 + "." for i in range(20)]  # 75 chars each
    assert {len(p) for p in paras} == {75}
    chunks = StructureChunker(max_chars=300, overlap_chars=0).chunk("d", "\n\n".join(paras), "text/plain")
    assert all(len(c.text) <= 300 for c in chunks)
    # paragraphs are kept whole and packed: 3 per chunk (3*75 + 2*2 <= 300 < 4*75 + 3*2)
    assert [c.text.count("Paragraph") for c in chunks] == [3, 3, 3, 3, 3, 3, 2]
    assert "\n\n".join(c.text for c in chunks) == "\n\n".join(paras)


# --------------------------------------------------------------------------- ids and hashes
def test_chunk_ids_and_hashes():
    (c,) = StructureChunker().chunk("doc-1", "# Head\n\nbody text", "text/markdown", title="My Doc")
    assert c.embed_text == "Head\nbody text"
    assert c.content_hash == hashlib.sha256(c.embed_text.encode()).hexdigest()
    expected = hashlib.sha256(f"doc-1\x00{c.content_hash}\x000\x00Head\x00head".encode()).hexdigest()[:32]
    assert c.chunk_id == expected
    (plain,) = StructureChunker().chunk("doc-1", "body text", "text/plain", title="My Doc")
    assert plain.chunk_id == hashlib.sha256(f"doc-1\x00{plain.content_hash}\x000".encode()).hexdigest()[:32]
    (p,) = StructureChunker(prefix="path").chunk("doc-1", "# Head\n\nbody text", "text/markdown", title="My Doc")
    assert p.embed_text == "My Doc > Head\nbody text"
    assert p.chunk_id == hashlib.sha256(f"doc-1\x00{p.content_hash}\x000".encode()).hexdigest()[:32]
    (no_title,) = StructureChunker(prefix="path").chunk("doc-1", "# Head\n\nbody text", "text/markdown")
    assert no_title.embed_text == "Head\nbody text"


def test_later_chunks_of_a_section_carry_its_heading_and_opening_sentence():
    opening = "The pool runs tasks in worker threads, one per core, and hands results back in the order of submission."
    assert len(opening) < LEAD_CHARS < len(opening) + 50  # the lead: whole sentences that fit, here the first only
    body = opening + " " + " ".join(f"Sentence {i} about the pool's queue and its limits." for i in range(40))
    chunks = StructureChunker(400, 80).chunk("d", f"# Intro\n\nShort.\n\n# Pools\n\n{body}\n", "text/markdown")
    intro, first, *later = chunks
    assert intro.embed_text == "Intro\nShort."  # a one-chunk section: heading and text
    assert first.embed_text == "Pools\n" + first.text  # the section's first chunk opens with the lead already
    assert later and all(c.embed_text == f"Pools\n{opening}\n{c.text}" for c in later)
    assert all(len(c.text) <= 400 for c in chunks)  # the lead is embedded, never quoted
    # no heading (plain text): the lead alone; a first sentence over LEAD_CHARS is cut at a word
    long_opening = "word " * (LEAD_CHARS // 5 + 10)
    plain = StructureChunker(300, 50).chunk("d", long_opening + "end.\n\n" + "More text here. " * 40, "text/plain")
    lead = plain[1].embed_text.split("\n")[0]
    assert len(lead) <= LEAD_CHARS and long_opening.startswith(lead + " ")
    assert plain[1].embed_text == f"{lead}\n{plain[1].text}"


def test_renamed_parent_heading_rewrites_children_without_changing_what_is_embedded():
    before = StructureChunker().chunk("d", "# Guide\n\n## Install\n\nRun it.\n", "text/markdown")
    after = StructureChunker().chunk("d", "# Handbook\n\n## Install\n\nRun it.\n", "text/markdown")
    child_before, child_after = before[-1], after[-1]
    assert child_before.embed_text == child_after.embed_text == "Install\nRun it."
    # the stored section path must follow the rename: a new id makes the indexer rewrite the row
    assert child_before.section == "Guide > Install" and child_after.section == "Handbook > Install"
    assert child_before.chunk_id != child_after.chunk_id


def test_duplicate_chunks_get_distinct_ids():
    text = "Same paragraph.\n\n" + "x" * 990 + "\n\nSame paragraph.\n"
    chunks = StructureChunker(max_chars=1000, overlap_chars=0, prefix="heading").chunk("d", text, "text/plain")
    assert [c.text for c in chunks] == ["Same paragraph.", "x" * 990, "Same paragraph."]
    assert chunks[0].content_hash == chunks[2].content_hash
    assert chunks[0].chunk_id != chunks[2].chunk_id
    assert len({c.chunk_id for c in chunks}) == 3
    occ1 = hashlib.sha256(f"d\x00{chunks[2].content_hash}\x001".encode()).hexdigest()[:32]
    assert chunks[2].chunk_id == occ1


def test_doc_id_changes_chunk_ids():
    ch = StructureChunker()
    a = ch.chunk("a", RST, "text/x-rst")
    b = ch.chunk("b", RST, "text/x-rst")
    assert [c.content_hash for c in a] == [c.content_hash for c in b]
    assert not {c.chunk_id for c in a} & {c.chunk_id for c in b}


def test_deterministic():
    text = RST + "\n\nLong\n====\n\n" + long_section_text(80)
    a = StructureChunker(400, 80).chunk("d", text, "text/x-rst", title="T")
    b = StructureChunker(400, 80).chunk("d", text, "text/x-rst", title="T")
    assert a == b
    assert len(a) > 10


# --------------------------------------------------------------------------- sizes and overlap
@pytest.mark.parametrize("max_chars,overlap", [(100, 0), (100, 49), (300, 60), (1000, 150)])
def test_size_limit_respected(max_chars, overlap):
    giant = "G" * 2500
    text = (
        "Title\n=====\n\n"
        + long_section_text(40)
        + "\n\n"
        + words(600)  # a paragraph without sentence ends
        + "\n\n"
        + giant  # a single word longer than the limit
        + "\n\nshort tail.\n"
    )
    chunks = StructureChunker(max_chars, overlap).chunk("d", text, "text/x-rst")
    assert all(len(c.text) <= max_chars for c in chunks)
    # no word is cut except the giant one
    all_words = {w for c in chunks for w in c.text.split()}
    assert {f"w{i}" for i in range(600)} <= all_words
    assert not {w for w in all_words if re.fullmatch(r"w\d*", w) and w[1:] and int(w[1:]) >= 600}
    g_pieces = [w for c in chunks for w in c.text.split() if set(w) == {"G"}]
    assert "".join(g_pieces) == giant  # cut mid-word, but nothing lost or repeated


def test_long_paragraph_split_at_sentence_ends():
    para = " ".join(f"This is sentence number {i} of the paragraph." for i in range(40))
    chunks = StructureChunker(300, 0).chunk("d", para, "text/plain")
    assert len(chunks) > 1
    assert all(c.text.endswith(".") and c.text.startswith("This is sentence") for c in chunks)
    assert " ".join(c.text for c in chunks) == para


def test_overlap_between_consecutive_chunks_of_a_section():
    ch = StructureChunker(400, 100)
    text = "Title\n=====\n\n" + long_section_text(60)
    chunks = ch.chunk("d", text, "text/x-rst")
    assert len(chunks) > 3
    for prev, cur in zip(chunks, chunks[1:], strict=False):
        # the next chunk starts with whole sentences taken from the end of the previous one
        first = cur.text.split("\n\n")[0]
        tail = first[: first.index(".") + 1]
        assert prev.text.endswith(tail) or tail in prev.text[-100:], (prev.text, cur.text)
        overlap = next(k for k in range(min(len(prev.text), len(cur.text)), 0, -1) if prev.text.endswith(cur.text[:k]))
        assert 0 < overlap <= 100
        assert cur.text[0].isupper()  # starts at a sentence


def test_overlap_uses_whole_words_without_sentence_ends():
    text = words(500, prefix="word")
    chunks = StructureChunker(300, 60).chunk("d", text, "text/plain")
    assert len(chunks) > 2
    for prev, cur in zip(chunks, chunks[1:], strict=False):
        first_words = cur.text.split()[:3]
        assert " ".join(first_words) in prev.text[-60:]
        assert all(re.fullmatch(r"word\d+", w) for w in cur.text.split())


def test_no_overlap_across_sections():
    text = "A\n=\n\n" + long_section_text(30, "a") + "\n\nB\n=\n\n" + long_section_text(30, "b")
    chunks = StructureChunker(400, 100).chunk("d", text, "text/x-rst")
    b_chunks = [c for c in chunks if c.section == "B"]
    assert "Sentence a" not in b_chunks[0].text


def test_overlap_zero_means_no_repetition():
    text = long_section_text(60)
    chunks = StructureChunker(400, 0).chunk("d", text, "text/plain")
    rebuilt = "\n\n".join(c.text for c in chunks)
    assert rebuilt.replace("\n\n", " ").split() == text.replace("\n\n", " ").split()


# --------------------------------------------------------------------------- incremental property
@pytest.mark.parametrize("content_type", ["text/x-rst", "text/markdown"])
def test_editing_one_section_changes_only_its_chunks(content_type):
    if content_type == "text/x-rst":
        def heading(t):
            return f"{t}\n{'-' * len(t)}\n\n"
        doc = "Doc\n===\n\nIntro.\n\n"
    else:
        def heading(t):
            return f"## {t}\n\n"
        doc = "# Doc\n\nIntro.\n\n"
    bodies = {name: long_section_text(25, name) for name in ("alpha", "beta", "gamma")}

    def render(b):
        return doc + "".join(heading(n.title()) + b[n] + "\n\n" for n in ("alpha", "beta", "gamma"))

    ch = StructureChunker(400, 100)
    before = ch.chunk("d", render(bodies), content_type, title="Doc")
    edited = dict(bodies, beta=bodies["beta"].replace("topic 2 in", "topic 2, edited, in"))
    after = ch.chunk("d", render(edited), content_type, title="Doc")

    def ids(chunks, name):
        return [c.chunk_id for c in chunks if c.section.endswith(name.title())]

    assert ids(before, "alpha") == ids(after, "alpha") and ids(before, "alpha")
    assert ids(before, "gamma") == ids(after, "gamma") and ids(before, "gamma")
    assert ids(before, "beta") != ids(after, "beta")
    # chunks of beta before the edited paragraph are unchanged too
    assert ids(before, "beta")[0] == ids(after, "beta")[0]
    intro_before = [c.chunk_id for c in before if c.section == "Doc"]
    assert intro_before == [c.chunk_id for c in after if c.section == "Doc"]
