"""OpenAPI documentation of the collect routes (request bodies from the tracking models).

The request bodies are documented from :mod:`customer_context.models.tracking` rather than
validated by Powertools, because a batch must be validated event by event: one bad event is
rejected with its reason while the others are kept.
"""

from __future__ import annotations

from typing import Any

from customer_context.models.tracking import EVENT_TYPES, IDENTIFIER_FIELDS, MAX_ID_BYTES, event_json_schemas
from customer_context.ports import JsonObject

#: Segment's browser SDK (analytics-next) posts to one-letter paths under its ``apiHost`` (``…/v1``).
SHORT_PATHS = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias", "b": "batch"}
#: RudderStack's browser SDK posts its ``useBeacon`` batches here, the write key in the query (a beacon sends no
#: header), as ``text/plain``.
BEACON_PATH = "/beacon/v1/batch"
#: Every collect route: path → what it receives (``batch``, ``import`` or an event type).
ENDPOINTS: dict[str, str] = {
    **{f"/v1/{name}": name for name in ("batch", "import", *EVENT_TYPES)},
    **{f"/v1/{short}": name for short, name in SHORT_PATHS.items()},
    BEACON_PATH: "batch",
}
#: The SDK settings routes (GET): RudderStack's ``configUrl`` and Segment's ``cdnURL`` point here.
SOURCE_CONFIG_PATH = "/sourceConfig"
SEGMENT_SETTINGS_PATH = "/v1/projects/{writeKey}/settings"

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


_NON_BLANK = {"type": "string", "pattern": r"\S"}


def _as_accepted(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """An event's JSON Schema as collect applies it: numbers are accepted as text (``coerce_numbers_to_str``),
    timestamps are ISO-8601 date-times, a blank identifier is absent (so a required one must not be blank), one of
    userId / anonymousId is required, and on a single-call route ``type`` is optional (the route sets it)."""
    props = schema["properties"]
    required = schema.get("required", [])
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
                option.pop("minLength", None)
                option["maxLength"] = MAX_ID_BYTES  # JSON Schema counts characters; the limit is in UTF-8 bytes
                option["description"] = f"At most {MAX_ID_BYTES:,} bytes once UTF-8 encoded."
                if name in required:
                    option["pattern"] = _NON_BLANK["pattern"]
    endpoint = ENDPOINTS[path]
    props["type"] = {"description": f"Optional: `{path}` sets it to `{endpoint}`, whatever is sent"}
    schema["required"] = [r for r in required if r != "type"]
    if "userId" not in schema["required"]:
        schema["anyOf"] = [{"required": [name], "properties": {name: {"anyOf": [{"type": "number"}, _NON_BLANK]}}}
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


def route_docs(path: str) -> JsonObject:
    """Keyword arguments for ``app.post`` documenting the collect route at ``path`` (a key of :data:`ENDPOINTS`)."""
    endpoint = ENDPOINTS[path]
    schemas = event_json_schemas()
    is_batch = endpoint in ("batch", "import")
    body_schema = _batch_as_accepted(schemas["batch"]) if is_batch else _as_accepted(schemas[endpoint], path)
    summary = "Send a batch of events" if is_batch else f"Send one {endpoint} event"
    beacon = path == BEACON_PATH
    alias = (f" Segment's short path for `/v1/{endpoint}`." if path.removeprefix("/v1/") in SHORT_PATHS else
             " `/v1/import` is an alias of `/v1/batch` for historical imports." if endpoint == "import" else "")
    description = (
        "RudderStack / Segment compatible. "
        + ("RudderStack's `useBeacon` route: the write key is the `writeKey` query parameter (a beacon cannot send "
           "headers; no other route reads it there; without it, HTTP Basic as elsewhere) and the body is JSON sent "
           "as `text/plain`. " if beacon else
           "Authenticate with HTTP Basic (write key as user name, empty password) or a `writeKey` body field. ")
        + "The body is read as JSON whatever its `Content-Type` (the browser SDKs send `text/plain`) and may be "
        "gzip-compressed (`Content-Encoding: gzip`). "
        + (
            "Each event is validated on its own: valid events are accepted even when others are not; "
            "rejected events are listed in the response and kept in `rejected_events`."
            if is_batch
            else "An invalid event is answered 400 with the reason, and kept in `rejected_events`."
        )
        + alias
    )
    extensions: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        },
        "security": [{"writeKey": []}],
    }
    if beacon:
        extensions["security"] = [{"writeKeyQuery": []}, {"writeKey": []}]
    return {
        "summary": summary + (" (beacon)" if beacon else ""),
        "description": description,
        "tags": ["collect"],
        "responses": {
            200: _json(_OK, "Accepted (possibly with per-event rejections)."),
            400: _json(_ERROR, "Unreadable request, or the single event is invalid."),
            401: _json(_ERROR, "Missing or unknown write key."),
            413: _json(_ERROR, "Request or event above the size limit."),
            503: _json(_ERROR, "The queue is unavailable; retry (SDKs do)."),
        },
        "openapi_extensions": extensions,
    }


