"""Explicit Iceberg schemas and partition specs of the lakehouse tables (never inferred).

``events`` holds one row per accepted tracking event, with typed top-level columns for every
field of the Segment spec and JSON text columns for the open-ended parts (properties, traits,
context, integrations, and ``extra`` for unknown top-level fields, so nothing a client sent is
lost). Both tables are partitioned by day of ``received_at``. Duplicates (SDK retries, SQS
redelivery) are tolerated on write and removed by ``message_id`` wherever events are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

from customer_context.models.events import BUILD_EVENT_COLUMNS, EVENTS


def _s(field_id: int, name: str, doc: str, required: bool = False) -> NestedField:
    return NestedField(field_id, name, StringType(), required=required, doc=doc)


def _t(field_id: int, name: str, doc: str, required: bool = False) -> NestedField:
    return NestedField(field_id, name, TimestamptzType(), required=required, doc=doc)


# the columns are defined in customer_context/models/events.py (field id = position + 1)
EVENTS_SCHEMA = Schema(*(
    (_t if column.timestamp else _s)(position, column.name, column.doc, column.required)
    for position, column in enumerate(EVENTS, 1)
))

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


IDENTITY_GRAPH_SCHEMA = Schema(
    _s(1, "identifier_type", "user_id, email, anonymous_id …", True),
    _s(2, "identifier_value", "The normalised identifier", True),
    _s(3, "profile_id", "The profile it belongs to (stable across builds)", True),
    _s(4, "joined_via", "Why it is in this profile: the edge (source, other identifier, time) that joined it", True),
    _t(5, "profile_first_seen", "When the profile was first seen", True),
    _t(6, "built_at", "Build that produced this row", True),
    # added after the first release (read as NULL until a build evolves the table): an incremental build resolves
    # new edges against the graph, and orders them by their ends' first sighting as a build over all events does
    _t(7, "first_seen", "When the identifier itself was first seen"),
)
IDENTITY_REJECTED_SCHEMA = Schema(
    _s(1, "a_type", "Identifier type of one end", True),
    _s(2, "a_value", "Identifier value of one end", True),
    _s(3, "b_type", "Identifier type of the other end", True),
    _s(4, "b_value", "Identifier value of the other end", True),
    _t(5, "first_seen", "When the edge was first observed", True),
    _s(6, "source", "Where the edge came from (event:identify, record:crm_contacts …)", True),
    _s(7, "reason", "Why it was not applied (merge limit, blocked value …)", True),
    _t(8, "built_at", "Build that produced this row", True),
)
SNAPSHOTS_SCHEMA = Schema(
    _s(1, "profile_id", "Profile", True),
    NestedField(2, "version", LongType(), required=True, doc="Snapshot version of the profile (1, 2, …)"),
    _s(3, "content_hash", "md5 of the content (without build times)", True),
    _t(4, "built_at", "When the build ran", True),
    _t(5, "data_as_of", "Newest event received before the build"),
    _s(6, "doc", "The snapshot document as served (JSON)", True),
)
PROFILE_STATE_SCHEMA = Schema(
    _s(1, "profile_id", "Profile", True),
    NestedField(2, "version", LongType(), required=True, doc="Latest landed version"),
    _s(3, "content_hash", "Hash of the latest landed content", True),
    _t(4, "built_at", "Build that landed it", True),
    # added after the first release: a table without them is evolved by the next build, read as NULL until then
    _s(5, "field_hashes", "JSON: each field's path → a short hash of its value (what the next build compares)"),
    _s(6, "changed_at", "JSON: each field's path → the build time its value last changed (null: unknown, the "
                        "state was written before fields were tracked); landed with the snapshot"),
)

def _build_rows_schema() -> Schema:
    """``build_rows``: the events a build attributed, as it read them (see :data:`TABLES`)."""
    kept = [c for c in EVENTS if c.name in BUILD_EVENT_COLUMNS or c.name == "context"]
    fields = [(_t if c.timestamp else _s)(i, c.name, c.doc, c.required) for i, c in enumerate(kept, 1)]
    n = len(fields)
    fields.append(_s(n + 1, "time_flag", "Why its time was not trusted (future, before_earliest): timestamp is then "
                                         "received_at"))
    identifier = StructType(NestedField(n + 4, "p", IntegerType(), required=False, doc="Priority of the type"),
                            NestedField(n + 5, "t", StringType(), required=False, doc="Identifier type"),
                            NestedField(n + 6, "v", StringType(), required=False, doc="Normalised value"))
    fields.append(NestedField(n + 2, "ids", ListType(n + 3, identifier, element_required=False), required=False,
                              doc="The event's identifiers, most important first"))
    return Schema(*fields)


BUILD_ROWS_SCHEMA = _build_rows_schema()
SCORE_MODELS_SCHEMA = Schema(
    _t(1, "fitted_at", "When the parameters were fitted", True),
    _s(2, "model", "Fitted parameters and fit summary as JSON (bgnbd, gamma_gamma, buyers …)", True),
)
REJECTED_RECORDS_SCHEMA = Schema(
    _s(1, "table_name", "Record table the row was meant for", True),
    _s(2, "source_key", "Object key of the dropped file", True),
    NestedField(3, "row_number", LongType(), required=True,
                doc="1-based physical line (CSV, JSON Lines) or row (Parquet); 0: the whole file was refused"),
    _s(4, "reason", "Why it was rejected, one line: the line or row, the column and the reason", True),
    _s(5, "raw", "The row as read, as JSON text (null: withheld, or a refused file)", True),
    _t(6, "received_at", "When the file was loaded", True),
)

_ICEBERG_TYPES = {"string": StringType, "integer": LongType, "double": DoubleType, "boolean": BooleanType,
                  "timestamp": TimestamptzType, "date": DateType}


def column_kind(field_type: object) -> str:
    """The spec's name of a record column's Iceberg type (``long`` → ``integer``), else the Iceberg name."""
    return next((kind for kind, cls in _ICEBERG_TYPES.items() if type(field_type) is cls), str(field_type))


LINEAGE_COLUMNS = ("_source_key", "_loaded_at")
"""Columns every record table has after its declared ones (names no declared column may take)."""


def record_table_def(name: str, columns: Mapping[str, str], primary_key: list[str], description: str) -> TableDef:
    """The Iceberg definition of a record table declared in the spec (plus lineage columns).

    A loaded table may hold its columns in another order (columns added later come after the
    lineage columns): read and write it by name.
    """
    fields = [
        NestedField(i + 1, column, _ICEBERG_TYPES[kind](), required=column in primary_key)
        for i, (column, kind) in enumerate(columns.items())
    ]
    n = len(fields)
    source_key, loaded_at = LINEAGE_COLUMNS
    fields.append(NestedField(n + 1, source_key, StringType(), required=True, doc="File the row came from"))
    fields.append(NestedField(n + 2, loaded_at, TimestamptzType(), required=True, doc="When it was loaded"))
    schema = Schema(*fields, identifier_field_ids=[f.field_id for f in fields if f.name in primary_key])
    return TableDef(name, schema, PartitionSpec(), description)


SERVING_AUDIT_SCHEMA = Schema(
    _s(1, "audit_id", "Unique id of the record", True),
    _t(2, "at", "When the context was served", True),
    _s(3, "consumer", "Consumer whose key read it", True),
    _s(4, "via", "fetch | batch | tool:<name> (MCP) | query:<name>", True),
    _s(5, "profile_id", "Profile served (null: known from live events only, or not found)"),
    _s(6, "identifier_type", "Identifier the caller used", True),
    _s(7, "identifier_value", "The PII policy's keyed token of the value looked up (a profile_id as it is; empty "
       "without a hash key): never the value itself", True),
    _s(8, "sections", "Whole sections returned, as a JSON array (names only, never values)"),
    _s(9, "fields", "Single fields returned, as a JSON array (paths only, never values)"),
    NestedField(10, "snapshot_version", LongType(), required=False, doc="Version of the snapshot served"),
    NestedField(11, "status", LongType(), required=True, doc="HTTP status of the answer"),
)

TABLES: dict[str, TableDef] = {
    "events": TableDef("events", EVENTS_SCHEMA, _by_day(EVENTS_SCHEMA, "received_at"),
                       "Accepted tracking events, one row per event (deduplicate by message_id)."),
    "rejected_events": TableDef("rejected_events", REJECTED_SCHEMA, _by_day(REJECTED_SCHEMA, "received_at"),
                                "Rejected events with the reason and the raw payload."),
    "identity_graph": TableDef("identity_graph", IDENTITY_GRAPH_SCHEMA, PartitionSpec(),
                               "Identifier → profile, with why it joined (rewritten by each build)."),
    "identity_rejected_edges": TableDef("identity_rejected_edges", IDENTITY_REJECTED_SCHEMA, PartitionSpec(),
                                        "Edges not applied by the last build, with the reason."),
    "context_snapshots": TableDef("context_snapshots", SNAPSHOTS_SCHEMA, _by_day(SNAPSHOTS_SCHEMA, "built_at"),
                                  "Every snapshot version landed: what the AI could know, and when."),
    "profile_state": TableDef("profile_state", PROFILE_STATE_SCHEMA, PartitionSpec(),
                              "Latest landed version and hash per profile (rewritten by each build)."),
    "build_rows": TableDef("build_rows", BUILD_ROWS_SCHEMA, PartitionSpec(),
                           "The build's own copy of the events it attributed: deduplicated, times checked, the "
                           "columns builds read and each event's normalised identifiers. An incremental build "
                           "reads from it the earlier events of the customers new events touch (rewritten by "
                           "each full build, appended to by incremental ones)."),
    "score_models": TableDef("score_models", SCORE_MODELS_SCHEMA, PartitionSpec(),
                             "Every fit of the BG/NBD and Gamma-Gamma parameters."),
    "serving_audit": TableDef("serving_audit", SERVING_AUDIT_SCHEMA, _by_day(SERVING_AUDIT_SCHEMA, "at"),
                              "Who was served what about which customer, and when (never the values)"),
    "rejected_records": TableDef("rejected_records", REJECTED_RECORDS_SCHEMA,
                                 _by_day(REJECTED_RECORDS_SCHEMA, "received_at"),
                                 "Record rows and files rejected on load, with the line or row and the reason."),
}
