"""Export event schemas as JSON Schema files (one per event type, named after the model)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel


def export_json_schemas(directory: Path, models: Iterable[type[BaseModel]]) -> list[Path]:
    """Write ``<Name>.schema.json`` (JSON Schema 2020-12, validation mode) per event model (the topic
    catalogue's: ``streams.topics.event_models()``); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in models:
        name = model.__name__
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"eddy/{name}/v{model.SCHEMA_VERSION}"
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
