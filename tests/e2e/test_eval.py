"""`eddy datasets build python-faq` and `eddy eval` end to end on a small real slice of the Python FAQ,
through the session's real broker, Milvus and a worker with real models."""

from __future__ import annotations

import json

import pytest

from pipelines.datasets import load_dataset, write_dataset
from tests.e2e.test_cli import eddy

QUESTIONS = (
    "faq:faq/programming#how-do-i-copy-an-object-in-python",
    "faq:faq/library#how-do-i-copy-a-file",
    "faq:faq/programming#how-do-i-convert-a-string-to-a-number",
    "faq:faq/design#why-are-python-strings-immutable",
)


@pytest.mark.timeout(900)  # two evaluations with real models on 2 shared cores; each wait is held inside it
def test_build_then_eval_retrieval_then_answers_with_a_comparison(settings, stack, tmp_path, python_docs_data):
    settings = settings.model_copy(update={"judge_model": "smollm2-135m"})
    (settings.home / "data").symlink_to(python_docs_data, target_is_directory=True)  # fetched once per session
    stack.start_worker(("indexer", "answerer"))
    full = tmp_path / "python-faq"
    built = eddy(settings, "datasets", "build", "python-faq", str(full))
    assert "queries with reference answers" in built.stdout
    dataset = load_dataset(full)
    assert len(dataset.queries) > 150 and len(dataset.corpus) > 4000
    assert set(QUESTIONS) <= set(dataset.queries)

    # the slice: the FAQ's sections as the corpus, four questions
    corpus = [{"_id": i, **d} for i, d in dataset.corpus.items() if i.startswith("faq/")]
    queries = [{"_id": q, "text": dataset.queries[q]} for q in QUESTIONS]
    qrels = [(q, c, r) for q in QUESTIONS for c, r in dataset.qrels[q].items()]
    answers = [{"_id": q, "text": dataset.answers[q]} for q in QUESTIONS]
    sliced = write_dataset(tmp_path / "faq-slice", corpus, queries, qrels, answers)
    out = tmp_path / "eval"

    eddy(settings, "eval", "--dataset", str(sliced), "--out", str(out), timeout=600)
    [first] = [json.loads(p.read_text()) for p in out.glob("*/report.json")]
    assert first["dataset"]["name"] == "faq-slice" and first["dataset"]["queries_evaluated"] == 4
    assert first["collection"] == "eval_faq_slice"
    assert first["ingest"]["chunks_embedded"] == first["ingest"]["chunks_total"] > 0
    assert set(first["retrieval"]) >= {"ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10", "recall@100"}
    assert first["retrieval"]["errors"] == 0
    # real retrieval finds the answer sections: every one within 100, most at the top
    assert first["retrieval"]["recall@100"] == 1.0 and first["retrieval"]["mrr@10"] >= 0.5
    assert first["versions"]["embedder"].startswith("all-MiniLM-L6-v2") and first["versions"]["git_commit"]
    assert [row["query_id"] for row in first["per_query"]] == list(QUESTIONS)
    assert "answers" not in first and first["previous_run_id"] is None

    second_run = eddy(settings, "eval", "--dataset", str(sliced), "--out", str(out), "--answers", "--limit", "2",
                      timeout=600)
    reports = sorted((json.loads(p.read_text()) for p in out.glob("*/report.json")), key=lambda r: r["created_at"])
    second = reports[-1]
    assert second["previous_run_id"] == first["run_id"] and "ndcg@10" in second_run.stdout
    assert second["ingest"]["chunks_embedded"] == 0  # the collection is reused: nothing changed
    assert second["dataset"]["queries_evaluated"] == 2
    assert second["answers"]["answered"] == 2 and 0 <= second["answers"]["token_f1"] <= 1
    assert second["versions"]["generator"].startswith("SmolLM2-135M")
    assert second["versions"]["judge"].startswith("local:SmolLM2-135M") and second["versions"]["judge_prompt"]
    assert second["latency_ms"]["ttft_p50"] > 0 and second["usage"]["completion_tokens_total"] > 0
    run_dir = out / second["run_id"]
    assert {p.name for p in run_dir.iterdir()} == {"report.json", "report.md", "metrics.png", "latency.png"}
    assert (run_dir / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_refuses_a_broken_dataset_and_writes_nothing(settings, tmp_path):
    root = write_dataset(tmp_path / "broken", [{"_id": "d1", "title": "", "text": "x"}], [{"_id": "q1", "text": "q?"}],
                         [("q1", "d2", 1)])
    proc = eddy(settings, "eval", "--dataset", str(root), "--out", str(tmp_path / "eval"), check=False)
    assert proc.returncode == 2
    assert "unknown corpus-id 'd2'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "eval").exists()
