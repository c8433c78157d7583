"""The Eddy image (its slim ``app`` stage) runs a worker: indexes documents and answers with the fast model.

The container uses the session's broker (embedded, or the container one with ``EDDY_TEST_KAFKA=container``)
and Milvus Lite server on this host, as a worker on another machine would use a shared cluster.
"""

from __future__ import annotations

import asyncio

import pytest

from schemas import DocumentChange
from tests.conftest import time_left
from tests.containers.workers import WorkerContainer, container_name
from tests.integration.helpers import assert_index_matches, publish_and_wait

pytestmark = [pytest.mark.containers, pytest.mark.slow]

DOCS = {
    "copy": ("Copying files", "Copying files\n=============\n\nUse shutil.copy(src, dst) to copy a file; "
             "shutil.copy2 also keeps the file's metadata."),
    "sleep": ("Sleeping", "Sleeping\n========\n\nCall time.sleep(seconds) to pause the current thread."),
    "json": ("JSON", "JSON\n====\n\nUse json.dumps(obj) to serialise an object to a JSON string."),
}


def test_worker_container_indexes_and_answers(settings, client, eddy_image, host_packages, tmp_path):
    worker = WorkerContainer(eddy_image, settings, tmp_path / "container-home", ("indexer", "answerer"),
                             container_name("eddy-test-worker"), host_packages=host_packages)
    try:
        worker.start()
        assert worker.wait_ready(time_left(300)) > 0
        assert worker.user() == "eddy", "the image runs Eddy as its non-root user"
        changes = [DocumentChange(op="upsert", doc_id=d, version=1, title=t, text=text, content_type="text/x-rst",
                                  uri=f"https://example.test/{d}") for d, (t, text) in DOCS.items()]
        events = publish_and_wait(client, changes, timeout_s=time_left(120))
        assert {e.status for e in events} == {"indexed"}
        assert_index_matches(settings, {c.doc_id: c for c in changes})

        async def ask():
            return [e async for e in client.ask("How do I copy a file?", top_k=2, timeout_s=time_left(120))]

        answer = asyncio.run(ask())
        final = answer[-1]
        assert final.kind == "final", final.error
        assert [e.kind for e in answer].count("final") == 1
        assert final.citations and final.citations[0].doc_id == "copy"
        assert final.text and final.usage.completion_tokens > 0
        assert final.model.startswith("SmolLM2-135M")
    finally:
        worker.remove(tmp_path / "logs")
