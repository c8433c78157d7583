"""Evaluation metrics: retrieval (ranx) and answer overlap (token F1, ROUGE-L).

Retrieval metrics are computed by ranx (Bassani, ECIR 2022, https://github.com/AmenRa/ranx) at the
corpus-document level: the chunks an answer event reports are mapped to their documents, a
document ranked by its best chunk. ROUGE-L is Google's ``rouge-score`` (Lin 2004) with the Porter
stemmer; token F1 is the SQuAD v1.1 measure (Rajpurkar et al. 2016, the official evaluation
script's normalisation: lower case, no punctuation, no articles ``a``/``an``/``the``).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from schemas import Retrieved

#: The retrieval metrics reported, in ranx names (``mrr@10`` is the reciprocal rank cut at 10).
RETRIEVAL_METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10", "recall@100")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def document_ranking(retrieved: Sequence[Retrieved]) -> dict[str, float]:
    """Documents of a ranked chunk list, each scored by its best chunk: ``{doc_id: score}``.

    ``retrieved`` is best first (as on the final AnswerEvent); a document's later chunks are ignored.
    """
    docs: dict[str, float] = {}
    for hit in retrieved:
        docs.setdefault(hit.doc_id, hit.score)
    return docs


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
    metrics: Iterable[str] = RETRIEVAL_METRICS,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query retrieval metrics with ranx.

    ``qrels``: query id -> {doc id: graded relevance > 0}. ``run``: query id -> {doc id: score}
    (higher ranks first). Every query of ``qrels`` counts; one missing from ``run`` (or with an
    empty ranking) scores 0. Returns ``(means, per_query)`` with ``per_query[metric][query id]``.
    """
    from ranx import Qrels, Run, evaluate

    metrics = list(metrics)
    qids = sorted(qrels)
    # ranx drops queries with empty rankings; a sentinel document that is never relevant keeps them at 0.
    full_run = {q: dict(run.get(q) or {}) or {"\x00none": 0.0} for q in qids}
    ranx_qrels = Qrels({q: dict(qrels[q]) for q in qids})
    ranx_run = Run(full_run)
    means = evaluate(ranx_qrels, ranx_run, metrics, make_comparable=True)
    if len(metrics) == 1:  # ranx returns a bare number for one metric
        means = {metrics[0]: means}
    per_query = {m: {q: float(v) for q, v in ranx_run.scores[m].items()} for m in metrics}
    return {m: float(means[m]) for m in metrics}, per_query


def _normalise(text: str) -> list[str]:
    text = text.lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 in [0, 1] between an answer and its reference (bag of normalised tokens)."""
    pred, ref = _normalise(prediction), _normalise(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class RougeL:
    """ROUGE-L F-measure in [0, 1] (``rouge-score``, Porter stemming)."""

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def __call__(self, prediction: str, reference: str) -> float:
        return float(self._scorer.score(reference, prediction)["rougeL"].fmeasure)
