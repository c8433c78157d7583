"""LLM-as-judge: grades an answer's correctness (against the reference answer) and its faithfulness
(to the passages it was given), each on a 1–5 scale.

Two judges, chosen by the settings: an OpenAI-compatible chat-completions endpoint
(``EDDY_JUDGE_URL`` + ``EDDY_JUDGE_MODEL``, e.g. a vLLM server or any hosted API; ``EDDY_JUDGE_API_KEY``
when it needs one) or, without a URL, an in-process generator (``EDDY_JUDGE_MODEL`` names one of
:data:`components.models.GENERATORS`). The judge's name goes into the report. The prompt follows
the single-answer grading of Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot
Arena" (NeurIPS 2023): a rubric, the reference, and a fixed reply format parsed strictly; a reply
that does not follow the format counts as unparsed (no score), never as a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from components.base import ChatMessage, GenerationParams, GenerationStats, Generator
from config.settings import Settings

JUDGE_PROMPT_VERSION = "judge-v1"
_SYSTEM = (
    "You are a strict grader. Rate the assistant's answer on two scales from 1 (worst) to 5 (best).\n"
    "Correctness: does the answer say what the reference answer says (other wording is fine)? "
    "5 = fully, 3 = partly or incompletely, 1 = wrong or no answer.\n"
    "Faithfulness: is every claim in the answer supported by the passages? "
    "5 = all, 3 = some unsupported, 1 = mostly unsupported or contradicted.\n"
    "Reply with two lines and nothing else:\ncorrectness: <digit>\nfaithfulness: <digit>"
)
_USER = """Question: {question}

Reference answer (written by the documentation's authors):
{reference}

Passages the assistant was given:
{context}

Assistant's answer:
{answer}"""
#: ``name: N`` with N alone on its line (optionally bold or ``/5``): a parroted rubric ("5 = fully") does not count.
_SCORE = {name: re.compile(rf"^\W*{name}\s*[:=]\s*\**\s*([1-5])\s*\**\s*(?:/\s*5)?\s*$", re.IGNORECASE | re.MULTILINE)
          for name in ("correctness", "faithfulness")}
_MAX_REFERENCE_CHARS = 2000
_MAX_PASSAGE_CHARS = 1200


@dataclass(frozen=True)
class Grade:
    """Scores 1–5 (None when the judge's reply did not give that score) and the reply itself."""

    correctness: int | None
    faithfulness: int | None
    reply: str


def parse_grade(reply: str) -> Grade:
    """Read ``correctness: N`` and ``faithfulness: N`` (N in 1..5) from a judge's reply."""
    found = {name: pattern.search(reply) for name, pattern in _SCORE.items()}
    return Grade(*(int(m.group(1)) if m else None for m in found.values()), reply=reply.strip())


def judge_messages(question: str, reference: str, answer: str, passages: Sequence[str]) -> list[ChatMessage]:
    """The grading prompt (reference and passages truncated to 2,000 / 1,200 characters each)."""
    context = "\n\n".join(f"[{i}] {p[:_MAX_PASSAGE_CHARS]}" for i, p in enumerate(passages, 1)) or "(none)"
    user = _USER.format(question=question, reference=reference[:_MAX_REFERENCE_CHARS], context=context,
                        answer=answer or "(empty)")
    return [ChatMessage("system", _SYSTEM), ChatMessage("user", user)]


class Judge(Protocol):
    name: str

    async def grade(self, question: str, reference: str, answer: str, passages: Sequence[str]) -> Grade: ...

    async def aclose(self) -> None: ...


class GeneratorJudge:
    """A judge running an in-process generator (greedy decoding, 16 new tokens at most)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.name = f"local:{generator.model_id}"

    async def grade(self, question: str, reference: str, answer: str, passages: Sequence[str]) -> Grade:
        pieces = [p async for p in self.generator.stream(
            judge_messages(question, reference, answer, passages), GenerationParams(max_new_tokens=16),
            GenerationStats())]
        return parse_grade("".join(pieces))

    async def aclose(self) -> None:
        return None


class OpenAIJudge:
    """A judge behind an OpenAI-compatible ``POST {base_url}/chat/completions`` (temperature 0).

    Raises ``httpx.HTTPError`` when the endpoint fails (the caller reports it; the run stops).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}@{self.base_url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers)

    async def grade(self, question: str, reference: str, answer: str, passages: Sequence[str]) -> Grade:
        messages = [{"role": m.role, "content": m.content}
                    for m in judge_messages(question, reference, answer, passages)]
        response = await self._client.post(f"{self.base_url}/chat/completions", json={
            "model": self.model, "messages": messages, "temperature": 0, "max_tokens": 16,
        })
        response.raise_for_status()
        return parse_grade(response.json()["choices"][0]["message"]["content"] or "")

    async def aclose(self) -> None:
        await self._client.aclose()


def build_judge(settings: Settings) -> Judge:
    """The configured judge: OpenAIJudge when ``judge_url`` is set, else a started local GeneratorJudge
    (loading the model takes seconds; PermanentError for an unknown model name)."""
    if settings.judge_url:
        key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else None
        return OpenAIJudge(settings.judge_url, settings.judge_model, key)
    from components.generation import build_generator

    generator = build_generator(settings.judge_model, settings.home / "models")
    generator.start()
    return GeneratorJudge(generator)
