"""ingest: turn queue messages into rows of ``events`` and ``rejected_events``.

One invocation's good rows are written with **one** append per table (never a commit per
request). Events are validated again (the queue may carry messages from other producers): an event
that cannot become a row is kept in ``rejected_events`` with the reason, never dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from customer_context.collect import envelope
from customer_context.errors import PoisonMessage
from customer_context.models.tracking import parse_timestamp, validate_event
from customer_context.stores.blobs import BlobStore

_MAPPED = {
    "messageId", "type", "event", "userId", "anonymousId", "groupId", "previousId", "timestamp",
    "originalTimestamp", "sentAt", "receivedAt", "sourceId", "channel", "requestIp", "name", "category",
    "properties", "traits", "context", "integrations",
}
_PAGE_FIELDS = ("url", "path", "title", "referrer", "search")


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep them escaped, still valid JSON
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)
    return text


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


def event_to_row(event: dict[str, Any]) -> dict[str, Any]:
    """Map a stamped Segment-spec event to an ``events`` row.

    Raises:
        ValueError: The event cannot be stored; the message names the field.
    """
    reason = validate_event(event)
    if reason is not None:
        raise ValueError(reason)
    for required in ("receivedAt", "sourceId"):
        if not event.get(required):
            raise ValueError(f"{required}: missing (not stamped by collect)")
    ctx = event.get("context") if isinstance(event.get("context"), dict) else {}
    props = event.get("properties") if isinstance(event.get("properties"), dict) else {}
    page = ctx.get("page") if isinstance(ctx.get("page"), dict) else {}
    library = ctx.get("library") if isinstance(ctx.get("library"), dict) else {}
    is_page = event["type"] == "page"
    traits = event.get("traits")
    if traits is None and event["type"] in ("identify", "group"):
        traits = ctx.get("traits")  # the RudderStack SDKs put identify traits in context.traits
    extra = {k: v for k, v in event.items() if k not in _MAPPED}

    def ts(name: str) -> Any:
        value = event.get(name)
        return parse_timestamp(value) if value else None

    row: dict[str, Any] = {
        "message_id": _str(event["messageId"], "messageId"),
        "type": event["type"],
        "event": _str(event.get("event"), "event"),
        "user_id": _str(event.get("userId"), "userId"),
        "anonymous_id": _str(event.get("anonymousId"), "anonymousId"),
        "group_id": _str(event.get("groupId"), "groupId"),
        "previous_id": _str(event.get("previousId"), "previousId"),
        "timestamp": ts("timestamp") or ts("receivedAt"),
        "original_timestamp": ts("originalTimestamp"),
        "sent_at": ts("sentAt"),
        "received_at": ts("receivedAt"),
        "source_id": _str(event["sourceId"], "sourceId"),
        "channel": _str(event.get("channel"), "channel"),
        "ip": _str(ctx.get("ip"), "context.ip"),
        "request_ip": _str(event.get("requestIp"), "requestIp"),
        "user_agent": _str(ctx.get("userAgent"), "context.userAgent"),
        "locale": _str(ctx.get("locale"), "context.locale"),
        "library_name": _str(library.get("name"), "context.library.name"),
        "library_version": _str(library.get("version"), "context.library.version"),
        "name": _str(event.get("name"), "name"),
        "category": _str(event.get("category"), "category"),
        "properties": _json_text(event.get("properties")),
        "traits": _json_text(traits),
        "context": _json_text(event.get("context")),
        "integrations": _json_text(event.get("integrations")),
        "extra": _json_text(extra) if extra else None,
    }
    for part in _PAGE_FIELDS:
        value = props.get(part) if is_page and part in props else page.get(part)
        row[f"page_{part}"] = _str(value, f"page.{part}")
    return row


def rejection_row(rec: dict[str, Any], *, stage: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """A ``rejected_events`` row from a rejection record (see :mod:`envelope`)."""
    raw = rec.get("raw")
    raw_text = raw if isinstance(raw, str) else _json_text(raw) or "null"
    raw_text = _json_text(json.loads(raw_text)) if not raw_text.isascii() else raw_text
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
        "message_id": _json_text(message_id) if isinstance(message_id, dict | list) else (
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


def audit_row(rec: dict[str, Any]) -> dict[str, Any]:
    """A serving-audit record as a ``serving_audit`` row."""
    return {
        "audit_id": str(rec["audit_id"]), "at": parse_timestamp(str(rec["at"])), "consumer": str(rec["consumer"]),
        "via": str(rec["via"]), "profile_id": rec.get("profile_id"), "identifier_type": str(rec["identifier_type"]),
        "identifier_value": str(rec["identifier_value"]), "sections": json.dumps(rec.get("sections") or []),
        "fields": json.dumps(rec.get("fields") or []), "snapshot_version": rec.get("snapshot_version"),
        "status": int(rec["status"]),
    }


def rows_from_message(body: str, spool: BlobStore | None) -> Rows:
    """Decode one queue message into rows.

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
    rows = Rows()
    for event in env.events:
        try:
            rows.events.append(event_to_row(event))
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            ctx = event if isinstance(event, dict) else {}
            rows.rejected.append(rejection_row(
                {"raw": _json_text(event), "receivedAt": ctx.get("receivedAt"), "sourceId": ctx.get("sourceId"),
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
    return rows


def write_rows(lakehouse: Any, rows: Rows, *, writer: str = "ingest") -> dict[str, int]:
    """Append the rows: one commit per table that has rows.

    Returns:
        Rows written per table.
    """
    import pyarrow as pa

    written: dict[str, int] = {}
    for name, items in (("events", rows.events), ("rejected_events", rows.rejected), ("serving_audit", rows.audit)):
        if not items:
            continue
        data = pa.Table.from_pylist(items, schema=lakehouse.arrow_schema(name))
        lakehouse.append(name, data, properties={"writer": writer, "rows": str(len(items))})
        written[name] = len(items)
    return written


class IngestBatch:
    """The rows of one ingest invocation: messages are added one by one, then committed once."""

    def __init__(self, spool: BlobStore | None) -> None:
        self.spool = spool
        self.rows = Rows()
        self.messages = 0

    def add(self, body: str) -> None:
        """Decode one message; raises :class:`PoisonMessage` for the batch processor to report."""
        rows = rows_from_message(body, self.spool)
        self.rows.events.extend(rows.events)
        self.rows.rejected.extend(rows.rejected)
        self.rows.audit.extend(rows.audit)
        self.messages += 1

    def commit(self, lakehouse: Any) -> dict[str, int]:
        """Append everything gathered: one commit per table. Logs and emits metrics."""
        from aws_lambda_powertools.metrics import MetricUnit
        from customer_context.observability import logger, metrics

        written = write_rows(lakehouse, self.rows)
        metrics.add_metric(name="EventsIngested", unit=MetricUnit.Count, value=written.get("events", 0))
        metrics.add_metric(name="EventsRejectedIngested", unit=MetricUnit.Count,
                           value=written.get("rejected_events", 0))
        logger.info("ingested", extra={"messages": self.messages, **written})
        return written
