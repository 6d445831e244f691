"""Explicit Iceberg schemas and partition specs of the lakehouse tables (never inferred).

``events`` holds one row per accepted tracking event, with typed top-level columns for every
field of the Segment spec and JSON text columns for the open-ended parts (properties, traits,
context, integrations, and ``extra`` for unknown top-level fields, so nothing a client sent is
lost). Both tables are partitioned by day of ``received_at``. Duplicates (SDK retries, SQS
redelivery) are tolerated on write and removed by ``message_id`` wherever events are read.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import NestedField, StringType, TimestamptzType


def _s(field_id: int, name: str, doc: str, required: bool = False) -> NestedField:
    return NestedField(field_id, name, StringType(), required=required, doc=doc)


def _t(field_id: int, name: str, doc: str, required: bool = False) -> NestedField:
    return NestedField(field_id, name, TimestamptzType(), required=required, doc=doc)


EVENTS_SCHEMA = Schema(
    _s(1, "message_id", "Unique event id (client's messageId, or derived from the content)", True),
    _s(2, "type", "track | identify | page | screen | group | alias", True),
    _s(3, "event", "Event name (track)"),
    _s(4, "user_id", "userId"),
    _s(5, "anonymous_id", "anonymousId"),
    _s(6, "group_id", "groupId (group)"),
    _s(7, "previous_id", "previousId (alias)"),
    _t(8, "timestamp", "When it happened, corrected for client clock skew", True),
    _t(9, "original_timestamp", "Client clock when it happened"),
    _t(10, "sent_at", "Client clock when it was sent"),
    _t(11, "received_at", "Server clock when collect received it", True),
    _s(12, "source_id", "Source whose write key sent it", True),
    _s(13, "channel", "server | browser | mobile …"),
    _s(14, "ip", "context.ip (the request's address when the client sent none)"),
    _s(15, "request_ip", "Address the request came from"),
    _s(16, "user_agent", "context.userAgent"),
    _s(17, "locale", "context.locale"),
    _s(18, "library_name", "context.library.name"),
    _s(19, "library_version", "context.library.version"),
    _s(20, "name", "Page or screen name"),
    _s(21, "category", "Page or screen category"),
    _s(22, "page_url", "properties.url or context.page.url"),
    _s(23, "page_path", "properties.path or context.page.path"),
    _s(24, "page_title", "properties.title or context.page.title"),
    _s(25, "page_referrer", "properties.referrer or context.page.referrer"),
    _s(26, "page_search", "properties.search or context.page.search"),
    _s(27, "properties", "properties as JSON text"),
    _s(28, "traits", "traits (or context.traits) as JSON text"),
    _s(29, "context", "context as JSON text"),
    _s(30, "integrations", "integrations as JSON text"),
    _s(31, "extra", "Unknown top-level fields as JSON text"),
)

REJECTED_SCHEMA = Schema(
    _s(1, "rejection_id", "Deterministic id of the rejection (dedupe key)", True),
    _t(2, "received_at", "Server clock when collect received it", True),
    _s(3, "source_id", "Source whose write key sent it"),
    _s(4, "reason", "Why it was rejected: the field and the reason", True),
    _s(5, "stage", "collect | ingest", True),
    _s(6, "message_id", "messageId, when the event had one"),
    _s(7, "request_id", "API Gateway request id"),
    _s(8, "raw", "The event exactly as received, as JSON text", True),
)


def _by_day(schema: Schema, column: str) -> PartitionSpec:
    return PartitionSpec(
        PartitionField(source_id=schema.find_field(column).field_id, field_id=1000,
                       transform=DayTransform(), name=f"{column}_day")
    )


@dataclass(frozen=True)
class TableDef:
    """A lakehouse table: its schema and partitioning."""

    name: str
    schema: Schema
    partition_spec: PartitionSpec
    doc: str


TABLES: dict[str, TableDef] = {
    "events": TableDef("events", EVENTS_SCHEMA, _by_day(EVENTS_SCHEMA, "received_at"),
                       "Accepted tracking events, one row per event (deduplicate by message_id)."),
    "rejected_events": TableDef("rejected_events", REJECTED_SCHEMA, _by_day(REJECTED_SCHEMA, "received_at"),
                                "Rejected events with the reason and the raw payload."),
}
