"""The tracking API's event models (Segment spec, as RudderStack and Segment SDKs send it).

These models are the single source of truth for per-event validation in collect *and* for the
request schemas in the collect API's OpenAPI document. Unknown fields are kept (``extra="allow"``):
the spec is open, and we never drop what a client sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
# Identifiers are keys in the serving store, which counts bytes (DynamoDB: 2,048 per partition key, our
# prefix included): the limit is in UTF-8 bytes, not characters.
MAX_ID_BYTES = 1024
#: The identifier fields of an event. A blank one (``""`` or only whitespace) is absent: RudderStack's browser
#: SDK sends ``"userId": ""`` on every anonymous event, and a blank is never an identifier.
IDENTIFIER_FIELDS = ("messageId", "userId", "anonymousId", "groupId", "previousId")


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 date-time; a value without a zone is taken as UTC.

    Raises:
        ValueError: ``value`` is not an ISO-8601 date-time.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an ISO-8601 date-time, got {value[:64]!r}") from None
    if not parsed.tzinfo:
        return parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)  # 0001-01-01T00:30+01:00 is a valid string but no UTC instant
    except OverflowError:
        raise ValueError(f"date-time out of range once in UTC: {value[:64]!r}") from None
    return parsed


def _check_timestamp(value: str) -> str:
    parse_timestamp(value)
    return value


def _check_id(value: str) -> str:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise ValueError(f"identifier of {size:,} bytes (UTF-8); the limit is {MAX_ID_BYTES:,} bytes")
    return value


Timestamp = Annotated[str, AfterValidator(_check_timestamp), Field(description="ISO-8601 date-time")]
Identifier = Annotated[str, AfterValidator(_check_id), Field(min_length=1)]
JsonObject = dict[str, Any]


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, str_strip_whitespace=False)

    messageId: Identifier | None = Field(default=None, description="Unique id; assigned by collect when absent.")
    userId: Identifier | None = Field(default=None, description="Your database id of the user.")
    anonymousId: Identifier | None = Field(default=None, description="Device or session id before sign-in.")
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    context: JsonObject | None = None
    integrations: JsonObject | None = None
    channel: str | None = None

    @model_validator(mode="after")
    def _needs_an_identity(self) -> _Event:
        if self.userId is None and self.anonymousId is None:
            raise ValueError("userId or anonymousId: at least one is required")
        return self


class TrackEvent(_Event):
    """A user action (`analytics.track`)."""

    type: Literal["track"]
    event: str = Field(min_length=1, description="Name of the action, e.g. `Order Completed`.")
    properties: JsonObject | None = None


class IdentifyEvent(_Event):
    """Who the user is (`analytics.identify`)."""

    type: Literal["identify"]
    traits: JsonObject | None = None


class PageEvent(_Event):
    """A web page view (`analytics.page`)."""

    type: Literal["page"]
    name: str | None = None
    category: str | None = None
    properties: JsonObject | None = None


class ScreenEvent(_Event):
    """A mobile screen view (`analytics.screen`)."""

    type: Literal["screen"]
    name: str | None = None
    category: str | None = None
    properties: JsonObject | None = None


class GroupEvent(_Event):
    """Membership of an account or company (`analytics.group`)."""

    type: Literal["group"]
    groupId: Identifier = Field(description="Id of the group (account, company).")
    traits: JsonObject | None = None


class AliasEvent(_Event):
    """Merge of a previous id into a user id (`analytics.alias`)."""

    type: Literal["alias"]
    previousId: Identifier = Field(description="The id being merged away.")
    userId: Identifier = Field(description="The id it merges into.")


AnyEvent = Annotated[
    TrackEvent | IdentifyEvent | PageEvent | ScreenEvent | GroupEvent | AliasEvent,
    Field(discriminator="type"),
]
EVENT_MODELS: dict[str, type[_Event]] = {
    "track": TrackEvent,
    "identify": IdentifyEvent,
    "page": PageEvent,
    "screen": ScreenEvent,
    "group": GroupEvent,
    "alias": AliasEvent,
}
_ANY_EVENT: TypeAdapter[Any] = TypeAdapter(AnyEvent)


class BatchRequest(BaseModel):
    """Body of ``POST /v1/batch``: events plus context and integrations shared by all of them."""

    model_config = ConfigDict(extra="allow")

    batch: list[JsonObject] = Field(description="The events; each is validated on its own.")
    context: JsonObject | None = Field(default=None, description="Merged into each event's context.")
    integrations: JsonObject | None = Field(default=None, description="Merged into each event's integrations.")
    sentAt: Timestamp | None = Field(default=None, description="Client clock when the request was sent.")
    writeKey: str | None = Field(default=None, description="Write key, when not given as HTTP Basic user name.")


def describe_errors(exc: ValidationError) -> str:
    """One line naming each failing field and the reason, e.g. ``event: Field required``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        # Drop the discriminator tag pydantic puts first for tagged unions.
        if loc and loc[0] in EVENT_TYPES:
            loc = loc[1:]
        msg = err["msg"].removeprefix("Value error, ")
        # A model-level check has no location: its message names the fields itself.
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def is_blank(value: Any) -> bool:
    """Whether an identifier value is blank: an empty or whitespace-only string (treated as absent)."""
    return isinstance(value, str) and (not value or value.isspace())


