"""Decode and validate records with the schemas; reasons a record is rejected are for humans."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from streams.records import RawRecord

M = TypeVar("M", bound=BaseModel)

#: Namespace of the event ids derived for records published without one (uuid5 of topic/partition/offset).
_EVENT_ID_NAMESPACE = uuid.UUID("6f1d3c52-2d0e-4c1b-9a57-0e8d7f1f5a10")
#: A ``\uD800``-``\uDFFF`` escape: JSON may spell a lone surrogate, which no UTF-8 encoder takes.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
#: Failing fields a schema reason lists before it says how many more there are.
MAX_REASON_FIELDS = 10


class DecodeError(Exception):
    """A record that cannot become its topic's event. ``error_type`` is machine-readable."""

    def __init__(self, error_type: str, reason: str, partial: dict | None = None) -> None:
        super().__init__(reason)
        self.error_type = error_type  # malformed_json | malformed_protobuf | schema | oversized | empty_value
        # (agents add collection_limit, and processing for a record whose handling failed otherwise)
        self.reason = reason
        self.partial = partial  # the parsed JSON object when it parsed, to salvage ids (e.g. query_id)


def decode(schema: type[M], value: bytes | None, *, max_bytes: int, origin: RawRecord | None = None) -> M:
    """Parse UTF-8 JSON ``value`` into ``schema``.

    With ``origin`` (the consumed record), an event published without ``event_id`` gets one
    derived from its topic/partition/offset (stable across redeliveries) and one without
    ``occurred_at`` gets the record's Kafka timestamp, so lag figures start at publication.

    Raises DecodeError — and nothing else, whatever the bytes: ``empty_value`` (no value /
    tombstone), ``oversized`` (more than ``max_bytes`` bytes), ``malformed_json`` (not UTF-8 JSON,
    not an object, nested deeper than Python's recursion limit, or a string holding a lone
    surrogate such as ``"\\ud83d"``, which no UTF-8 encoder takes) or ``schema`` (the object fails
    validation; the reason lists the first ``MAX_REASON_FIELDS`` failing fields).
    """
    if not value:
        raise DecodeError("empty_value", "record has no value")
    if len(value) > max_bytes:
        raise DecodeError("oversized", f"record is {len(value):,} bytes, above the maximum of {max_bytes:,} bytes")
    try:
        obj = json.loads(value)
        if _SURROGATE_ESCAPE.search(value):  # only then pay for a second pass over the strings
            json.dumps(obj, ensure_ascii=False).encode()
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError("malformed_json", f"value is not UTF-8 JSON: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise DecodeError("malformed_json", f"value holds a lone surrogate {exc.object[exc.start:exc.end]!a} "
                          "in a string: not Unicode text") from exc
    except RecursionError as exc:
        raise DecodeError("malformed_json", "value is JSON nested too deeply") from exc
    if not isinstance(obj, dict):
        raise DecodeError("malformed_json", f"value is JSON {type(obj).__name__}, expected an object")
    if origin is not None:
        if "event_id" not in obj:
            obj["event_id"] = str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{origin.topic}/{origin.partition}/{origin.offset}"))
        if "occurred_at" not in obj and origin.timestamp_ms:
            obj["occurred_at"] = datetime.fromtimestamp(origin.timestamp_ms / 1000, UTC).isoformat()
    try:
        return schema.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError("schema", f"not a valid {schema.__name__}: {describe(exc)}", partial=obj) from exc
    except RecursionError as exc:
        raise DecodeError("malformed_json", "value is JSON nested too deeply") from exc


def describe(exc: ValidationError, max_fields: int = MAX_REASON_FIELDS) -> str:
    """One part per failing field, e.g. ``op: Input should be 'upsert' or 'delete' (got 'merge')``, for the
    first ``max_fields`` of them, then ``… and N more``."""
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:max_fields]:
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        where = f"{where[:80]}…" if len(where) > 80 else where  # an unknown field's name is the producer's
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = ""
        if isinstance(got, (str, int, float, bool)) and err["type"] != "missing":
            text = repr(got)
            shown = f" (got {text[:60]}…)" if len(text) > 60 else f" (got {text})"
        parts.append(f"{where}: {msg}{shown}")
    if len(errors) > max_fields:
        parts.append(f"… and {len(errors) - max_fields:,} more")
    return "; ".join(parts)


def decode_traces(value: bytes | None) -> ExportTraceServiceRequest:
    """One ``traces`` record: an OTLP ``ExportTraceServiceRequest`` (protobuf; empty bytes = no spans).

    Raises DecodeError (``malformed_protobuf``) when the bytes are not that message.
    """
    try:
        return ExportTraceServiceRequest.FromString(value or b"")
    except ProtobufDecodeError as exc:
        raise DecodeError("malformed_protobuf", f"not an OTLP ExportTraceServiceRequest: {exc}") from exc
