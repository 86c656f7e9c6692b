"""The alerter's OpenAPI as it answers: every error is a problem document, and each operation
lists the errors it can give (a schemathesis run holds the service to it)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gapwatch.problems import problem_response, problem_schema
from gapwatch_alerter.body_guard import WRITES

PROBLEM_SCHEMA = problem_schema(
    "RFC 9457 problem details; `errors` lists each bad parameter or body field.",
    {
        "type": "object",
        "required": ["path", "code", "reason"],
        "properties": {
            "path": {"type": "string", "description": "Where: query.limit, body.matchers..."},
            "code": {"type": "string", "description": "Machine-readable error code."},
            "reason": {"type": "string"},
        },
    },
)


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec of `app`, its error responses replaced by the problem documents the
    alerter answers with."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            operation["responses"] = {
                **_errors(path, method.upper(), operation),
                **{
                    status: answer
                    for status, answer in operation.get("responses", {}).items()
                    if status.startswith("2")
                    or (status == "503" and not path.startswith("/v1/"))  # /readyz: JSON
                },
            }
    app.openapi_schema = spec
    return spec


def _errors(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, Any] = {}
    if not path.startswith("/v1/"):
        return errors
    if "requestBody" in operation:
        errors["400"] = problem_response("The body is not JSON.")
    if method in WRITES:
        errors["401"] = problem_response("Missing or wrong bearer token.")
    if "{" in path:
        errors["404"] = problem_response("Nothing by that name.")
    if method in WRITES:
        errors["413"] = problem_response("The body is over GAPWATCH_ALERTER_MAX_BODY_BYTES.")
    errors["422"] = problem_response("A parameter or body field is wrong; `errors` says which.")
    errors["503"] = problem_response("PostgreSQL is unavailable or not connected yet.")
    return errors
