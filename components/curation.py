"""Prank and junk filtering of shared conversations: explainable rules with reason codes, and
near-duplicate detection against what is already vetted.

``JunkRules.check(...)`` returns the first rule that fires as a ``Verdict`` (reason code plus a
sentence for a human) or ``None``. Rules, in order:

- ``too_short``: the question has fewer than ``min_query_chars`` non-blank characters or fewer
  than two words;
- ``prompt_injection``: markers of attempts to steer the model (``ignore previous
  instructions``, ``system prompt``, chat-template tokens, …) in the question or comment;
- ``profanity``: a word or phrase of ``better-profanity``'s word list in the question or comment,
  after undoing common leetspeak (``$h1t``); looked up in a set (the package's own matcher costs
  about 200 ms per 1,000-character conversation, this a few microseconds);
- ``gibberish``: keyboard mashing: most words have no vowel or carry a run of 5+ consonants
  (``asdfghjkl``), a letter repeated 5+ times, or the question is mostly non-letters;
- ``flood``: the same user shared more than ``flood_per_hour`` conversations in the last hour
  (counted by this worker, in memory).

``VettedIndex`` keeps one embedding per vetted record (of its scrubbed question) so that a new
record whose question is closer than a cosine threshold to a vetted one is dropped as a
``near_duplicate``: ``MilvusVettedIndex`` (durable, shared by every curator worker) and
``MemoryVettedIndex`` (fake for unit tests).
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.milvus_client import call_milvus, connect_milvus

FILTERS_VERSION = "junk-rules-v1+dup-cosine"

_VOWELS = set("aeiouyAEIOUY")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{5,}", re.IGNORECASE)
_REPEAT = re.compile(r"([^\W\d_])\1{4,}")
_INJECTION = re.compile(
    r"(?i)\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier|all|your)\b"
    r"[^.\n]{0,20}\b(?:instructions?|prompts?|rules|directions)\b"
    r"|\b(?:system|developer)\s+prompt\b"
    r"|\byou\s+are\s+now\b|\bact\s+as\s+(?:an?\s+)?(?:unfiltered|uncensored|jailbroken|dan)\b"
    r"|\bjailbreak|\bDAN\s+mode\b|\bdo\s+anything\s+now\b"
    r"|<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<<SYS>>|###\s*(?:instruction|system)\b"
)


_LEET_WORD = re.compile(r"[a-z0-9@$!]+")
_LEET_I = str.maketrans({"@": "a", "4": "a", "1": "i", "!": "i", "0": "o", "3": "e", "$": "s", "5": "s", "7": "t"})
_LEET_L = str.maketrans({"@": "a", "4": "a", "1": "l", "!": "i", "0": "o", "3": "e", "$": "s", "5": "s", "7": "t"})


def _profanity_wordlist() -> tuple[frozenset[str], int]:
    """better-profanity's word list (lower case; phrases space-joined) and its longest phrase, in words."""
    from importlib.resources import files

    lines = files("better_profanity").joinpath("profanity_wordlist.txt").read_text(encoding="utf-8").splitlines()
    words = frozenset(" ".join(line.lower().split()) for line in lines if line.strip())
    return words, max(len(w.split()) for w in words)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a record is rejected: ``reason`` (code, see schemas.datasets.RejectReason) and ``detail``."""

    reason: str
    detail: str


def gibberish_detail(text: str) -> str | None:
    """Why ``text`` looks like keyboard mashing, or None. Placeholders ``<TYPE_xxxxxxxx>`` are ignored."""
    text = re.sub(r"<[A-Z_]+_[0-9a-f]{8}>", " ", text)
    stripped = "".join(text.split())
    if not stripped:
        return "no text"
    letters = sum(c.isalpha() for c in stripped)
    if letters / len(stripped) < 0.5:
        return f"only {letters} of {len(stripped)} characters are letters"
    if (m := _REPEAT.search(stripped)) is not None:
        return f"letter {m.group(1)!r} repeated {len(m.group(0))} times"
    words = [w for w in _WORD.findall(text) if len(w) >= 3]
    if not words:
        return None
    odd = [w for w in words if not (set(w) & _VOWELS) or _CONSONANT_RUN.search(w)]
    if len(odd) * 2 > len(words):
        return f"{len(odd)} of {len(words)} words are unpronounceable (e.g. {odd[0]!r})"
    return None


class JunkRules:
    """The rules above. ``check`` is cheap (microseconds); the flood counter is per instance."""

    def __init__(self, *, min_query_chars: int = 10, flood_per_hour: int = 30) -> None:
        self.min_query_chars = min_query_chars
        self.flood_per_hour = flood_per_hour
        self._profane, self._longest = _profanity_wordlist()
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, user_id: str, query: str, comment: str, *, now_s: float | None = None) -> Verdict | None:
        """First rule that fires for a conversation shared by ``user_id`` (call once per record: it
        counts the record for the flood rule), or None when it passes."""
        q = query.strip()
        if len("".join(q.split())) < self.min_query_chars or len(q.split()) < 2:
            return Verdict("too_short", f"question of {len(q)} characters and {len(q.split())} words "
                                        f"(at least {self.min_query_chars} characters and 2 words)")
        for field, text in (("question", q), ("comment", comment)):
            if (m := _INJECTION.search(text)) is not None:
                return Verdict("prompt_injection",
                               f"the {field} contains a prompt-injection marker ({m.group(0)[:40]!r})")
        for field, text in (("question", q), ("comment", comment)):
            if text and self._profanity(text):
                return Verdict("profanity", f"the {field} contains profanity")
        if (why := gibberish_detail(q)) is not None:
            return Verdict("gibberish", f"question looks like gibberish: {why}")
        return self._flood(user_id, time.time() if now_s is None else now_s)

    def _profanity(self, text: str) -> bool:
        words = _LEET_WORD.findall(text.lower())
        for n in range(1, self._longest + 1):
            for i in range(len(words) - n + 1):
                phrase = " ".join(words[i:i + n])
                if phrase.translate(_LEET_I) in self._profane or phrase.translate(_LEET_L) in self._profane:
                    return True
        return False

    def _flood(self, user_id: str, now_s: float) -> Verdict | None:
        if not user_id:
            return None
        with self._lock:
            seen = self._seen[user_id]
            while seen and seen[0] <= now_s - 3600.0:
                seen.popleft()
            seen.append(now_s)
            if len(seen) > self.flood_per_hour:
                return Verdict("flood", f"this user shared {len(seen)} conversations in the last hour "
                                        f"(limit {self.flood_per_hour})")
        return None


# --------------------------------------------------------------------------- near-duplicates
class MemoryVettedIndex:
    """Fake VettedIndex for unit tests: a dict of vectors, brute-force cosine."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def start(self) -> None:
        return None

    def nearest(self, vectors: np.ndarray, exclude_ids: Sequence[str]) -> list[tuple[str, float] | None]:
        out: list[tuple[str, float] | None] = []
        for vector, exclude in zip(vectors, exclude_ids, strict=True):
            scored = [(rid, float(v @ vector)) for rid, v in self.vectors.items() if rid != exclude]
            out.append(max(scored, key=lambda s: s[1]) if scored else None)
        return out

    def add(self, record_ids: Sequence[str], vectors: np.ndarray) -> None:
        self.vectors.update(zip(record_ids, np.asarray(vectors, dtype=np.float32), strict=True))

    def close(self) -> None:
        return None


