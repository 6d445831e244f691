"""OpenAPI documentation of the collect routes (request bodies from the tracking models).

The request bodies are documented from :mod:`customer_context.models.tracking` rather than
validated by Powertools, because a batch must be validated event by event: one bad event is
rejected with its reason while the others are kept.
"""

from __future__ import annotations

from typing import Any

from customer_context.models.tracking import EVENT_TYPES, MAX_ID_BYTES, event_json_schemas

IDENTIFIER_FIELDS = ("messageId", "userId", "anonymousId", "groupId", "previousId")

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


def _as_accepted(schema: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """An event's JSON Schema as collect applies it: numbers are accepted as text (``coerce_numbers_to_str``),
    timestamps are ISO-8601 date-times, one of userId / anonymousId is required, and on a single-call route
    ``type`` is optional (the route sets it)."""
    props = schema["properties"]
    for name, prop in list(props.items()):
        if prop.get("type") == "string" and "const" not in prop:  # a required string: give it alternatives
            text = {k: prop.pop(k) for k in ("type", "minLength", "maxLength") if k in prop}
            prop["anyOf"] = [text]
        for option in list(prop.get("anyOf", [])):
            if option.get("type") != "string":
                continue
            if name in ("timestamp", "originalTimestamp", "sentAt"):
                option["format"] = "date-time"
                continue
            prop["anyOf"].append({"type": "number"})
            if name in IDENTIFIER_FIELDS:
                option["maxLength"] = MAX_ID_BYTES  # JSON Schema counts characters; the limit is in UTF-8 bytes
                option["description"] = f"At most {MAX_ID_BYTES:,} bytes once UTF-8 encoded."
    props["type"] = {"description": f"Optional: `/v1/{endpoint}` sets it to `{endpoint}`, whatever is sent"}
    schema["required"] = [r for r in schema.get("required", []) if r != "type"]
    if "userId" not in schema["required"]:
        schema["anyOf"] = [{"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                           for name in ("userId", "anonymousId")]
    return schema


def _batch_as_accepted(schema: dict[str, Any]) -> dict[str, Any]:
    """The batch body as collect reads it: each item is validated on its own (any value is answered per event),
    a ``context`` / ``integrations`` that is not an object is not merged, and a ``writeKey`` that is not a string
    counts as none."""
    props = schema["properties"]
    props["batch"] = {"type": "array", "description": props["batch"]["description"] + " Any item that is not a valid "
                      "event is rejected alone (listed in `rejected`, kept in `rejected_events`)."}
    for name in ("context", "integrations", "writeKey"):
        props[name] = {"description": props[name].get("description", "")}
    props["sentAt"]["anyOf"] = [{"type": "string", "format": "date-time"}, {"not": {"type": "string"}}]
    props["sentAt"]["description"] += " A string must be an ISO-8601 date-time; anything else is ignored."
    return schema


def route_docs(endpoint: str) -> dict[str, Any]:
    """Keyword arguments for ``app.post`` documenting one collect route."""
    schemas = event_json_schemas()
    is_batch = endpoint in ("batch", "import")
    body_schema = _batch_as_accepted(schemas["batch"]) if is_batch else _as_accepted(schemas[endpoint], endpoint)
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
