"""Versioned snapshots of the vetted datasets (``datasets.eval`` / ``datasets.train``) for the
evaluation and training pipelines.

``export_snapshot(client, "eval", out_dir)`` reads the topic up to its current end, keeps the
newest record per key (what compaction will keep; tombstones remove), and writes
``out_dir/<name>-<hash12>/records.jsonl`` (one record per line, sorted by record id, canonical
JSON) and ``manifest.json``: content hash (sha256 of records.jsonl), record counts (total and per
rating), time range of the feedback, the scrubber and filter versions that produced the records,
and the topic offsets read. The directory name carries the content hash, so re-exporting
unchanged data gives the same version. ``load_snapshot(path)`` is how a pipeline reads one back
(hash and count checked).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from schemas import EvalRecord, TrainRecord
from schemas.datasets import DatasetRecord
from streams.client import EddyClient

DATASETS: dict[str, type[DatasetRecord]] = {"eval": EvalRecord, "train": TrainRecord}
MANIFEST_VERSION = 1


class SnapshotError(RuntimeError):
    """The topic holds a record that is not a valid dataset record."""


@dataclass(frozen=True)
class Snapshot:
    path: Path
    manifest: dict


def export_snapshot(client: EddyClient, name: str, out_dir: Path, *,
                    on_record: Callable[[], None] | None = None) -> Snapshot:
    """Write the snapshot of dataset ``name`` (``eval`` or ``train``) under ``out_dir``; returns it.

    Raises KeyError for an unknown name, SnapshotError for an invalid record on the topic and
    EddyClientError when the topic cannot be read.
    """
    schema = DATASETS[name]
    topic = f"datasets.{name}"
    latest: dict[bytes, bytes | None] = {}
    ends: dict[int, int] = {}
    for msg in client.read_snapshot(topic):
        latest[msg.key()] = msg.value()
        ends[msg.partition()] = msg.offset() + 1
        if on_record is not None:
            on_record()
    records = []
    for key, value in latest.items():
        if value is None:
            continue
        try:
            records.append(schema.model_validate_json(value))
        except ValidationError as exc:
            raise SnapshotError(f"{client.topic(topic)} key {key!r}: not a valid {schema.__name__}: {exc}") from exc
    records.sort(key=lambda r: r.record_id)
    body = "".join(json.dumps(r.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    data = body.encode()
    digest = hashlib.sha256(data).hexdigest()
    feedback_times = [r.feedback_at for r in records]
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": name,
        "version": f"{name}-{digest[:12]}",
        "schema": f"{schema.__name__}/v{schema.SCHEMA_VERSION}",
        "topic": client.topic(topic),
        "offsets": {str(p): end for p, end in sorted(ends.items())},
        "created_at": datetime.now(UTC).isoformat(),
        "records": len(records),
        "ratings": dict(sorted(Counter(r.rating for r in records).items())),
        "content_sha256": digest,
        "time_range": {
            "first_feedback_at": min(feedback_times).isoformat() if records else None,
            "last_feedback_at": max(feedback_times).isoformat() if records else None,
        },
        "scrubbers": dict(sorted(Counter(r.scrubber for r in records).items())),
        "filters": dict(sorted(Counter(r.filters for r in records).items())),
    }
    path = out_dir / manifest["version"]
    path.mkdir(parents=True, exist_ok=True)
    _write_atomic(path / "records.jsonl", data)
    _write_atomic(path / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return Snapshot(path, manifest)


def load_snapshot(path: Path) -> tuple[dict, list[DatasetRecord]]:
    """Read a snapshot directory written by ``export_snapshot``: its manifest and its records (as
    EvalRecord or TrainRecord). Raises SnapshotError when records.jsonl does not match the
    manifest's content hash or record count (a truncated or edited copy)."""
    manifest = json.loads((path / "manifest.json").read_text())
    data = (path / "records.jsonl").read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["content_sha256"]:
        raise SnapshotError(f"{path}: records.jsonl does not match the manifest's content_sha256")
    schema = DATASETS[manifest["dataset"]]
    records = [schema.model_validate_json(line) for line in data.splitlines() if line.strip()]
    if len(records) != manifest["records"]:
        raise SnapshotError(f"{path}: {len(records)} records, the manifest says {manifest['records']}")
    return manifest, records


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
