"""The AsyncAPI document is generated from the catalogue and every reference in it resolves."""

from config.settings import Settings
from streams.asyncapi import asyncapi_document
from streams.topics import CATALOGUE


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc, ref):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_every_topic_is_a_channel_with_its_address_and_bindings():
    settings = Settings(topic_prefix="acme.", partitions=6)
    doc = asyncapi_document(settings)
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"]: c for c in doc["channels"].values()}
    for spec in CATALOGUE:
        channel = addresses[f"acme.{spec.name}"]
        kafka = channel["bindings"]["kafka"]
        assert kafka["partitions"] == spec.partition_count(settings)
        assert kafka["topicConfiguration"]["cleanup.policy"] == [spec.cleanup_policy]
    assert doc["operations"]["send_docs_changes"]["action"] == "send"
    assert doc["operations"]["receive_answers"]["action"] == "receive"


def test_all_references_resolve_and_payloads_forbid_extra_fields():
    doc = asyncapi_document(Settings())
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        _resolve(doc, ref)
    schema = doc["components"]["schemas"]["DocumentChange"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["op"]["enum"] == ["upsert", "delete"]
