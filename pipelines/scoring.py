"""Scoring of an evaluation run: retrieval metrics per query and overall, and with answers token F1,
ROUGE-L, the LLM judge's grades, latency percentiles (ms) and token usage from the final events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from components.stats import percentile
from pipelines.datasets import Dataset
from pipelines.judge import Grade, Judge
from pipelines.metrics import RETRIEVAL_METRICS, RougeL, document_ranking, retrieval_metrics, token_f1
from pipelines.progress import Reporter
from schemas import AnswerEvent


async def _grade_all(judge: Judge, items: list[tuple[str, str, str, list[str]]],
                     on_done: Callable[[], None]) -> list[Grade]:
    grades = []
    try:
        for item in items:
            grades.append(await judge.grade(*item))
            on_done()
    finally:
        await judge.aclose()
    return grades


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 1), "p90": round(percentile(values, 90), 1),
            "p99": round(percentile(values, 99), 1), "mean": round(float(np.mean(values)), 1)}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def score(
    dataset: Dataset, query_ids: list[str], finals: dict[str, AnswerEvent], *, answers: bool,
    judge: Judge | None, progress: Reporter,
) -> tuple[dict, list[dict]]:
    """Metrics over the run: ``(summary sections, one row per query of query_ids)``.

    ``finals``: the terminal answer event per query id. ``summary["retrieval"]`` holds the mean
    :data:`~pipelines.metrics.RETRIEVAL_METRICS` and the error count; with ``answers`` also
    ``answers`` (token F1, ROUGE-L, judge grades 1-5 when ``judge`` is given), ``latency_ms``
    (TTFT and total: p50, p90, p99, mean) and ``usage`` (tokens, generation tokens/s).
    """
    errors = {q: e.error for q, e in finals.items() if e.kind == "error"}
    run = {q: document_ranking(e.retrieved or []) for q, e in finals.items() if e.kind == "final"}
    qrels = {q: dataset.qrels[q] for q in query_ids}
    means, per_query = retrieval_metrics(qrels, run)
    rows = [{"query_id": q, "error": errors.get(q), **{m: round(per_query[m][q], 4) for m in RETRIEVAL_METRICS}}
            for q in query_ids]
    summary: dict = {"retrieval": {m: round(v, 4) for m, v in means.items()} | {"errors": len(errors)}}
    if not answers:
        return summary, rows
    rouge = RougeL()
    answered = [(row, finals[row["query_id"]]) for row in rows if row["error"] is None]
    items = []
    for row, final in answered:
        reference = dataset.answers[row["query_id"]]
        row["token_f1"] = round(token_f1(final.text, reference), 4)
        row["rouge_l"] = round(rouge(final.text, reference), 4)
        row["ttft_ms"], row["total_ms"] = final.timings.ttft_ms, final.timings.total_ms
        row["prompt_tokens"], row["completion_tokens"] = final.usage.prompt_tokens, final.usage.completion_tokens
        row["answer"] = final.text
        cited = [int(n) for n in (final.validation or {}).get("cited", "").split(",") if n]
        citations = final.citations or []
        shown = [citations[n - 1] for n in cited if n <= len(citations)] or citations
        passages = [dataset.corpus[c.doc_id]["text"] for c in shown if c.doc_id in dataset.corpus]
        items.append((dataset.queries[row["query_id"]], reference, final.text, passages))
    if judge is not None and items:
        progress.start(f"judging ({judge.name})", len(items))
        grades = asyncio.run(_grade_all(judge, items, lambda: progress.advance(f"judging ({judge.name})")))
        for (row, _), grade in zip(answered, grades, strict=True):
            row["judge_correctness"], row["judge_faithfulness"] = grade.correctness, grade.faithfulness
    finals_ok = [f for _, f in answered]
    correct = [r["judge_correctness"] for r, _ in answered if r.get("judge_correctness") is not None]
    faithful = [r["judge_faithfulness"] for r, _ in answered if r.get("judge_faithfulness") is not None]
    summary["answers"] = {
        "answered": len(answered), "errors": len(errors),
        "token_f1": _mean([r["token_f1"] for r, _ in answered]),
        "rouge_l": _mean([r["rouge_l"] for r, _ in answered]),
        "judge_correctness": _mean(correct), "judge_faithfulness": _mean(faithful),
        "judge_unparsed": (len(answered) - min(len(correct), len(faithful))) if judge is not None else None,
    }
    if finals_ok:
        ttft = _percentiles([f.timings.ttft_ms for f in finals_ok])
        total = _percentiles([f.timings.total_ms for f in finals_ok])
        summary["latency_ms"] = {f"ttft_{k}": v for k, v in ttft.items()} | {f"total_{k}": v for k, v in total.items()}
        completion = sum(f.usage.completion_tokens for f in finals_ok)
        generate_s = sum(f.timings.generate_ms for f in finals_ok) / 1000.0
        summary["usage"] = {
            "prompt_tokens_mean": round(sum(f.usage.prompt_tokens for f in finals_ok) / len(finals_ok), 1),
            "completion_tokens_mean": round(completion / len(finals_ok), 1),
            "prompt_tokens_total": sum(f.usage.prompt_tokens for f in finals_ok),
            "completion_tokens_total": completion,
            "generation_tokens_per_s": round(completion / generate_s, 2) if generate_s else None,
        }
    return summary, rows
