"""``eddy eval``: retrieval and answer quality of the live pipeline on a BEIR-layout dataset.

Everything goes through the same Kafka path users take:

1. the corpus is published to ``docs.changes`` into the dataset's own collection (source
   ``eval:<dataset>``; documents no longer in the corpus are deleted; :mod:`pipelines.ingest`)
   and the run waits for the indexer's IndexEvents — a re-run on unchanged data embeds nothing;
2. every query goes to ``queries`` naming that collection with ``retrieval_depth`` (ranked chunks
   reported on the final answer event) and, with ``--answers``, generation on; the run reads the
   terminal events from ``answers``;
3. retrieval is scored at the corpus-document level with ranx (:mod:`pipelines.metrics`), answers
   against the reference answers (token F1, ROUGE-L, LLM-as-judge :mod:`pipelines.judge`), with
   latency and token usage from the final events (:mod:`pipelines.scoring`);
4. the report (``report.json``, ``report.md``, ``metrics.png``, ``latency.png``) is written to a
   new run directory under the output root, atomically (a temporary directory renamed at the
   end), and compared with the previous report of the same dataset in that root
   (:mod:`pipelines.reports`).
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from config import REPO_ROOT, __version__
from config.settings import Settings
from pipelines.datasets import Dataset, DatasetError
from pipelines.ingest import IngestError, ingest_source
from pipelines.judge import JUDGE_PROMPT_VERSION, Judge
from pipelines.progress import Reporter
from pipelines.reports import REPORT_FORMAT, comparison, previous_report, query_set_id, write_report
from pipelines.scoring import score
from schemas import AnswerEvent, DocumentChange, Query, QueryOptions
from schemas.documents import RESERVED_SUFFIXES
from streams.client import EddyClient, new_version


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


def collection_name(dataset_name: str) -> str:
    """``eval_<dataset name>`` with every character Milvus refuses replaced by ``_`` (<= 128 chars); a
    name that would end with a reserved suffix (``schemas.documents.RESERVED_SUFFIXES``) gets ``_set`` appended."""
    name = ("eval_" + re.sub(r"[^A-Za-z0-9_]", "_", dataset_name))[:124]
    return name + "_set" if name.lower().endswith(RESERVED_SUFFIXES) else name


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
def corpus_changes(
    dataset: Dataset, *, source: str, collection: str, max_document_bytes: int,
) -> Iterator[DocumentChange | IngestError]:
    """An upsert per corpus document (one version for all), built when the previous one is published.

    Documents with blank text use their title; documents with neither, or larger than
    ``max_document_bytes``, are skipped (an IngestError item). Raises DatasetError for a
    document the DocumentChange schema refuses (e.g. an ``_id`` over 512 characters).
    """
    version = new_version()
    for doc_id, doc in dataset.corpus.items():
        text = doc["text"] if doc["text"].strip() else doc["title"]
        if not text.strip():
            yield IngestError(f"corpus document {doc_id!r}: no text and no title")
            continue
        if len(text.encode()) > max_document_bytes:
            yield IngestError(f"corpus document {doc_id!r}: over {max_document_bytes} bytes")
            continue
        try:
            yield DocumentChange(op="upsert", doc_id=doc_id, version=version, text=text, title=doc["title"],
                                 source=source, collection=collection)
        except ValidationError as exc:
            raise DatasetError(f"corpus document {doc_id!r}: {exc.errors()[0]['msg']}") from exc


def ingest_corpus(
    settings: Settings, client: EddyClient, dataset: Dataset, collection: str, progress: Reporter,
    idle_timeout_s: float,
) -> dict:
    """Publish the corpus into ``collection`` as source ``eval:<dataset name>`` (deleting documents
    that left it; :func:`corpus_changes`) and wait until indexed; returns the report's ``ingest``
    section (document and chunk counts, embedder and chunker ids, seconds).

    Raises DatasetError (a document the schema refuses), ComponentError (Milvus unreachable) and
    EddyClientError (no IndexEvent for ``idle_timeout_s`` seconds).
    """
    from components.milvus_admin import read_live_doc_ids

    source = f"eval:{dataset.name}"[:256]
    changes = corpus_changes(dataset, source=source, collection=collection,
                             max_document_bytes=settings.max_document_bytes)
    result = ingest_source(client, changes, listing=dataset.corpus,
                           live_doc_ids=read_live_doc_ids(settings.milvus_address, collection, source),
                           source=source, collection=collection, timeout_s=idle_timeout_s, progress=progress,
                           tasks=("publishing corpus", "indexing corpus"))
    totals, events = result.totals(), result.indexed
    return {
        "documents": result.documents, "deleted_documents": result.deletes, "skipped_documents": len(result.skipped),
        **{k: totals[k] for k in ("chunks_total", "chunks_embedded", "chunks_unchanged", "chunks_deleted")},
        "embedder": events[0].embedder if events else None, "chunker": events[0].chunker if events else None,
        "seconds": totals["seconds"],
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
    same_queries = bool(previous) and previous["dataset"].get("query_set") == report["dataset"]["query_set"]
    report["previous_comparable"] = same_queries
    table = comparison(report, previous)
    run_dir = write_report(config.out, report, rows, table)
    return report, run_dir, table
