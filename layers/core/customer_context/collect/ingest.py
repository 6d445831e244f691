"""ingest: turn queue messages into rows of ``events`` and ``rejected_events``.

One invocation's good rows are written with **one** append per table (never a commit per
request). Events are validated again (the queue may carry messages from other producers): an event
that cannot become a row is kept in ``rejected_events`` with the reason, never dropped.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from customer_context import envelope, strict_json
from customer_context.errors import PoisonMessage
from customer_context.models import events as events_columns
from customer_context.models.tracking import (
    EVENT_MODELS,
    IDENTIFIER_FIELDS,
    MAX_ID_BYTES,
    Timestamp,
    parse_timestamp,
    validate_event,
)
from customer_context.ports import BlobStore, JsonObject, Row
from customer_context.strict_json import column_text

if TYPE_CHECKING:
    import pyarrow as pa
    from pydantic import BaseModel

    from customer_context.ports import Lakehouse, SuppressionCheck

_MAPPED = frozenset({
    "messageId", "type", "event", "userId", "anonymousId", "groupId", "previousId", "timestamp",
    "originalTimestamp", "sentAt", "receivedAt", "sourceId", "channel", "requestIp", "name", "category",
    "properties", "traits", "context", "integrations",
})
_PAGE_FIELDS = ("url", "path", "title", "referrer", "search")
_PAGE_NAMES = tuple((part, f"page.{part}") for part in _PAGE_FIELDS)

#: The columns of an ``events`` row, in the table's schema order (defined in customer_context/models/events.py).
EVENT_COLUMNS = events_columns.EVENT_COLUMNS

# Where orjson writes a float differently from ``json`` (Python's repr): below 1e-4, e.g. 1e-05 is
# written 0.00001 and 7e-09 as 7e-9. Other floats, and every other plain JSON value, come out the same.
_ORJSON_SMALL_FLOAT = b"0.0000"
_ORJSON_SHORT_EXPONENT = re.compile(rb"[0-9]e-[0-9](?![0-9])")


def _plain_json_text(value: Any) -> str | None:
    """:func:`column_text` of a value decoded by orjson (see ``envelope.Envelope.plain``), by orjson.

    Such values hold only dicts with str keys, lists, str without lone surrogates, 64-bit ints,
    finite floats, bools and None; for those orjson writes the same text as ``json``, except floats
    below 1e-4, which go through :func:`column_text` (as does anything orjson refuses, e.g. nesting
    deeper than it writes).
    """
    if value is None:
        return None
    try:
        out = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return column_text(value)
    if _ORJSON_SMALL_FLOAT in out or (b"e-" in out and _ORJSON_SHORT_EXPONENT.search(out) is not None):
        return column_text(value)
    return out.decode()


def _str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, dict | list) else str(value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name}: invalid Unicode (unpaired surrogate)") from None
    return value


def _plain_str(value: Any, name: str) -> str | None:
    """:func:`_str` of a value decoded by orjson: its strings cannot hold lone surrogates."""
    if value is None or value.__class__ is str:
        return value  # type: ignore[no-any-return]
    return _str(value, name)


def _ts(value: Any, seen: dict[str, datetime]) -> datetime | None:
    """The parsed time of a field's value (``None`` when empty); ``seen`` remembers parsed strings."""
    if not value:
        return None
    if value.__class__ is not str:
        return parse_timestamp(value)  # raises as it always did for a non-string
    parsed = seen.get(value)
    if parsed is None:
        parsed = seen[value] = parse_timestamp(value)
    return parsed


def _shape(model: type[BaseModel]) -> tuple[tuple[str, ...], ...] | None:
    """What :func:`_plainly_valid` checks of one event type, read from its model (models/tracking.py): its
    identifier fields, the required ones, its optional text fields, its object fields and its time fields (any
    other key is an allowed extra). tests/unit/test_ingest_fast_path.py holds the fast path to validate_event."""
    fields = model.model_fields
    ids = tuple(name for name in fields if name in IDENTIFIER_FIELDS)
    required = tuple(name for name in ids if fields[name].is_required())
    texts = tuple(name for name, f in fields.items() if f.annotation == (str | None))
    objects = tuple(name for name, f in fields.items() if f.annotation == (dict[str, Any] | None))
    times = tuple(name for name, f in fields.items() if f.annotation == Timestamp | None)
    if set(fields) - {*ids, *texts, *objects, *times, "type", "event"}:
        return None  # a field of another kind: the fast path does not know it, every event goes to validate_event
    return ids, required, texts, objects, times


