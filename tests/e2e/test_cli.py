"""The `eddy` command end to end, as a user runs it, against the session's real broker and Milvus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from streams.topics import CATALOGUE
from tests.conftest import time_left


def eddy(settings, *args, check=True, timeout=300):
    """Run ``eddy *args``; waits ``timeout`` s at most, and never past the test's own limit."""
    env = {**os.environ, **settings.to_env()}
    limit = time_left(timeout)
    try:
        proc = subprocess.run([sys.executable, "-m", "eddy", *args], env=env, capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired as e:  # its output is bytes, whatever ``text`` says
        out = [x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (e.stdout, e.stderr)]
        raise AssertionError(f"eddy {' '.join(args)} still running after {limit:.0f} s\n{out[0]}\n{out[1]}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"eddy {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_ingest_wait_json_incremental_and_deletes(settings, stack, tmp_path):
    stack.start_worker(("indexer",))
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("# Alpha\n\nAlpha paragraph about copying files.\n\n## Beta\n\nBeta text.\n")
    (docs / "sub" / "b.rst").write_text("Gamma\n=====\n\nGamma paragraph.\n")
    (docs / "c.txt").write_text("Plain text document.\n\nSecond paragraph.\n")
    (docs / "ignored.bin").write_bytes(b"\x00\x01")

    first = json.loads(eddy(settings, "ingest", str(docs), "--source", "kb", "--wait", "--json").stdout)
    assert first["documents"] == 3 and first["deletes"] == 0
    assert first["chunks_embedded"] == first["chunks_total"] > 0
    assert first["lag_ms_p50"] is not None and first["lag_ms_p99"] >= first["lag_ms_p50"]

    again = json.loads(eddy(settings, "ingest", str(docs), "--source", "kb", "--wait", "--json").stdout)
    assert again["chunks_embedded"] == 0 and again["chunks_unchanged"] == first["chunks_total"]

    (docs / "c.txt").unlink()
    (docs / "a.md").write_text("# Alpha\n\nAlpha paragraph about copying files.\n\n## Beta\n\nNew beta text.\n")
    third = json.loads(eddy(settings, "ingest", str(docs), "--source", "kb", "--wait", "--json").stdout)
    assert third["documents"] == 2 and third["deletes"] == 1
    assert 1 <= third["chunks_embedded"] < first["chunks_total"]
    assert third["chunks_deleted"] >= 2  # the old Beta chunk and c.txt's chunk(s)


def test_ingest_reports_missing_and_binary_files_and_publishes_nothing_for_them(settings, tmp_path):
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    proc = eddy(settings, "ingest", str(tmp_path / "missing"), str(binary), "--source", "bad", "--json", check=False)
    assert proc.returncode == 1
    assert "no such file or directory" in proc.stderr
    assert "binary file" in proc.stderr
    assert json.loads(proc.stdout)["documents"] == 0


def test_ask_json_status_topics_and_schema_export(settings, stack, tmp_path):
    stack.start_worker(("indexer", "answerer"))
    doc = tmp_path / "copy.md"
    doc.write_text("# Copying files\n\nUse shutil.copy(src, dst) to copy a file in Python.\n")
    eddy(settings, "ingest", str(doc), "--source", "faq", "--wait")
    proc = eddy(settings, "ask", "How do I copy a file?", "--json", "--max-tokens", "8")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1]["kind"] == "final" and events[-1]["citations"][0]["doc_id"] == "faq:copy.md"
    assert all(e["kind"] == "delta" for e in events[:-1])

    human = eddy(settings, "ask", "How do I copy a file?", "--max-tokens", "8").stdout
    assert "citations" in human and "copy.md" in human and "ttft" in human

    status = json.loads(eddy(settings, "status", "--json").stdout)
    assert status["kafka"]["bootstrap"] == settings.bootstrap_servers
    assert status["milvus"]["uri"] == settings.milvus_address
    assert status["worker"]["running"] and status["worker"]["ready"]
    assert status["collections"][settings.collection] >= 1
    assert settings.topic("docs.changes") in status["consumer_lag"][settings.group_id]
    assert all(t["ok"] for t in status["topics"])

    topics = json.loads(eddy(settings, "topics", "--json").stdout)
    assert {t["name"] for t in topics} == {spec.full_name(settings) for spec in CATALOGUE}
    assert {t["name"]: t["cleanup_policy"] for t in topics}[settings.topic("docs.changes")] == "compact"

    out = tmp_path / "schemas"
    eddy(settings, "schemas", "export", str(out))
    schema = json.loads((out / "DocumentChange.schema.json").read_text())
    assert schema["properties"]["op"]["enum"] == ["upsert", "delete"]
    assert schema["additionalProperties"] is False
    asyncapi = json.loads((out / "asyncapi.json").read_text())
    assert asyncapi["channels"]["docs_changes"]["address"] == settings.topic("docs.changes")