_SOURCE_CONFIG = {
    "type": "object",
    "required": ["source"],
    "properties": {"source": {
        "type": "object",
        "required": ["id", "name", "writeKey", "workspaceId", "enabled", "config", "destinations"],
        "properties": {
            "id": {"type": "string", "description": "The source id of the write key."},
            "name": {"type": "string"},
            "writeKey": {"type": "string"},
            "workspaceId": {"type": "string"},
            "enabled": {"type": "boolean", "const": True},
            "config": {"type": "object", "description": "Error and metrics reporting to RudderStack off."},
            "destinations": {"type": "array", "maxItems": 0, "description": "None: no device-mode scripts."},
        },
    }},
}
_SEGMENT_SETTINGS = {
    "type": "object",
    "required": ["integrations"],
    "properties": {
        "integrations": {
            "type": "object",
            "required": ["Segment.io"],
            "additionalProperties": False,
            "properties": {"Segment.io": {
                "type": "object",
                "required": ["apiKey", "apiHost", "protocol"],
                "properties": {
                    "apiKey": {"type": "string"},
                    "apiHost": {"type": "string", "description": "This API's host and path prefix, then `/v1`."},
                    "protocol": {"type": "string", "enum": ["http", "https"]},
                },
            }},
        },
        "metrics": {"type": "object", "description": "`sampleRate` 0: no metrics sent to Segment."},
        "remotePlugins": {"type": "array", "maxItems": 0},
    },
}


def settings_docs(path: str) -> JsonObject:
    """Keyword arguments for ``app.get`` documenting an SDK settings route (:data:`SOURCE_CONFIG_PATH` or
    :data:`SEGMENT_SETTINGS_PATH`)."""
    rudderstack = path == SOURCE_CONFIG_PATH
    return {
        "summary": "RudderStack SDK source configuration" if rudderstack else "Segment SDK settings",
        "description": (
            "What RudderStack's JavaScript SDK v3 reads from its `configUrl` (point it at `<this API>/sourceConfig`): "
            "the source of the write key (HTTP Basic, as the SDK sends it, or the `writeKey` query parameter), with "
            "no destinations and nothing reported to RudderStack."
            if rudderstack else
            "What Segment's Analytics.js 2.0 reads from its `cdnURL` (point it at this API): only the `Segment.io` "
            "integration, sending to this API (`apiHost` is the host and path this request came to, `/v1`), no "
            "destinations, no remote plugins, no metrics."
        ),
        "tags": ["sdk settings"],
        "responses": {
            200: _json(_SOURCE_CONFIG if rudderstack else _SEGMENT_SETTINGS, "The settings."),
            401: _json(_ERROR, "Missing or unknown write key."),
        },
        "openapi_extensions": {"security": [{"writeKey": []}, {"writeKeyQuery": []}] if rudderstack else []},
    }