# per type: (identifier fields, required identifiers, optional text fields, object fields, time fields)
_SHAPES = {kind: shape for kind, model in EVENT_MODELS.items() if (shape := _shape(model)) is not None}


def _plainly_valid(event: Any, seen: dict[str, datetime]) -> bool:
    """True only if :func:`validate_event` finds nothing wrong with ``event``, a plain JSON value.

    It checks the usual shape (strings where text is expected, no number to coerce, no blank identifier,
    objects or null, times that parse) and answers False for anything else, which then goes through
    ``validate_event`` (its pydantic model costs more than the rest of the row). Unicode needs no
    check here: plain values hold no lone surrogates.
    """
    if event.__class__ is not dict:
        return False
    kind = event.get("type")
    shape = _SHAPES.get(kind) if kind.__class__ is str else None
    if shape is None:
        return False
    ids, required, texts, objects, times = shape
    get = event.get
    for name in IDENTIFIER_FIELDS:  # a blank one, declared by the type or not, is removed by validate_event
        value = get(name)
        if value.__class__ is str and (not value or value.isspace()):
            return False
    for name in ids:
        value = get(name)
        if value is not None and (value.__class__ is not str or len(value) > MAX_ID_BYTES
                                  or not value.isascii()):  # the byte limit of other text is checked by pydantic
            return False
    if get("userId") is None and (kind == "alias" or get("anonymousId") is None):
        return False
    for name in required:
        if get(name) is None:
            return False
    if kind == "track":
        event_name = get("event")
        if event_name.__class__ is not str or not event_name:
            return False
    for name in texts:
        value = get(name)
        if value is not None and value.__class__ is not str:
            return False
    for name in objects:
        value = get(name)
        if value is not None and value.__class__ is not dict:
            return False
    for name in times:
        value = get(name)
        if value is not None:
            if value.__class__ is not str or not value:
                return False
            try:
                _ts(value, seen)
            except Exception:  # noqa: BLE001 - validate_event then gives the reason (or raises) as it does
                return False
    return True


