"""AsyncAPI 3.0 document of Eddy's topics, generated from the topic catalogue and the schemas.

It tells a client in any language what to publish where: channel (topic) addresses, key,
payload JSON Schema, partitions and cleanup policy (Kafka bindings), and which side sends.
"""

from __future__ import annotations

from typing import Any

from config import __version__
from config.settings import Settings
from streams.topics import CATALOGUE


#: What users do on each topic (AsyncAPI operations are from the user's point of view).
def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (a JSON-ready dict) for the configured prefix and bootstrap address."""
    schemas: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in CATALOGUE:
        if spec.schema is not None:
            name = spec.schema.__name__
            payload = spec.schema.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(payload.pop("$defs", {}))
            content_type = "application/json"
        elif spec.protobuf is not None:
            name = spec.protobuf.rpartition(".")[2]
            payload = {"type": "string", "contentEncoding": "binary",
                       "description": f"protobuf {spec.protobuf} (binary encoding)"}
            content_type = "application/x-protobuf"
        else:
            continue
        schemas[name] = payload
        messages[name] = {
            "name": name,
            "contentType": content_type,
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {"kafka": {"key": {"type": "string", "description": spec.key}}},
        }
        channel = spec.name.replace(".", "_")
        channels[channel] = {
            "address": spec.full_name(settings),
            "description": spec.description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {
                "partitions": spec.partition_count(settings),
                "topicConfiguration": {"cleanup.policy": [spec.cleanup_policy],
                                       **({"retention.ms": spec.retention_ms} if spec.retention_ms else {})},
            }},
        }
        action = spec.user_action
        operations[f"{action}_{channel}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Eddy", "version": __version__,
                 "description": "Event-driven RAG: document changes in, answer streams out. Values are UTF-8 JSON."},
        "servers": {"embedded": {"host": settings.bootstrap_servers, "protocol": "kafka",
                                 "description": "the broker `eddy up` starts (or EDDY_KAFKA_BOOTSTRAP)"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
