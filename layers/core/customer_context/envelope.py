"""The queue message format between collect and ingest, and how events are packed into it.

A message body is a JSON object::

    {"v": 1, "events": [<stamped event>, ...], "rejected": [<rejection>, ...]}

or, for an event too large for one queue message (claim-check pattern)::

    {"v": 1, "spooled": "<object key>"}

where the object holds a body of the first form. Events keep the Segment spec's camelCase shape
(plus ``receivedAt``, ``sourceId``, ``requestIp``), so anything that reads Segment JSON reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from customer_context import strict_json
from customer_context.errors import PoisonMessage

VERSION = 1
_HEAD = '{"v":1,"events":['
_MIDDLE = '],"rejected":['
_TAIL = "]}"
OVERHEAD = len(_HEAD) + len(_MIDDLE) + len(_TAIL)


@dataclass
class Envelope:
    """A decoded queue message."""

    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    spooled: str | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)
    #: Decoded by orjson: only plain JSON values (no NaN/Infinity, no lone surrogates, every integer
    #: within 64 bits), which orjson serialises back exactly as ``json`` would (see ``ingest``).
    plain: bool = False


def dumps(value: Any) -> str:
    """Compact ASCII JSON, as sent on the queue (SQS refuses control characters and lone surrogates;
    escaped, they pass, and decoding restores them). Strict: a non-finite number (only a rejected
    event's raw value can hold one) is written as null."""
    return strict_json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)


def body_of(events: list[str], rejected: list[str]) -> str:
    """Join already-serialised events and rejections into one message body."""
    return _HEAD + ",".join(events) + _MIDDLE + ",".join(rejected) + _TAIL


def pack(events: list[str], rejected: list[str], max_bytes: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Pack serialised items into as few message bodies of at most ``max_bytes`` as a greedy pass allows.

    Args:
        events: Serialised accepted events.
        rejected: Serialised rejections.
        max_bytes: Largest body (UTF-8 bytes).

    Returns:
        The bodies, and the items too large for any body as ``(kind, item)`` with kind
        ``"events"`` or ``"rejected"``: those go through the spool.
    """
    bodies: list[str] = []
    oversized: list[tuple[str, str]] = []
    cur: dict[str, list[str]] = {"events": [], "rejected": []}
    size = OVERHEAD
    for kind, items in (("events", events), ("rejected", rejected)):
        for item in items:
            n = len(item.encode()) + 1  # the comma
            if OVERHEAD + n > max_bytes:
                oversized.append((kind, item))
                continue
            if size + n > max_bytes:
                bodies.append(body_of(cur["events"], cur["rejected"]))
                cur = {"events": [], "rejected": []}
                size = OVERHEAD
            cur[kind].append(item)
            size += n
    if cur["events"] or cur["rejected"]:
        bodies.append(body_of(cur["events"], cur["rejected"]))
    return bodies, oversized


def spooled_body(key: str) -> str:
    """The message body pointing at a spooled object."""
    return dumps({"v": VERSION, "spooled": key})


def loads(body: str | bytes) -> Envelope:
    """Decode a message body.

    Raises:
        PoisonMessage: The body is not an envelope of a known version.
    """
    data, plain = _decode(body)
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise PoisonMessage("message body is not a customer-context envelope (missing or unknown 'v')")
    spooled = data.get("spooled")
    if spooled is not None:
        if not isinstance(spooled, str):
            raise PoisonMessage("spooled: expected an object key")
        return Envelope(spooled=spooled)
    events, rejected, audit = data.get("events", []), data.get("rejected", []), data.get("audit", [])
    if not isinstance(events, list) or not isinstance(rejected, list) or not isinstance(audit, list):
        raise PoisonMessage("events, rejected and audit must be arrays")
    return Envelope(events=events, rejected=rejected, audit=audit, plain=plain)


def _decode(body: str | bytes) -> tuple[Any, bool]:
    """The decoded body, and whether orjson decoded it (:func:`customer_context.strict_json.decode`)."""
    try:
        return strict_json.decode(body)
    except (ValueError, RecursionError) as exc:
        raise PoisonMessage(f"message body is not JSON: {exc}") from None


def audit_body(records: list[dict[str, Any]]) -> str:
    """A message carrying serving-audit records (written to ``serving_audit`` by ingest)."""
    return dumps({"v": VERSION, "audit": records})