def _event_values(event: dict[str, Any], text: Callable[[Any, str], str | None],
                  dump: Callable[[Any], str | None], seen: dict[str, datetime], plain: bool = False) -> tuple[Any, ...]:
    """An ``events`` row as a tuple in :data:`EVENT_COLUMNS` order (see :func:`event_to_row`).

    Fields are checked in a fixed order, so the first problem found (the rejection's reason) does
    not depend on ``text`` and ``dump``, which must behave as :func:`_str` and :func:`column_text`.
    ``plain``: the event was decoded by orjson (see ``envelope.Envelope.plain``).
    """
    if not (plain and _plainly_valid(event, seen)):
        # not decoded by orjson: json may have read NaN, Infinity or 1e400 as a non-finite float
        reason = validate_event(event) or strict_json.non_finite(event)
        if reason is not None:
            raise ValueError(reason)
    get = event.get
    for required in ("receivedAt", "sourceId"):
        if not get(required):
            raise ValueError(f"{required}: missing (not stamped by collect)")
    if get("messageId") is None:  # valid per the spec, but collect always sets one and the column needs it
        raise ValueError("messageId: missing (not stamped by collect)")
    ctx = get("context")
    ctx = ctx if isinstance(ctx, dict) else {}
    props = get("properties")
    props = props if isinstance(props, dict) else {}
    page = ctx.get("page")
    page = page if isinstance(page, dict) else {}
    library = ctx.get("library")
    library = library if isinstance(library, dict) else {}
    kind = event["type"]
    traits = get("traits")
    if traits is None and kind in ("identify", "group"):
        traits = ctx.get("traits")  # the RudderStack SDKs put identify traits in context.traits
    extra = None if event.keys() <= _MAPPED else {k: v for k, v in event.items() if k not in _MAPPED}

    message_id = text(event["messageId"], "messageId")
    name_of_event = text(get("event"), "event")
    user_id = text(get("userId"), "userId")
    anonymous_id = text(get("anonymousId"), "anonymousId")
    group_id = text(get("groupId"), "groupId")
    previous_id = text(get("previousId"), "previousId")
    timestamp = _ts(get("timestamp"), seen) or _ts(get("receivedAt"), seen)
    original_timestamp = _ts(get("originalTimestamp"), seen)
    sent_at = _ts(get("sentAt"), seen)
    received_at = _ts(get("receivedAt"), seen)
    source_id = text(event["sourceId"], "sourceId")
    channel = text(get("channel"), "channel")
    ip = text(ctx.get("ip"), "context.ip")
    request_ip = text(get("requestIp"), "requestIp")
    user_agent = text(ctx.get("userAgent"), "context.userAgent")
    locale = text(ctx.get("locale"), "context.locale")
    library_name = text(library.get("name"), "context.library.name")
    library_version = text(library.get("version"), "context.library.version")
    name = text(get("name"), "name")
    category = text(get("category"), "category")
    properties = dump(get("properties"))
    traits_text = dump(traits)
    context = dump(get("context"))
    integrations = dump(get("integrations"))
    extra_text = dump(extra) if extra else None
    is_page = kind == "page"
    pages = [text(props.get(part) if is_page and part in props else page.get(part), label)
             for part, label in _PAGE_NAMES]
    return (message_id, kind, name_of_event, user_id, anonymous_id, group_id, previous_id, timestamp,
            original_timestamp, sent_at, received_at, source_id, channel, ip, request_ip, user_agent, locale,
            library_name, library_version, name, category, *pages, properties, traits_text, context,
            integrations, extra_text)


def event_to_row(event: JsonObject) -> Row:
    """Map a stamped Segment-spec event to an ``events`` row.

    Raises:
        ValueError: The event cannot be stored; the message names the field.
    """
    return dict(zip(EVENT_COLUMNS, _event_values(event, _str, column_text, {}), strict=True))


def rejection_row(rec: JsonObject, *, stage: str | None = None, reason: str | None = None) -> Row:
    """A ``rejected_events`` row from a rejection record (see :mod:`envelope`)."""
    raw = rec.get("raw")
    raw_text = raw if isinstance(raw, str) else column_text(raw) or "null"
    raw_text = (column_text(json.loads(raw_text)) or "null") if not raw_text.isascii() else raw_text
    reason = reason or str(rec.get("reason") or "unknown")
    stage = stage or str(rec.get("stage") or "collect")
    received = rec.get("receivedAt")
    try:
        received_at = parse_timestamp(received) if isinstance(received, str) else None
    except ValueError:
        received_at = None
    if received_at is None:
        from datetime import UTC, datetime

        received_at = datetime.now(UTC)
    source_id = rec.get("sourceId")
    key = f"{source_id}|{stage}|{reason}|{raw_text}".encode("utf-8", "surrogatepass")
    message_id = rec.get("messageId")
    return {
        "rejection_id": hashlib.sha256(key).hexdigest()[:32],
        "received_at": received_at,
        "source_id": str(source_id) if source_id is not None else None,
        "reason": reason,
        "stage": stage,
        "message_id": column_text(message_id) if isinstance(message_id, dict | list) else (
            str(message_id) if message_id is not None else None),
        "request_id": str(rec["requestId"]) if rec.get("requestId") else None,
        "raw": raw_text,
    }


@dataclass
class Rows:
    """Rows gathered from the messages of one invocation."""

    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)


