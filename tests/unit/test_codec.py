"""Decoding and validation: every kind of bad input gets a clear, typed reason."""

import json

import pytest

from schemas import DocumentChange, Query
from streams.codec import DecodeError, decode


def _doc(**fields):
    base = {"op": "upsert", "doc_id": "d1", "version": 1, "text": "hello"}
    base.update(fields)
    return json.dumps(base).encode()


def test_valid_document_change_round_trips():
    change = decode(DocumentChange, _doc(), max_bytes=10_000)
    assert change.doc_id == "d1" and change.op == "upsert"
    again = decode(DocumentChange, change.to_bytes(), max_bytes=10_000)
    assert again == change


@pytest.mark.parametrize(
    ("value", "error_type", "needle"),
    [
        (b"{not json", "malformed_json", "not UTF-8 JSON"),
        (b"\xff\xfe\x00", "malformed_json", "not UTF-8 JSON"),
        (b"[1, 2]", "malformed_json", "expected an object"),
        (None, "empty_value", "no value"),
        (_doc(op="merge"), "schema", "op: Input should be 'upsert' or 'delete' (got 'merge')"),
        (_doc(text="   "), "schema", "empty document"),
        (_doc(version="x"), "schema", "version"),
        (_doc(extra_field=1), "schema", "extra_field: Extra inputs are not permitted"),
        (json.dumps({"op": "upsert"}).encode(), "schema", "doc_id: Field required"),
    ],
)
def test_bad_records_are_rejected_with_reason(value, error_type, needle):
    with pytest.raises(DecodeError) as info:
        decode(DocumentChange, value, max_bytes=10_000)
    assert info.value.error_type == error_type
    assert needle in info.value.reason


def test_oversized_record_is_rejected_before_parsing():
    with pytest.raises(DecodeError) as info:
        decode(DocumentChange, _doc(text="x" * 2000), max_bytes=1000)
    assert info.value.error_type == "oversized"
    assert "above the maximum of 1,000 bytes" in info.value.reason


def test_schema_error_keeps_parsed_object_to_salvage_ids():
    raw = json.dumps({"query_id": "q1", "conversation_id": "c1", "text": "  "}).encode()
    with pytest.raises(DecodeError) as info:
        decode(Query, raw, max_bytes=10_000)
    assert info.value.partial["query_id"] == "q1"
    assert "empty query" in info.value.reason


def test_delete_must_not_carry_text():
    with pytest.raises(DecodeError, match="a delete carries no text"):
        decode(DocumentChange, _doc(op="delete"), max_bytes=10_000)


def test_missing_envelope_fields_come_from_the_record():
    from streams.records import RawRecord

    raw = json.dumps({"op": "upsert", "doc_id": "d1", "version": 1, "text": "hello"}).encode()
    origin = RawRecord("eddy.docs.changes", 2, 41, b"d1", raw, timestamp_ms=1_700_000_000_000)
    one = decode(DocumentChange, raw, max_bytes=10_000, origin=origin)
    two = decode(DocumentChange, raw, max_bytes=10_000, origin=origin)
    assert one.event_id == two.event_id  # stable across redeliveries
    assert one.occurred_at.timestamp() == 1_700_000_000
    other = decode(DocumentChange, raw, max_bytes=10_000,
                   origin=RawRecord("eddy.docs.changes", 2, 42, b"d1", raw, timestamp_ms=1))
    assert other.event_id != one.event_id
    explicit = DocumentChange(op="upsert", doc_id="d1", version=1, text="x")
    kept = decode(DocumentChange, explicit.to_bytes(), max_bytes=10_000, origin=origin)
    assert kept.event_id == explicit.event_id and kept.occurred_at == explicit.occurred_at


@pytest.mark.parametrize("field", ["text", "doc_id", "title"])
def test_a_lone_surrogate_is_rejected_as_malformed(field):
    """Valid JSON that pydantic accepts, but no UTF-8 encoder takes: ``"x\\ud83d"``."""
    raw = _doc(**{field: "x\ud83d"})  # json.dumps escapes it as \ud83d
    assert b"\\ud83d" in raw
    with pytest.raises(DecodeError) as info:
        decode(DocumentChange, raw, max_bytes=10_000)
    assert info.value.error_type == "malformed_json" and "surrogate" in info.value.reason
    paired = decode(DocumentChange, _doc(text="smile \U0001f600"), max_bytes=10_000)  # \ud83d\ude00: a real pair
    assert paired.text.encode() == "smile \U0001f600".encode()


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_rejected_as_malformed(depth):
    head = b'{"op": "upsert", "doc_id": "d", "version": 1, "text": "t", "metadata": '
    raw = head + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(DecodeError) as info:
        decode(DocumentChange, raw, max_bytes=10_000_000)
    assert info.value.error_type == "malformed_json" and "nested" in info.value.reason


def test_a_reason_lists_a_bounded_number_of_failing_fields():
    raw = _doc(**{f"unknown_{i}": "v" * 100 for i in range(100_000)})
    with pytest.raises(DecodeError) as info:
        decode(DocumentChange, raw, max_bytes=100_000_000)
    reason = info.value.reason
    assert "unknown_0: Extra inputs are not permitted" in reason
    assert "and 99,990 more" in reason and len(reason) < 4_000
