"""The ``/invocations`` request body as an OpenAPI schema, from the use case's features.

Other columns and top-level keys are allowed, as MLflow's scoring server ignores them.
"""

from __future__ import annotations

from typing import Any

from esteira.usecase import UseCase

_JSON_SCHEMA_TYPES = {
    "float": {"type": ["number", "null"]},
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "string": {"type": ["string", "null"]},
    "category": {"type": ["string", "null"]},
    "timestamp": {"type": "string"},
}


def invocations_schema(uc: UseCase) -> dict[str, Any]:
    """The request body as an OpenAPI schema, from the use case's feature definitions."""
    names = uc.feature_names
    row = {
        "type": "object",
        "properties": {f.name: _JSON_SCHEMA_TYPES[f.type] for f in uc.features.definitions},
        "required": names,
    }
    rows = {"type": "array", "items": row, "minItems": 1}
    columns = {
        "type": "object",
        "properties": {
            f.name: {"type": "array", "items": _JSON_SCHEMA_TYPES[f.type]}
            for f in uc.features.definitions
        },
        "required": names,
    }
    split = {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
    }

    params = {
        "type": "object",
        "properties": {"probabilities": {"type": "boolean", "default": False}},
        "description": "probabilities: a classifier answers {prediction, probability} records",
    }

    def one_of(key: str, schema: dict) -> dict:
        return {
            "type": "object",
            "properties": {key: schema, "params": params},
            "required": [key],
        }

    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            one_of("dataframe_split", split),
                            one_of("dataframe_records", rows),
                            one_of("instances", rows),
                            one_of("inputs", {"oneOf": [rows, columns]}),
                        ]
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": {
                "description": "one prediction per row, in request order",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"predictions": {"type": "array"}},
                        }
                    }
                },
            }
        },
    }