def audit_row(rec: JsonObject) -> Row:
    """A serving-audit record as a ``serving_audit`` row."""
    return {
        "audit_id": str(rec["audit_id"]), "at": parse_timestamp(str(rec["at"])), "consumer": str(rec["consumer"]),
        "via": str(rec["via"]), "profile_id": rec.get("profile_id"), "identifier_type": str(rec["identifier_type"]),
        "identifier_value": str(rec["identifier_value"]), "sections": json.dumps(rec.get("sections") or []),
        "fields": json.dumps(rec.get("fields") or []), "snapshot_version": rec.get("snapshot_version"),
        "status": int(rec["status"]),
    }


def _suppressed_out(env: envelope.Envelope, keep: Callable[[list[Any]], list[bool]]) -> None:
    """Leave out of a message what a suppression filed after collect queued it covers (events, and rejected
    events by their raw JSON); kept events lose suppressed values (``Suppressions.apply``)."""
    env.events = [e for e, kept in zip(env.events, keep(env.events), strict=True) if kept]
    raws = []
    for rec in env.rejected:
        try:
            raws.append(json.loads(rec["raw"]) if isinstance(rec, dict) and isinstance(rec.get("raw"), str) else None)
        except ValueError:
            raws.append(None)
    verdict = keep([r if isinstance(r, dict) else {} for r in raws])
    rejected = []
    for rec, raw, kept in zip(env.rejected, raws, verdict, strict=True):
        if kept:
            if isinstance(raw, dict):
                rec["raw"] = envelope.dumps(raw)
            rejected.append(rec)
    env.rejected = rejected


def _message_rows(body: str | bytes, spool: BlobStore | None,
                  keep: Callable[[list[Any]], list[bool]] | None = None) -> tuple[list[tuple[Any, ...]], Rows]:
    """One queue message as ``events`` rows (tuples in :data:`EVENT_COLUMNS` order) and the other rows.

    Raises:
        PoisonMessage: The message is not our format (it goes back to the queue, then the DLQ).
    """
    env = envelope.loads(body)
    if env.spooled is not None:
        if spool is None:
            raise PoisonMessage(f"message points at spooled object {env.spooled!r} but no spool bucket is configured")
        env = envelope.loads(spool.get(env.spooled))
        if env.spooled is not None:
            raise PoisonMessage("a spooled object must not point at another one")
    if keep is not None and (env.events or env.rejected):
        _suppressed_out(env, keep)
    # orjson-decoded messages hold plain JSON only: their strings need no Unicode check and orjson
    # writes their JSON columns (same text as json, see _plain_json_text)
    text, dump = (_plain_str, _plain_json_text) if env.plain else (_str, column_text)
    seen: dict[str, datetime] = {}
    values: list[tuple[Any, ...]] = []
    rows = Rows()
    for event in env.events:
        try:
            values.append(_event_values(event, text, dump, seen, env.plain))
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            ctx = event if isinstance(event, dict) else {}
            rows.rejected.append(rejection_row(
                {"raw": column_text(event), "receivedAt": ctx.get("receivedAt"), "sourceId": ctx.get("sourceId"),
                 "messageId": ctx.get("messageId")},
                stage="ingest", reason=str(exc) or type(exc).__name__))
    for rec in env.rejected:
        if not isinstance(rec, dict):
            raise PoisonMessage("rejected: expected objects")
        rows.rejected.append(rejection_row(rec))
    for rec in env.audit:
        try:
            rows.audit.append(audit_row(rec))
        except (ValueError, TypeError, KeyError) as exc:
            raise PoisonMessage(f"audit: malformed record ({exc})") from None
    return values, rows


def rows_from_message(body: str | bytes, spool: BlobStore | None) -> Rows:
    """Decode one queue message into rows.

    Raises:
        PoisonMessage: The message is not our format (it goes back to the queue, then the DLQ).
    """
    values, rows = _message_rows(body, spool)
    rows.events = [dict(zip(EVENT_COLUMNS, v, strict=True)) for v in values]
    return rows


