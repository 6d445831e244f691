"""OpenAPI documentation of the collect routes (request bodies from the tracking models).

The request bodies are documented from :mod:`customer_context.models.tracking` rather than
validated by Powertools, because a batch must be validated event by event: one bad event is
rejected with its reason while the others are kept.
"""

from __future__ import annotations

from typing import Any

from customer_context.models.tracking import EVENT_TYPES, event_json_schemas

ENDPOINTS = ("batch", "import", *EVENT_TYPES)

_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "examples": ["invalid_request"]},
        "message": {"type": "string", "description": "What is wrong: the field and the reason."},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_OK = {
    "type": "object",
    "required": ["success", "accepted", "rejected"],
    "properties": {
        "success": {"type": "boolean", "const": True},
        "accepted": {"type": "integer", "description": "Events accepted (they land in `events`)."},
        "rejected": {
            "type": "array",
            "description": "Events rejected, with the reason; they land in `rejected_events`.",
            "items": {
                "type": "object",
                "required": ["index", "reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "reason": {"type": "string"},
                    "messageId": {"type": "string"},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def route_docs(endpoint: str) -> dict[str, Any]:
    """Keyword arguments for ``app.post`` documenting one collect route."""
    schemas = event_json_schemas()
    is_batch = endpoint in ("batch", "import")
    body_schema = schemas["batch"] if is_batch else schemas[endpoint]
    summary = "Send a batch of events" if is_batch else f"Send one {endpoint} event"
    description = (
        "RudderStack / Segment compatible. Authenticate with HTTP Basic (write key as user name, empty "
        "password) or a `writeKey` body field. The body may be gzip-compressed (`Content-Encoding: gzip`). "
        + (
            "Each event is validated on its own: valid events are accepted even when others are not; "
            "rejected events are listed in the response and kept in `rejected_events`."
            if is_batch
            else "An invalid event is answered 400 with the reason, and kept in `rejected_events`."
        )
        + (" `/v1/import` is an alias of `/v1/batch` for historical imports." if endpoint == "import" else "")
    )
    return {
        "summary": summary,
        "description": description,
        "tags": ["collect"],
        "responses": {
            200: _json(_OK, "Accepted (possibly with per-event rejections)."),
            400: _json(_ERROR, "Unreadable request, or the single event is invalid."),
            401: _json(_ERROR, "Missing or unknown write key."),
            413: _json(_ERROR, "Request or event above the size limit."),
            503: _json(_ERROR, "The queue is unavailable; retry (SDKs do)."),
        },
        "openapi_extensions": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            },
            "security": [{"writeKey": []}],
        },
    }
