"""Export the event schemas as JSON Schema files (one per event type, named after the topic)."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import (
    Alert,
    AnswerEvent,
    DeadLetter,
    DocumentChange,
    EvalRecord,
    Feedback,
    IndexEvent,
    Query,
    Rejection,
    ScrubAudit,
    TrainRecord,
)

EXPORTED = {
    "DocumentChange": DocumentChange,
    "IndexEvent": IndexEvent,
    "Query": Query,
    "AnswerEvent": AnswerEvent,
    "Feedback": Feedback,
    "EvalRecord": EvalRecord,
    "TrainRecord": TrainRecord,
    "Rejection": Rejection,
    "ScrubAudit": ScrubAudit,
    "DeadLetter": DeadLetter,
    "Alert": Alert,
}


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<Name>.schema.json`` (JSON Schema 2020-12, validation mode) per event; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTED.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"eddy/{name}/v{model.SCHEMA_VERSION}"
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
