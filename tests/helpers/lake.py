"""Write hand-made events and records straight into a lakehouse (as ingest and load_records would)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_context.collect.ingest import Rows, event_to_row, write_rows

AS_OF = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def ev(kind: str, days_ago: float, **fields: Any) -> dict[str, Any]:
    """A stamped Segment-spec event ``days_ago`` before AS_OF."""
    when = AS_OF - timedelta(days=days_ago)
    stamp = when.isoformat().replace("+00:00", "Z")
    return {"type": kind, "messageId": fields.pop("messageId", f"m{next(_ids)}"), "timestamp": stamp,
            "receivedAt": stamp, "sourceId": "test", **fields}


def write_events(lakehouse: Any, events: list[dict[str, Any]]) -> None:
    """Append events in one commit."""
    write_rows(lakehouse, Rows(events=[event_to_row(e) for e in events]))


def order(customer: str, days_ago: float, revenue: Any = ..., **fields: Any) -> dict[str, Any]:
    """An ``Order Completed`` event of ``customer`` (no revenue property when ``revenue`` is left out)."""
    properties = fields.pop("properties", {})
    if revenue is not ...:
        properties = {"revenue": revenue, **properties}
    return ev("track", days_ago, userId=customer, event="Order Completed", properties=properties, **fields)


def established_shop(prefix: str = "old") -> list[dict[str, Any]]:
    """Orders of 40 customers over 300 days: repeat buyers at different paces, spend that varies (both score
    models fit on them)."""
    orders = []
    for n in range(40):
        first = 300 - n * 5
        orders += [order(f"{prefix}{n}", first - k * (3 + n % 7), 10 + (n * 7 + k * 3) % 40) for k in range(1 + n % 4)]
    return orders
