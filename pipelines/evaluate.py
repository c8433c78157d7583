"""``eddy eval``: retrieval and answer quality of the live pipeline on a BEIR-layout dataset.

Everything goes through the same Kafka path users take:

1. the corpus is published to ``docs.changes`` into the dataset's own collection (source
   ``eval:<dataset>``; documents no longer in the corpus are deleted) and the run waits for
   the indexer's IndexEvents — a re-run on unchanged data embeds nothing;
2. every query goes to ``queries`` naming that collection with ``retrieval_depth`` (ranked chunks
   reported on the final answer event) and, with ``--answers``, generation on; the run reads the
   terminal events from ``answers``;
3. retrieval is scored at the corpus-document level with ranx (:mod:`pipelines.metrics`), answers
   against the reference answers (token F1, ROUGE-L, LLM-as-judge :mod:`pipelines.judge`), with
   latency and token usage from the final events;
4. the report (``report.json``, ``report.md``, ``metrics.png``, ``latency.png``) is written to a
   new run directory under the output root, atomically (a temporary directory renamed at the
   end), and compared with the previous report of the same dataset in that root.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from config import __version__
from config.settings import REPO_ROOT, Settings
from pipelines.datasets import Dataset, DatasetError
from pipelines.judge import JUDGE_PROMPT_VERSION, Grade, Judge
from pipelines.metrics import RETRIEVAL_METRICS, RougeL, document_ranking, retrieval_metrics, token_f1
from schemas import AnswerEvent, Query, QueryOptions
from streams.client import EddyClient, new_version

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
#: Metrics compared between runs (report key path -> label), in table order.
COMPARED = (
    *((("retrieval", m), m) for m in RETRIEVAL_METRICS),
    (("answers", "token_f1"), "token F1"),
    (("answers", "rouge_l"), "ROUGE-L"),
    (("answers", "judge_correctness"), "judge correctness (1-5)"),
    (("answers", "judge_faithfulness"), "judge faithfulness (1-5)"),
    (("latency_ms", "ttft_p50"), "TTFT p50 ms"),
    (("latency_ms", "total_p50"), "total p50 ms"),
)


@dataclass
class EvalConfig:
    """One evaluation run. ``collection`` None = ``eval_<dataset name>``; ``limit`` None = every query
    (else a fixed sample drawn with ``seed``); ``depth``: chunks retrieved per query for the
    retrieval metrics; ``concurrency``: queries in flight (None = all at once without --answers,
    1 with --answers so latency is measured unloaded); ``idle_timeout_s``: give up when no
    IndexEvent/answer arrived for that long."""

    out: Path
    collection: str | None = None
    limit: int | None = None
    answers: bool = False
    depth: int = 200
    seed: int = 0
    max_tokens: int | None = None
    concurrency: int | None = None
    idle_timeout_s: float = 600.0


class Reporter:
    """Receives the run's progress (the CLI draws bars with ETA from it); this base ignores it."""

    def start(self, task: str, total: int) -> None:
        """A phase named ``task`` with ``total`` steps begins."""

    def advance(self, task: str, n: int = 1) -> None:
        """``n`` more steps of ``task`` are done."""


def collection_name(dataset_name: str) -> str:
    """``eval_<dataset name>`` with every character Milvus refuses replaced by ``_`` (<= 128 chars)."""
    return ("eval_" + re.sub(r"[^A-Za-z0-9_]", "_", dataset_name))[:128]


def sample_queries(dataset: Dataset, limit: int | None, seed: int) -> list[str]:
    """Query ids to evaluate, in file order: all, or ``limit`` of them drawn with ``random.Random(seed)``."""
    ids = list(dataset.queries)
    if limit is None or limit >= len(ids):
        return ids
    chosen = set(random.Random(seed).sample(ids, limit))
    return [q for q in ids if q in chosen]


