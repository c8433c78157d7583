"""Inline markup of headings: the text a reader sees, reST target names, anchor slugs.

Pure string functions shared by the parsers of :mod:`components.parsing`: the ids docutils
and GitHub derive from a heading, and reST inline markup reduced to its rendered text.

Every pattern runs in time linear in its input (``tests/unit/test_linear_time.py``): where a match
attempt can fail after scanning far (an unclosed backquote, a run of role markers, an emphasis
start without an end), the pattern has a last alternative that consumes the stretch every later
start inside it would fail on too, and leaves it as it is (``_keep``), so no stretch is scanned twice.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["docutils_slug", "github_slug", "rst_inline_text", "rst_target_name"]


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
# A run of role markers (":py:func:"), else consumed whole: a later ":" of the run fails as the first did.
_RST_ROLE = re.compile(r"(?::[\w.+-]++)++(?::`((?:[^`\\]|\\.)*+)`)?")
# The text up to an unescaped backquote; group 2 is None when no "`_" follows: every backquote
# inside (escaped) would reach the same end, so the stretch is consumed and kept.
_RST_REF = re.compile(r"`((?:[^`\\]|\\.)*+)(`__?)?")
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_STRONG = re.compile(r"\*\*(.+?)\*\*")
# An emphasis start without an end: no later start on its line has one either (its ends are a subset).
_RST_EMPH = re.compile(r"(?<![\w*])\*(?!\s)(?:(.+?)(?<!\s)\*(?![\w*])|.*)")
_RST_INTERP = re.compile(r"`((?:[^`\\]|\\.)*+)(`(?::[\w.+-]+:)?)?")
# "(?<!\s)": the shortest title never ends in whitespace, and a whitespace run is tried from its start only.
_EXPLICIT_TITLE = re.compile(r"^(.*?)(?<!\s)\s*<[^<>]*>$", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)")


def _keep(m: re.Match[str]) -> str:
    return m.group(0)


def _role_text(m: re.Match[str]) -> str:
    if m.group(1) is None:
        return _keep(m)
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
    if m.group(2) is None:
        return _keep(m)
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
    s = _RST_INTERP.sub(lambda m: _keep(m) if m.group(2) is None else m.group(1), s)
    s = _RST_STRONG.sub(r"\1", s)
    s = _RST_EMPH.sub(lambda m: _keep(m) if m.group(1) is None else m.group(1), s)
    s = _ESCAPE.sub(lambda m: "" if m.group(1) == " " else m.group(1), s)
    return " ".join(s.split())


def rst_target_name(label: str) -> str:
    """Name of a reST hyperlink target, ``label`` as written between ``.. _`` and ``:``, with
    enclosing backquotes removed and backslash escapes resolved."""
    return _ESCAPE.sub(r"\1", label[1:-1] if label[0] == "`" else label)