def validate_event(item: Any, forced_type: str | None = None) -> str | None:
    """Check one event against the spec.

    Blank identifiers (:data:`IDENTIFIER_FIELDS` holding ``""`` or only whitespace) are absent: a valid event
    loses them (``{"userId": "", "anonymousId": "a1"}`` is an anonymous event, and a blank ``messageId`` gets one
    from collect); an invalid one keeps them as sent, and its reason names them.

    Args:
        item: The decoded JSON value of one event.
        forced_type: The type implied by the endpoint (``/v1/track`` → ``track``); it wins over the body.

    Returns:
        ``None`` when valid, else the reason (field and why).
    """
    if not isinstance(item, dict):
        return f"event: expected a JSON object, got {type(item).__name__}"
    if forced_type is not None and item.get("type") != forced_type:
        item["type"] = forced_type
    event_type = item.get("type")
    if event_type not in EVENT_MODELS:
        return f"type: expected one of {', '.join(EVENT_TYPES)}, got {str(event_type)[:64]!r}"
    blank = [name for name in IDENTIFIER_FIELDS if is_blank(item.get(name))]
    present = {k: v for k, v in item.items() if k not in blank} if blank else item
    try:
        _ANY_EVENT.validate_python(present)
    except ValidationError as exc:
        reason = describe_errors(exc)
        return f"{reason} ({', '.join(blank)}: blank, so absent)" if blank else reason
    for name in blank:
        del item[name]
    return unstorable_text(item)


# The string fields ingest stores as text columns (JSON objects such as properties are stored escaped).
_TEXT_FIELDS = ("messageId", "event", "userId", "anonymousId", "groupId", "previousId", "channel", "name", "category",
                "context.ip", "context.userAgent", "context.locale", "context.library.name",
                "context.library.version", *(f"{part}.{f}" for part in ("context.page", "properties")
                                             for f in ("url", "path", "title", "referrer", "search")))
_TEXT_PATHS = tuple((path, tuple(path.split("."))) for path in _TEXT_FIELDS)  # split once, not per event


def unstorable_text(item: dict[str, Any]) -> str | None:
    """The reason an event cannot be stored as is: a text field holding an unpaired surrogate (``"\\ud800"``
    is valid JSON but not Unicode a Parquet string, a hash or DynamoDB can take); ``None`` when it can."""
    for path, parts in _TEXT_PATHS:
        node: Any = item
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return f"{path}: invalid Unicode (unpaired surrogate)"
    return None


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of each event type and of the batch body, for the OpenAPI document."""
    schemas = {name: model.model_json_schema() for name, model in EVENT_MODELS.items()}
    schemas["batch"] = BatchRequest.model_json_schema()
    return schemas