def git_commit() -> str | None:
    """``git rev-parse --short=12 HEAD`` of the Eddy checkout, ``-dirty`` appended when tracked files
    changed; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


# --------------------------------------------------------------------------- phases
def ingest_corpus(
    settings: Settings, client: EddyClient, dataset: Dataset, collection: str, progress: Reporter,
    idle_timeout_s: float,
) -> dict:
    """Publish the corpus into ``collection`` (deleting documents that left it) and wait until indexed.

    Documents with blank text use their title; documents with neither, or larger than
    ``max_document_bytes``, are skipped (counted). Raises DatasetError for a document the
    DocumentChange schema refuses (e.g. an ``_id`` over 512 characters).
    """
    from components.vectorstore import read_live_doc_ids

    started = time.perf_counter()
    source = f"eval:{dataset.name}"[:256]
    live = set(read_live_doc_ids(settings.milvus_address, collection, source))
    start = client.end_offsets("index.events")
    version = new_version()
    change_ids: list[str] = []
    skipped = 0
    progress.start("publishing corpus", len(dataset.corpus) + len(live - set(dataset.corpus)))
    for doc_id, doc in dataset.corpus.items():
        text = doc["text"] if doc["text"].strip() else doc["title"]
        if not text.strip() or len(text.encode()) > settings.max_document_bytes:
            skipped += 1
            progress.advance("publishing corpus")
            continue
        try:
            change = client.publish_document(doc_id, text, title=doc["title"], source=source,
                                             collection=collection, version=version)
        except ValidationError as exc:
            raise DatasetError(f"corpus document {doc_id!r}: {exc.errors()[0]['msg']}") from exc
        change_ids.append(str(change.event_id))
        progress.advance("publishing corpus")
    deletes = sorted(live - set(dataset.corpus))
    for doc_id in deletes:
        change_ids.append(str(client.delete_document(doc_id, source=source, collection=collection).event_id))
        progress.advance("publishing corpus")
    client.flush()
    progress.start("indexing corpus", len(change_ids))
    events = client.wait_indexed(change_ids, start, timeout_s=idle_timeout_s,
                                 on_event=lambda _e: progress.advance("indexing corpus"))
    return {
        "documents": len(change_ids) - len(deletes), "deleted_documents": len(deletes), "skipped_documents": skipped,
        "chunks_total": sum(e.chunks_total for e in events if e.status != "deleted"),
        "chunks_embedded": sum(e.chunks_embedded for e in events),
        "chunks_unchanged": sum(e.chunks_unchanged for e in events),
        "chunks_deleted": sum(e.chunks_deleted for e in events),
        "embedder": events[0].embedder if events else None, "chunker": events[0].chunker if events else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


def ask_queries(
    client: EddyClient, dataset: Dataset, query_ids: list[str], collection: str,
    config: EvalConfig, run_id: str, progress: Reporter,
) -> dict[str, AnswerEvent]:
    """Publish the queries (``concurrency`` in flight) and return the terminal answer event per dataset query id."""
    options = QueryOptions(collection=collection, retrieval_depth=config.depth, generate=config.answers,
                           max_tokens=config.max_tokens)
    by_wire_id = {f"{run_id}:{qid}"[:256]: qid for qid in query_ids}
    queue = [Query(query_id=wire, conversation_id=wire, user_id="eddy-eval", text=dataset.queries[qid],
                   options=options) for wire, qid in by_wire_id.items()]
    window = config.concurrency or (1 if config.answers else len(queue))
    start = client.end_offsets("answers")
    progress.start("answering" if config.answers else "retrieving", len(queue))

    def send_next(n: int) -> None:
        for _ in range(min(n, len(queue))):
            client.publish_query(queue.pop(0))
        client.flush()

    def on_event(_event: AnswerEvent) -> None:
        progress.advance("answering" if config.answers else "retrieving")
        send_next(1)

    send_next(window)
    events = client.wait_answers(list(by_wire_id), start, timeout_s=config.idle_timeout_s, on_event=on_event)
    return {by_wire_id[e.query_id]: e for e in events}


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


# --------------------------------------------------------------------------- scoring
def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p90": round(float(np.percentile(a, 90)), 1),
            "p99": round(float(np.percentile(a, 99)), 1), "mean": round(float(a.mean()), 1)}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def score(
    dataset: Dataset, query_ids: list[str], finals: dict[str, AnswerEvent], *, answers: bool,
    judge: Judge | None, progress: Reporter,
) -> tuple[dict, list[dict]]:
    """Metrics over the run: (summary sections, one row per query)."""
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


# --------------------------------------------------------------------------- reports
def _get(report: dict, path: tuple[str, str]) -> float | None:
    value = (report.get(path[0]) or {}).get(path[1])
    return value if isinstance(value, (int, float)) else None


def finished_reports(out_root: Path) -> list[dict]:
    """Every readable report of this format in ``out_root``'s run directories (not the temporary
    ``.``-directories of a run being written)."""
    reports = []
    for path in out_root.glob("*/report.json"):
        if path.parent.name.startswith("."):
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if report.get("format") == REPORT_FORMAT:
            reports.append(report)
    return reports


def query_set_id(query_ids: list[str]) -> str:
    """Fingerprint of the evaluated query ids (16 hex digits of sha256): runs are comparable when equal."""
    return hashlib.sha256("\n".join(sorted(query_ids)).encode()).hexdigest()[:16]


def previous_report(out_root: Path, dataset_name: str, query_set: str, before: str) -> dict | None:
    """The newest report in ``out_root`` older than ``before`` (created_at): of the same dataset and
    query set if there is one, else of the same dataset, else any."""
    reports = [r for r in finished_reports(out_root) if r.get("created_at", "") < before]
    same = [r for r in reports if r["dataset"]["name"] == dataset_name]
    same_queries = [r for r in same if r["dataset"].get("query_set") == query_set]
    pool = same_queries or same or reports
    return max(pool, key=lambda r: r["created_at"]) if pool else None


def comparison(current: dict, previous: dict | None) -> list[tuple[str, float | None, float | None, float | None]]:
    """Rows (label, previous, current, delta) for every compared metric either report has."""
    rows = []
    for path, label in COMPARED:
        now = _get(current, path)
        before = _get(previous, path) if previous else None
        if now is None and before is None:
            continue
        delta = round(now - before, 4) if now is not None and before is not None else None
        rows.append((label, before, now, delta))
    return rows


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def render_markdown(report: dict, rows: list[tuple]) -> str:
    v, d = report["versions"], report["dataset"]
    lines = [
        f"# Eddy evaluation {report['run_id']}", "",
        f"- dataset: **{d['name']}** ({d['corpus_documents']:,} documents, {d['queries_evaluated']} of "
        f"{d['queries']} queries, fingerprint `{d['fingerprint']}`), collection `{report['collection']}`",
        f"- pipeline `{v['pipeline']}`, prompt `{v['prompt']}`, generator `{v['generator']}`, embedder "
        f"`{v['embedder']}`, chunker `{v['chunker']}`, judge `{v['judge']}`, commit `{v['git_commit']}`",
        f"- ingest: {report['ingest']['chunks_embedded']:,} chunks embedded, "
        f"{report['ingest']['chunks_unchanged']:,} unchanged, {report['ingest']['seconds']} s; "
        f"run total {report['elapsed_s']['total']} s", "",
        "| metric | previous | current | delta |", "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {_fmt(b)} | {_fmt(n)} | {'' if dl is None else f'{dl:+.4g}'} |" for label, b, n, dl in rows]
    if report.get("previous_run_id"):
        lines += ["", f"Previous run: `{report['previous_run_id']}`"
                  + ("." if report.get("previous_comparable") else " (other queries or dataset: deltas are indicative only).")]
    lines += ["", "![metrics per version](metrics.png)"]
    if report.get("latency_ms"):
        lines += ["", "![latency distribution](latency.png)"]
    return "\n".join(lines) + "\n"


def plot_metrics(out_root: Path, report: dict, path: Path) -> None:
    """Line chart of the main metrics over every run of this dataset in ``out_root`` plus this one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [r for r in finished_reports(out_root)
               if r["dataset"]["name"] == report["dataset"]["name"] and r["run_id"] != report["run_id"]]
    history = sorted([*history, report], key=lambda r: r["created_at"])[-20:]
    labels = [f"{(r['versions']['git_commit'] or '?')[:7]}\n{r['created_at'][5:16]}" for r in history]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(history) + 3), 4.2))
    for path_, label in (c for c in COMPARED if c[0][0] in ("retrieval", "answers")):
        values = [_get(r, path_) for r in history]
        if path_[1].startswith("judge"):
            values = [None if x is None else (x - 1) / 4 for x in values]  # 1-5 -> 0-1
            label += " →0-1"
        if any(x is not None for x in values):
            ax.plot(range(len(history)), [np.nan if x is None else x for x in values], marker="o", label=label)
    ax.set_xticks(range(len(history)), labels, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.set_title(f"{report['dataset']['name']}: metrics per version")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(rows: list[dict], path: Path) -> None:
    """Histograms of TTFT and total answer time (ms) over the answered queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in ((axes[0], "ttft_ms", "time to first token"), (axes[1], "total_ms", "total answer time")):
        values = [r[key] for r in rows if r.get(key) is not None]
        ax.hist(values, bins=min(20, max(5, len(values) // 2)), color="#4c72b0")
        if values:
            ax.axvline(float(np.percentile(values, 50)), color="k", linestyle="--", label="p50")
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("queries")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_root: Path, report: dict, rows: list[dict], table: list[tuple]) -> Path:
    """Write the run directory atomically (temporary sibling renamed at the end); returns its path."""
    out_root.mkdir(parents=True, exist_ok=True)
    final_dir = out_root / report["run_id"]
    tmp = Path(tempfile.mkdtemp(prefix=f".{report['run_id']}.", dir=out_root))
    try:
        (tmp / "report.json").write_text(json.dumps({**report, "per_query": rows}, indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report, table))
        plot_metrics(out_root, report, tmp / "metrics.png")
        if report.get("latency_ms"):
            plot_latency(rows, tmp / "latency.png")
        os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final_dir


# --------------------------------------------------------------------------- the run
def check_config(dataset: Dataset, config: EvalConfig) -> None:
    """DatasetError when the run cannot work on this dataset (``--answers`` without reference answers)."""
    if config.answers and not dataset.answers:
        raise DatasetError(f"{dataset.root}: --answers needs answers.jsonl (reference answers)")


def run_eval(settings: Settings, dataset: Dataset, config: EvalConfig, judge: Judge | None,
             progress: Reporter) -> tuple[dict, Path, list[tuple]]:
    """The whole evaluation; returns (report without per-query rows, run directory, comparison rows).

    Raises DatasetError (bad dataset), EddyClientError (stack down, idle timeout) and
    ComponentError (Milvus unreachable); nothing is written then.
    """
    from components.prompts import PROMPT_V1

    check_config(dataset, config)
    t0 = time.perf_counter()
    created = datetime.now(UTC)
    commit = git_commit()
    run_id = f"{created:%Y%m%dT%H%M%SZ}-{(commit or 'nogit')[:7]}"
    collection = config.collection or collection_name(dataset.name)
    query_ids = sample_queries(dataset, config.limit, config.seed)
    client = EddyClient.from_settings(settings)
    try:
        ingest = ingest_corpus(settings, client, dataset, collection, progress, config.idle_timeout_s)
        t1 = time.perf_counter()
        finals = ask_queries(client, dataset, query_ids, collection, config, run_id, progress)
    finally:
        client.close()
    t2 = time.perf_counter()
    summary, rows = score(dataset, query_ids, finals, answers=config.answers, judge=judge, progress=progress)
    t3 = time.perf_counter()
    generated = [e for e in finals.values() if e.kind == "final" and e.model]
    report = {
        "format": REPORT_FORMAT, "run_id": run_id, "created_at": created.isoformat(timespec="seconds"),
        "dataset": {"name": dataset.name, "path": str(dataset.root), "fingerprint": dataset.fingerprint(),
                    "corpus_documents": len(dataset.corpus), "queries": len(dataset.queries),
                    "queries_evaluated": len(query_ids), "query_set": query_set_id(query_ids),
                    "queries_without_qrels": dataset.queries_without_qrels},
        "collection": collection,
        "versions": {
            "eddy": __version__, "git_commit": commit,
            "pipeline": next((e.pipeline_version for e in finals.values() if e.pipeline_version), None),
            "prompt": generated[0].prompt_version if generated else PROMPT_V1.version,
            "generator": generated[0].model if generated else settings.generator,
            "embedder": ingest["embedder"], "chunker": ingest["chunker"],
            "judge": judge.name if judge else None, "judge_prompt": JUDGE_PROMPT_VERSION if judge else None,
        },
        "config": {"top_k": settings.top_k, "retrieval_depth": config.depth, "answers": config.answers,
                   "max_new_tokens": config.max_tokens or settings.max_new_tokens, "limit": config.limit,
                   "seed": config.seed},
        "ingest": ingest,
        **summary,
        "elapsed_s": {"ingest": round(t1 - t0, 1), "queries": round(t2 - t1, 1), "scoring": round(t3 - t2, 1),
                      "total": round(time.perf_counter() - t0, 1)},
    }
    previous = previous_report(config.out, dataset.name, report["dataset"]["query_set"], report["created_at"])
    report["previous_run_id"] = previous["run_id"] if previous else None
    report["previous_comparable"] = bool(previous) and previous["dataset"].get("query_set") == report["dataset"]["query_set"]
    table = comparison(report, previous)
    run_dir = write_report(config.out, report, rows, table)
    return report, run_dir, table
