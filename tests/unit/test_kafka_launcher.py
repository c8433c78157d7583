"""infra.kafka: what can be checked without a JVM."""

from __future__ import annotations

import uuid

import infra.kafka as kafka


def test_cluster_ids_never_start_with_a_dash(monkeypatch):
    # 0xF8 as the first byte encodes to "-" first in base64url: the storage tool would read an option
    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x10" * 16)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(drawn))
    cluster_id = kafka.random_cluster_id()
    assert cluster_id == "EBAQEBAQEBAQEBAQEBAQEA" and len(cluster_id) == 22


def test_cluster_ids_are_22_base64url_characters():
    for _ in range(500):
        cluster_id = kafka.random_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
