"""Versioned prompt templates for answering from retrieved passages, and the message builder.

The template version (``PromptTemplate.version``) is recorded with every answer, so a
wording change is a new version, never an edit of an old one.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.base import ChatMessage, Hit, PromptTemplate

NO_ANSWER = "I don't know."

# Wording tuned on Qwen2.5-Coder-0.5B-Instruct and SmolLM2-135M-Instruct (bench/generator_quality.py).
# What worked for a 0.5B model: "Document [n] (title: section)" headings (a bare "[n] heading" line
# was parroted back), a forced opening "According to [N]," (the only reliable way to get a
# citation), and the "don't know" rule stated once, in the system message (repeating it in the
# user message made the model refuse answerable questions).
PROMPT_V1 = PromptTemplate(
    version="rag-v1",
    system=(
        "You are a helpful Python assistant. Answer the question using the documents. "
        'Begin your answer with "According to [N]," where N is the number of the document you used, '
        "then explain briefly in your own words. "
        f"If no document is about the question, answer only: {NO_ANSWER}"
    ),
    user="Documents:\n\n{context}\n\nQuestion: {question}\nAnswer:",
)

#: Shown as the context when no passage was retrieved (or none fits).
NO_CONTEXT = "(no passages were found)"

_PASSAGE_SEPARATOR = "\n\n"
_ELLIPSIS = " …"


def format_passage(number: int, hit: Hit, text: str | None = None) -> str:
    """``Document [n] (Title: Section)`` heading line, then the passage text (``text`` overrides ``hit.text``)."""
    title, section = hit.title.strip(), hit.section.strip()
    if title and section.startswith(title):  # section paths often start with the document title
        title = ""
    heading = ": ".join(part for part in (title, section) if part)
    body = (hit.text if text is None else text).strip()
    return f"Document [{number}] ({heading})\n{body}" if heading else f"Document [{number}]\n{body}"


def fit_hits(hits: Sequence[Hit], max_context_chars: int = 6000) -> list[Hit]:
    """The hits ``build_messages`` quotes: the longest rank-order prefix of ``hits`` whose
    formatted passages fit ``max_context_chars`` characters (so the lowest-ranked go first).

    Passage ``[n]`` of the prompt is ``fit_hits(...)[n - 1]``. When even the best hit does not
    fit, it is kept alone and ``build_messages`` cuts its text to the budget.
    """
    kept: list[Hit] = []
    used = 0
    for hit in hits:
        size = len(format_passage(len(kept) + 1, hit)) + (len(_PASSAGE_SEPARATOR) if kept else 0)
        if used + size > max_context_chars:
            break
        kept.append(hit)
        used += size
    if not kept and hits:
        kept.append(hits[0])
    return kept


def build_context(hits: Sequence[Hit], max_context_chars: int = 6000) -> str:
    """Numbered passages ``[1]..[n]`` of :func:`fit_hits`, at most ``max_context_chars`` characters
    (:data:`NO_CONTEXT` when there are no hits)."""
    kept = fit_hits(hits, max_context_chars)
    if not kept:
        return NO_CONTEXT
    passages = [format_passage(i, hit) for i, hit in enumerate(kept, start=1)]
    if len(passages) == 1 and len(passages[0]) > max_context_chars:  # best hit alone is too long: cut it
        room = max(0, max_context_chars - len(format_passage(1, kept[0], "")) - len(_ELLIPSIS))
        passages[0] = format_passage(1, kept[0], kept[0].text.strip()[:room].rstrip() + _ELLIPSIS)
    return _PASSAGE_SEPARATOR.join(passages)


def build_messages(
    template: PromptTemplate,
    question: str,
    hits: Sequence[Hit],
    history: Sequence[tuple[str, str]] = (),
    max_context_chars: int = 6000,
    max_history_chars: int = 2000,
) -> list[ChatMessage]:
    """Chat messages answering ``question`` from ``hits`` (best first): system, history, user.

    The user message is ``template.user`` with ``{context}`` = the numbered passages (see
    :func:`build_context`; ``[n]`` is ``fit_hits(hits, max_context_chars)[n - 1]``) and
    ``{question}``. ``history`` is earlier ``(role, text)`` turns, oldest first, role
    "user" or "assistant"; the most recent turns totalling at most ``max_history_chars``
    characters are kept (oldest dropped first). Raises ValueError for another role.
    """
    for role, _ in history:
        if role not in ("user", "assistant"):
            raise ValueError(f"history role must be 'user' or 'assistant', not {role!r}")
    kept_history: list[tuple[str, str]] = []
    used = 0
    for role, text in reversed(history):
        used += len(text)
        if used > max_history_chars:
            break
        kept_history.append((role, text))
    kept_history.reverse()
    user = template.user.format(context=build_context(hits, max_context_chars), question=question.strip())
    return [
        ChatMessage("system", template.system),
        *(ChatMessage(role, text) for role, text in kept_history),
        ChatMessage("user", user),
    ]
