"""RFC 9457 problem documents as the HTTP services describe them in their OpenAPI."""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE = "application/problem+json"


def problem_schema(description: str, error: dict[str, Any]) -> dict[str, Any]:
    """A problem document whose optional `errors` list holds objects like `error`."""
    return {
        "type": "object",
        "description": description,
        "required": ["title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": error},
        },
    }


def problem_response(description: str) -> dict[str, Any]:
    """An OpenAPI response answered with the `Problem` component schema."""
    return {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
