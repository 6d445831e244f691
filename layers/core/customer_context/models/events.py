"""The columns of the ``events`` table, defined once.

Read by the table's Iceberg schema (:data:`customer_context.stores.tables.EVENTS_SCHEMA`, field id = position
+ 1), the rows ingest writes (:data:`customer_context.collect.ingest.EVENT_COLUMNS`), the columns a trait may
name (:data:`NAMEABLE_EVENT_COLUMNS`), what two copies of one messageId must agree on (:data:`EVENT_CONTENT`)
and what the build reads (:data:`BUILD_EVENT_COLUMNS`). A new column is appended here (never inserted: the
position is the Iceberg field id).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventColumn:
    """One column of ``events``: text, or a timestamp (with time zone)."""

    name: str
    doc: str
    timestamp: bool = False
    required: bool = False
    nameable: bool = False  # a trait, a where-condition or an identifier path may name it directly (not JSON)
    content: bool = False  # part of an event's content: what a retry's copy of one messageId must agree on


def _c(name: str, doc: str, **flags: bool) -> EventColumn:
    return EventColumn(name, doc, **flags)


EVENTS: tuple[EventColumn, ...] = (
    _c("message_id", "Unique event id (client's messageId, or derived from the content)", required=True,
       nameable=True),
    _c("type", "track | identify | page | screen | group | alias", required=True, nameable=True, content=True),
    _c("event", "Event name (track)", nameable=True, content=True),
    _c("user_id", "userId", nameable=True, content=True),
    _c("anonymous_id", "anonymousId", nameable=True, content=True),
    _c("group_id", "groupId (group)", nameable=True),
    _c("previous_id", "previousId (alias)", nameable=True, content=True),
    _c("timestamp", "When it happened, corrected for client clock skew", timestamp=True, required=True,
       nameable=True),
    _c("original_timestamp", "Client clock when it happened", timestamp=True),
    _c("sent_at", "Client clock when it was sent", timestamp=True),
    _c("received_at", "Server clock when collect received it", timestamp=True, required=True),
    _c("source_id", "Source whose write key sent it", required=True, nameable=True),
    _c("channel", "server | browser | mobile …", nameable=True),
    _c("ip", "context.ip (the request's address when the client sent none)", nameable=True),
    _c("request_ip", "Address the request came from"),
    _c("user_agent", "context.userAgent", nameable=True),
    _c("locale", "context.locale", nameable=True),
    _c("library_name", "context.library.name", nameable=True),
    _c("library_version", "context.library.version", nameable=True),
    _c("name", "Page or screen name", nameable=True, content=True),
    _c("category", "Page or screen category", nameable=True, content=True),
    _c("page_url", "properties.url or context.page.url", nameable=True, content=True),
    _c("page_path", "properties.path or context.page.path", nameable=True, content=True),
    _c("page_title", "properties.title or context.page.title", nameable=True, content=True),
    _c("page_referrer", "properties.referrer or context.page.referrer", nameable=True),
    _c("page_search", "properties.search or context.page.search", nameable=True),
    _c("properties", "properties as JSON text", content=True),
    _c("traits", "traits (or context.traits) as JSON text", content=True),
    _c("context", "context as JSON text"),
    _c("integrations", "integrations as JSON text"),
    _c("extra", "Unknown top-level fields as JSON text"),
)

#: Every column, in the table's schema order (an ``events`` row as ingest writes it).
EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENTS)
#: Columns a trait may name directly (the others are JSON, or stamped by collect).
NAMEABLE_EVENT_COLUMNS: frozenset[str] = frozenset(c.name for c in EVENTS if c.nameable)
#: An event's content, in schema order: two copies of one messageId that differ here are different events. A
#: retry's copy differs only in what collect stamps (receivedAt, the skew-corrected timestamp, sentAt, the ip).
EVENT_CONTENT: tuple[str, ...] = tuple(c.name for c in EVENTS if c.content)
#: What the build reads of every event (``context`` too when the spec reads it): its content, its key and its times.
BUILD_EVENT_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in EVENTS if c.content or c.name in ("message_id", "timestamp", "received_at"))
