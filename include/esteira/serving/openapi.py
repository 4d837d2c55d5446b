"""The ``/invocations`` request body as an OpenAPI schema, from the use case's features.

Other columns and top-level keys are allowed, as MLflow's scoring server ignores them. With
an online store (``online:``) a row may instead carry the entity key and any of the features
(``serving.lookup``), and the answer says what was looked up.
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
    columns = {
        "type": "object",
        "properties": {
            f.name: {"type": "array", "items": _JSON_SCHEMA_TYPES[f.type]}
            for f in uc.features.definitions
        },
        "required": names,
    }
    responses: dict[str, Any] = {}
    predictions: dict[str, Any] = {"predictions": {"type": "array"}}
    if uc.online is not None:
        key = _JSON_SCHEMA_TYPES[uc.schema_.columns[uc.entity].type]
        row = {"anyOf": [row, {"type": "object", "properties": {uc.entity: key, **row["properties"]},
                               "required": [uc.entity]}]}
        columns = {"anyOf": [columns, {
            "type": "object",
            "properties": {uc.entity: {"type": "array", "items": key}, **columns["properties"]},
            "required": [uc.entity]}]}
        predictions["online"] = {"type": "array", "description": "rows sent by key: per row, "
                                 "key, feature_ts, age_seconds, stale, missing"}
        responses["422"] = {"description": "a row sent by key has no stored features, or stale "
                                           "ones (online.stale: refuse); the message names it"}
    rows = {"type": "array", "items": row, "minItems": 1}
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
                        "schema": {"type": "object", "properties": predictions}
                    }
                },
            },
            **responses,
        },
    }
