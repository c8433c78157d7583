"""Evaluation pieces on a tiny hand-built dataset whose figures are known (worked out in the comments)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from components.base import ChatMessage
from pipelines.datasets import DatasetError, build_python_faq, load_dataset, write_dataset
from pipelines.evaluate import EvalConfig, check_config, collection_name, sample_queries
from pipelines.judge import GeneratorJudge, OpenAIJudge, judge_messages, parse_grade
from pipelines.metrics import RougeL, document_ranking, token_f1
from pipelines.progress import Reporter
from pipelines.reports import comparison, previous_report, write_report
from pipelines.scoring import score
from schemas import AnswerEvent, Citation, Retrieved, Timings, Usage

CORPUS = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text of document {i}"} for i in range(1, 6)]
QUERIES = [{"_id": "q1", "text": "one?"}, {"_id": "q2", "text": "two?"}, {"_id": "q3", "text": "three?"},
           {"_id": "q4", "text": "unjudged"}]
QRELS = [("q1", "d1", 1), ("q2", "d3", 1), ("q3", "d4", 1), ("q3", "d5", 1), ("q4", "d2", 0)]
ANSWERS = [{"_id": "q1", "text": "The answer is one."}, {"_id": "q2", "text": "two"}, {"_id": "q3", "text": "three"}]


def retrieved(*doc_ids: str) -> list[Retrieved]:
    """Chunks in rank order; ``d1`` twice means two chunks of d1 (only the first counts)."""
    return [Retrieved(doc_id=d, chunk_id=f"{d}-{i}", score=1.0 - i / 10) for i, d in enumerate(doc_ids)]


def final(qid: str, docs: list[str], text: str = "", cited: str = "") -> AnswerEvent:
    return AnswerEvent(
        query_id=qid, kind="final", seq=0, text=text, retrieved=retrieved(*docs),
        citations=[Citation(doc_id=d, chunk_id=f"{d}-0", uri="", title="", score=0.5) for d in docs[:2]],
        usage=Usage(prompt_tokens=100, completion_tokens=10),
        timings=Timings(queue_ms=1, retrieve_ms=10, prompt_ms=1, ttft_ms=200, generate_ms=1000, total_ms=1100),
        model="echo", prompt_version="rag-v1", pipeline_version="rag-dense-v1", validation={"cited": cited},
    )


@pytest.fixture
def dataset(tmp_path):
    return load_dataset(write_dataset(tmp_path / "tiny", CORPUS, QUERIES, QRELS, ANSWERS))


# q1: relevant d1 at rank 1                 -> nDCG 1,       RR 1,   R@1 1,   R@5 1
# q2: relevant d3 at rank 3 (d1 twice)      -> nDCG 1/log2(4) = 0.5, RR 1/3, R@1 0, R@5 1
# q3: relevant {d4, d5}; d5 at 1, d4 absent -> nDCG 1 / (1 + 1/log2(3)), RR 1, R@1 0.5, R@5 0.5
FINALS = {"q1": final("q1", ["d1", "d2"]), "q2": final("q2", ["d2", "d1", "d1", "d3"]), "q3": final("q3", ["d5", "d2"])}
NDCG_Q3 = 1 / (1 + 1 / math.log2(3))


def test_document_ranking_keeps_each_documents_best_chunk():
    assert list(document_ranking(retrieved("d2", "d1", "d1", "d3"))) == ["d2", "d1", "d3"]
    assert document_ranking(retrieved("d2", "d1", "d1"))["d1"] == pytest.approx(0.9)


def test_retrieval_metrics_match_the_hand_computed_figures(dataset):
    summary, rows = score(dataset, ["q1", "q2", "q3"], FINALS, answers=False, judge=None, progress=Reporter())
    r = summary["retrieval"]
    assert r["ndcg@10"] == pytest.approx((1 + 0.5 + NDCG_Q3) / 3, abs=1e-4)
    assert r["mrr@10"] == pytest.approx((1 + 1 / 3 + 1) / 3, abs=1e-4)
    assert r["recall@1"] == pytest.approx((1 + 0 + 0.5) / 3, abs=1e-4)
    assert r["recall@5"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-4)
    assert r["recall@100"] == r["recall@5"] and r["errors"] == 0
    by_id = {row["query_id"]: row for row in rows}
    assert by_id["q2"]["mrr@10"] == pytest.approx(1 / 3, abs=1e-4)
    assert by_id["q3"]["ndcg@10"] == pytest.approx(NDCG_Q3, abs=1e-4)


def test_a_query_that_got_an_error_scores_zero(dataset):
    finals = {**FINALS, "q2": AnswerEvent(query_id="q2", kind="error", seq=0, error="boom")}
    summary, rows = score(dataset, ["q1", "q2", "q3"], finals, answers=False, judge=None, progress=Reporter())
    assert summary["retrieval"]["mrr@10"] == pytest.approx((1 + 0 + 1) / 3, abs=1e-4)
    assert summary["retrieval"]["errors"] == 1 and rows[1]["error"] == "boom"
    assert rows[1]["recall@100"] == 0.0


def test_answer_metrics_and_judge(dataset):
    finals = {"q1": final("q1", ["d1", "d2"], "The answer is one [1].", cited="1"),
              "q2": final("q2", ["d3"], "completely different words"), "q3": final("q3", ["d5"], "three")}
    judge = GeneratorJudge(ScriptedGenerator(["correctness: 5\nfaithfulness: 4", "correctness: 2", "no idea"]))
    summary, rows = score(dataset, ["q1", "q2", "q3"], finals, answers=True, judge=judge, progress=Reporter())
    # token F1: q1 "answer is one 1" vs "answer is one" -> P 3/4, R 1 -> 6/7; q2 -> 0; q3 -> 1
    assert rows[0]["token_f1"] == pytest.approx(6 / 7, abs=1e-4)
    assert rows[1]["token_f1"] == 0 and rows[2]["token_f1"] == 1
    assert summary["answers"]["token_f1"] == pytest.approx((6 / 7 + 0 + 1) / 3, abs=1e-4)
    assert summary["answers"]["rouge_l"] == pytest.approx(sum(r["rouge_l"] for r in rows) / 3, abs=1e-4)
    assert summary["latency_ms"]["ttft_p50"] == 200 and summary["usage"]["completion_tokens_total"] == 30
    assert summary["usage"]["generation_tokens_per_s"] == pytest.approx(10.0)
    # the cited passage (d1's text) is what the judge saw for q1
    prompt = judge.generator.requests[0][-1].content
    assert "[1] text of document 1" in prompt and "text of document 2" not in prompt
    assert [(r["judge_correctness"], r["judge_faithfulness"]) for r in rows] == [(5, 4), (2, None), (None, None)]
    assert summary["answers"]["judge_correctness"] == 3.5 and summary["answers"]["judge_faithfulness"] == 4
    assert summary["answers"]["judge_unparsed"] == 2


class ScriptedGenerator:
    """Replies with the given texts in turn (a judge model stand-in); records the prompts."""

    model_id = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.requests: list[list[ChatMessage]] = []

    async def stream(self, messages, params, stats):
        self.requests.append(list(messages))
        yield self.replies.pop(0)


def test_token_f1_and_rouge_follow_their_definitions():
    assert token_f1("The cat sat.", "a cat sat") == 1.0  # articles and punctuation are dropped
    assert token_f1("cat", "dog") == 0.0 and token_f1("", "") == 1.0
    rouge = RougeL()
    assert rouge("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "the cat the mat" (4 of 6 tokens each way) -> F 2/3
    assert rouge("the cat ran to the mat", "the cat sat on the mat") == pytest.approx(4 / 6, abs=1e-6)


def test_judge_replies_are_parsed_strictly():
    for reply in ("correctness: 4\nfaithfulness: 2", "Correctness = **4**\nFaithfulness:2"):
        grade = parse_grade(reply)
        assert (grade.correctness, grade.faithfulness) == (4, 2)
    assert parse_grade("I think it is good").correctness is None
    assert parse_grade("correctness: 9").correctness is None
    assert parse_grade("correctness: 5 = fully, 3 = partly").correctness is None  # a parroted rubric
    assert parse_grade("**Correctness:** 4/5\n- faithfulness: 3").correctness == 4


def test_openai_judge_posts_a_chat_completion_and_reads_the_grade():
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            seen["path"], seen["auth"] = self.path, self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"choices": [{"message": {"content": "correctness: 3\nfaithfulness: 5"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import asyncio

        judge = OpenAIJudge(f"http://127.0.0.1:{server.server_port}/v1/", "judge-model", api_key="k")
        grade = asyncio.run(_grade_and_close(judge))
    finally:
        server.shutdown()
    assert (grade.correctness, grade.faithfulness) == (3, 5)
    assert seen["path"] == "/v1/chat/completions" and seen["auth"] == "Bearer k"
    assert seen["body"]["model"] == "judge-model" and seen["body"]["temperature"] == 0
    assert [m["role"] for m in seen["body"]["messages"]] == ["system", "user"]
    assert judge.name == f"openai:judge-model@http://127.0.0.1:{server.server_port}/v1"


async def _grade_and_close(judge):
    try:
        return await judge.grade("q?", "ref", "ans", ["p"])
    finally:
        await judge.aclose()


def test_judge_prompt_holds_the_reference_and_numbered_passages():
    messages = judge_messages("Why?", "Because.", "An answer", ["first passage", "second"])
    assert isinstance(messages[0], ChatMessage) and "Because." in messages[1].content
    assert "[1] first passage" in messages[1].content and "[2] second" in messages[1].content


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "corpus.jsonl").unlink(), "missing corpus.jsonl"),
        (lambda d: (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnope\t1\n"),
         "unknown corpus-id 'nope'"),
        (lambda d: (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nqx\td1\t1\n"), "unknown query-id 'qx'"),
        (lambda d: (d / "qrels.tsv").write_text("q\tc\ts\n"), "header must be"),
        (lambda d: (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n"), "not an integer"),
        (lambda d: (d / "queries.jsonl").write_text('{"_id": "q1"}\n'), "field 'text' missing"),
        (lambda d: (d / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n'),
         "duplicate _id 'q1'"),
        (lambda d: (d / "corpus.jsonl").write_text("{not json\n"), "corpus.jsonl:1: not JSON"),
        (lambda d: (d / "answers.jsonl").write_text('{"_id": "zz", "text": "a"}\n'), "answer for unknown query 'zz'"),
    ],
)
def test_bad_layouts_are_refused_with_the_file_and_reason(tmp_path, mutate, message):
    root = write_dataset(tmp_path / "d", CORPUS, QUERIES, QRELS, ANSWERS)
    mutate(root)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(")):
        load_dataset(root)


def test_loading_keeps_judged_queries_and_counts_the_others(dataset):
    assert list(dataset.queries) == ["q1", "q2", "q3"] and dataset.queries_without_qrels == 1
    assert dataset.qrels["q3"] == {"d4": 1, "d5": 1}
    check_config(dataset, EvalConfig(out=dataset.root, answers=True))
    dataset.answers = {}
    with pytest.raises(DatasetError, match="needs answers.jsonl"):
        check_config(dataset, EvalConfig(out=dataset.root, answers=True))


def test_the_limit_sample_is_fixed_by_the_seed(dataset):
    assert sample_queries(dataset, 2, 0) == sample_queries(dataset, 2, 0)
    assert len(sample_queries(dataset, 2, 0)) == 2 and sample_queries(dataset, None, 0) == ["q1", "q2", "q3"]


def _report(run_id: str, created: str, ndcg: float, name: str = "tiny", query_set: str = "all") -> dict:
    return {"format": 1, "run_id": run_id, "created_at": created, "collection": "c", "previous_run_id": None,
            "dataset": {"name": name, "corpus_documents": 5, "queries": 3, "queries_evaluated": 3, "fingerprint": "f",
                        "query_set": query_set},
            "versions": {"pipeline": "p", "prompt": "v", "generator": "g", "embedder": "e", "chunker": "c",
                         "judge": None, "git_commit": "abc"},
            "ingest": {"chunks_embedded": 5, "chunks_unchanged": 0, "seconds": 1.0}, "elapsed_s": {"total": 2.0},
            "retrieval": {"ndcg@10": ndcg, "mrr@10": 0.5}}


def test_reports_are_written_whole_and_compared_with_the_previous_one(tmp_path):
    out = tmp_path / "eval"
    first = _report("r1", "2026-01-01T00:00:00+00:00", 0.5)
    write_report(out, first, [], comparison(first, None))
    write_report(out, _report("other", "2026-01-02T00:00:00+00:00", 0.9, name="elsewhere"), [], [])
    write_report(out, _report("sample", "2026-01-02T00:00:00+00:00", 0.7, query_set="sample"), [], [])
    second = _report("r2", "2026-01-03T00:00:00+00:00", 0.625)
    previous = previous_report(out, "tiny", "all", second["created_at"])
    assert previous["run_id"] == "r1"  # the newest of the same dataset and the same queries
    assert previous_report(out, "tiny", "new-sample", second["created_at"])["run_id"] == "sample"
    rows = comparison(second, previous)
    assert ("ndcg@10", 0.5, 0.625, 0.125) in rows and ("mrr@10", 0.5, 0.5, 0.0) in rows
    run_dir = write_report(out, second, [{"query_id": "q1"}], rows)
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.png", "report.json", "report.md"]
    assert "| ndcg@10 | 0.5 | 0.625 | +0.125 |" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "report.json").read_text())["per_query"] == [{"query_id": "q1"}]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_a_failing_report_leaves_nothing_behind(tmp_path, monkeypatch):
    import pipelines.reports as reports

    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(reports, "plot_metrics", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(tmp_path, _report("r1", "2026-01-01T00:00:00+00:00", 0.5), [], [])
    assert list(tmp_path.iterdir()) == []


def test_python_faq_keeps_question_headings_out_of_the_corpus(tmp_path):
    faq = tmp_path / "faq"
    faq.mkdir()
    (faq / "general.rst.txt").write_text(
        "General FAQ\n===========\n\nGeneral Information\n-------------------\n\n"
        "What is Python?\n^^^^^^^^^^^^^^^\n\nPython is a programming language.\n\n"
        "Why is it called Python?\n^^^^^^^^^^^^^^^^^^^^^^^^\n\nAfter Monty Python.\n"
    )
    (tmp_path / "tutorial.rst.txt").write_text("Tutorial\n========\n\nWhy read it?\n------------\n\nTo learn.\n")
    built = build_python_faq(tmp_path)
    assert [q["text"] for q in built.queries] == ["What is Python?", "Why is it called Python?"]
    corpus = {d["_id"]: d for d in built.corpus}
    for (qid, cid, rel), query, answer in zip(built.qrels, built.queries, built.answers, strict=True):
        assert rel == 1 and qid == query["_id"] == answer["_id"]
        assert query["text"] not in corpus[cid]["text"] + corpus[cid]["title"]
        assert answer["text"] == corpus[cid]["text"]
    assert corpus["faq/general#what-is-python"]["title"] == "General FAQ > General Information"
    # outside faq/ a heading ending in "?" is an ordinary section title
    assert corpus["tutorial#why-read-it"]["title"] == "Tutorial > Why read it?"


def test_the_metrics_plot_has_one_point_per_finished_run(tmp_path, monkeypatch):
    import pipelines.reports as reports

    plotted = []
    monkeypatch.setattr(reports, "plot_metrics", lambda root, report, path: (
        plotted.append([r["run_id"] for r in reports.finished_reports(root)]), path.write_bytes(b"png")))
    write_report(tmp_path, _report("r1", "2026-01-01T00:00:00+00:00", 0.5), [], [])
    write_report(tmp_path, _report("r2", "2026-01-02T00:00:00+00:00", 0.6), [], [])
    # while r2 is written, only r1 is finished (r2's own report is still in a temporary directory)
    assert plotted == [[], ["r1"]]


def test_eval_collection_names_never_end_with_a_reserved_suffix():
    assert collection_name("python-faq") == "eval_python_faq"
    assert collection_name("my_docs") == "eval_my_docs_set"
    assert collection_name("team-VETTED") == "eval_team_VETTED_set"
    assert len(collection_name("x" * 300)) <= 128
