"""What `eddy status` and `eddy topics` report, as plain data (JSON-ready dicts)."""

from __future__ import annotations

from config.settings import Settings
from eddy.stack import Stack
from infra.process import port_open
from streams.admin import TopicStatus, consumer_lag, describe_topics


def collect_status(settings: Settings) -> dict:
    """Everything `eddy status` shows: ``home``, ``kafka`` and ``milvus`` (address, embedded,
    running, ``error`` when a query failed), ``worker`` (``Stack.worker_status``), ``topics`` (one
    dict per catalogue topic), ``consumer_lag`` (group -> topic -> records) and ``collections``
    (name -> rows). Never raises for a stack that is down: what cannot be read stays empty."""
    stack = Stack(settings)
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    kafka_up = port_open(host, int(port))
    status: dict = {
        "home": str(settings.home),
        "kafka": {"bootstrap": settings.bootstrap_servers, "embedded": settings.embedded_kafka, "running": kafka_up},
        "milvus": {"uri": settings.milvus_address, "embedded": settings.embedded_milvus,
                   "running": stack.milvus.running if settings.embedded_milvus else True},
        "worker": stack.worker_status(),
        "topics": [], "consumer_lag": {}, "collections": {},
    }
    if kafka_up:
        try:
            status["topics"] = [
                {"name": t.name, "exists": t.exists, "partitions": t.partitions, "cleanup_policy": t.cleanup_policy,
                 "ok": t.ok, "problem": t.problem}
                for t in describe_topics(settings)
            ]
            status["consumer_lag"] = consumer_lag(settings)
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            status["kafka"]["error"] = str(exc)
    if status["milvus"]["running"]:
        from components.milvus_admin import collection_rows

        try:
            status["collections"] = collection_rows(settings.milvus_address)
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            status["milvus"]["error"] = str(exc)
    return status


def topic_records(rows: list[TopicStatus]) -> list[dict]:
    """`eddy topics --json`: per topic its spec (key, value schema name, cleanup policy, expected
    partitions) and its state in the cluster (exists, partitions, actual cleanup policy, ok, problem)."""
    return [{"name": r.name, "key": r.spec.key, "schema": r.spec.schema.__name__ if r.spec.schema else None,
             "cleanup_policy": r.spec.cleanup_policy, "expected_partitions": r.expected_partitions,
             "exists": r.exists, "partitions": r.partitions, "actual_cleanup_policy": r.cleanup_policy,
             "ok": r.ok, "problem": r.problem} for r in rows]