class MilvusVettedIndex:
    """VettedIndex in a Milvus collection (``id`` VARCHAR primary key, ``vector`` FLOAT_VECTOR ``dim``,
    HNSW, cosine), strong consistency so a record vetted by one worker is seen by the next search."""

    def __init__(self, uri: str, collection: str, dim: int, timeout_s: float = 30.0) -> None:
        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.timeout_s = timeout_s
        self._client: Any = None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return call_milvus(self._client, (self.collection,), what, fn, *args, timeout_s=self.timeout_s, **kwargs)

    def start(self) -> None:
        from pymilvus import DataType

        self._client = connect_milvus(self.uri, self.timeout_s)
        c = self._client
        if self._call("look up the vetted collection", c.has_collection, self.collection):
            return
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index = c.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
        self._call("create the vetted collection", c.create_collection, self.collection, schema=schema,
                   index_params=index, consistency_level="Strong")

    def nearest(self, vectors: np.ndarray, exclude_ids: Sequence[str]) -> list[tuple[str, float] | None]:
        if len(vectors) == 0:
            return []
        hits = self._call("search vetted questions", self._client.search, self.collection,
                          data=[np.asarray(v, dtype=np.float32).tolist() for v in vectors], limit=2,
                          anns_field="vector", search_params={"metric_type": "COSINE"},
                          consistency_level="Strong")
        out: list[tuple[str, float] | None] = []
        for row, exclude in zip(hits, exclude_ids, strict=True):
            best = next(((h["id"], float(h["distance"])) for h in row if h["id"] != exclude), None)
            out.append(best)
        return out

    def add(self, record_ids: Sequence[str], vectors: np.ndarray) -> None:
        if record_ids:
            rows = [{"id": rid, "vector": np.asarray(v, dtype=np.float32).tolist()}
                    for rid, v in zip(record_ids, vectors, strict=True)]
            self._call("write vetted questions", self._client.upsert, self.collection, rows)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