def _events_table(values: list[tuple[Any, ...]], schema: Any) -> Any:
    """``events`` rows given as tuples, as an Arrow table, no row dicts: Arrow reads the tuples as one struct
    array when the table's columns are :data:`EVENT_COLUMNS` in that order (faster than transposing them into
    columns in Python first, which cost as much as the conversion); else one array per column."""
    import pyarrow as pa

    if [f.name for f in schema] == list(EVENT_COLUMNS):
        return pa.Table.from_struct_array(pa.array(values, type=pa.struct(list(schema)))).cast(schema)
    columns = list(zip(*values, strict=True)) if values else [()] * len(EVENT_COLUMNS)
    position = {name: i for i, name in enumerate(EVENT_COLUMNS)}
    return pa.Table.from_arrays([pa.array(columns[position[f.name]], type=f.type) for f in schema], schema=schema)


def _pylist_tables(lakehouse: Lakehouse, named: tuple[tuple[str, list[dict[str, Any]]], ...]) -> list[tuple[str, Any]]:
    """The Arrow table of each named list of row dicts that has rows (in the table's schema)."""
    import pyarrow as pa

    return [(name, pa.Table.from_pylist(items, schema=lakehouse.arrow_schema(name))) for name, items in named if items]


def _append(lakehouse: Lakehouse, tables: list[tuple[str, Any]], writer: str) -> dict[str, int]:
    written: dict[str, int] = {}
    for name, data in tables:
        lakehouse.append(name, data, properties={"writer": writer, "rows": str(data.num_rows)})
        written[name] = data.num_rows
    return written


def write_rows(lakehouse: Lakehouse, rows: Rows, *, writer: str = "ingest") -> dict[str, int]:
    """Append the rows: one commit per table that has rows.

    Returns:
        Rows written per table.
    """
    tables = _pylist_tables(lakehouse, (("events", rows.events), ("rejected_events", rows.rejected),
                                        ("serving_audit", rows.audit)))
    return _append(lakehouse, tables, writer)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while one invocation's batch is decoded and written.

    The batch makes hundreds of thousands of short-lived containers (decoded events, row tuples, Arrow
    inputs), none of them in a cycle: reference counting frees them all, while the collector, triggered by
    the allocations, walked them again and again (about a fifth of ingest's CPU, bench/ingest.py). A cycle
    made meanwhile is collected after the batch, when the collector runs again as it did before.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class IngestBatch:
    """The rows of one ingest invocation: messages are added one by one, then committed once.

    Events are kept as tuples and become Arrow columns directly at commit (no per-row dicts).
    """

    def __init__(self, spool: BlobStore | None, suppressions: SuppressionCheck | None = None) -> None:
        self.spool = spool
        # events collect queued before a suppression was filed are checked again (one GetItem per batch)
        self._keep = suppressions.queued_before() if suppressions is not None else None
        self.events: list[tuple[Any, ...]] = []
        self.others = Rows()  # rejected and audit rows (events stay in ``events``)
        self.messages = 0

    def add(self, body: str | bytes) -> None:
        """Decode one message; raises :class:`PoisonMessage` for the batch processor to report."""
        values, rows = _message_rows(body, self.spool, self._keep)  # all or nothing: a poison message adds no row
        self.events.extend(values)
        self.others.rejected.extend(rows.rejected)
        self.others.audit.extend(rows.audit)
        self.messages += 1

    def tables(self, lakehouse: Lakehouse) -> list[tuple[str, pa.Table]]:
        """The Arrow table of each table that has rows, in commit order."""
        events = [("events", _events_table(self.events, lakehouse.arrow_schema("events")))] if self.events else []
        return events + _pylist_tables(lakehouse, (("rejected_events", self.others.rejected),
                                                   ("serving_audit", self.others.audit)))

    def commit(self, lakehouse: Lakehouse) -> dict[str, int]:
        """Append everything gathered: one commit per table. Logs and emits metrics."""
        from aws_lambda_powertools.metrics import MetricUnit

        from customer_context.observability import logger, metrics

        written = _append(lakehouse, self.tables(lakehouse), "ingest")
        metrics.add_metric(name="EventsIngested", unit=MetricUnit.Count, value=written.get("events", 0))
        metrics.add_metric(name="EventsRejectedIngested", unit=MetricUnit.Count,
                           value=written.get("rejected_events", 0))
        logger.info("ingested", extra={"messages": self.messages, **written})
        return written
