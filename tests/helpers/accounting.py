"""The accounting invariant: everything acknowledged is in ``events`` (once by message_id) or in
``rejected_events`` with its reason — nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def landed(lakehouse: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Events by message_id (first copy) and all rejected rows (deduplicated by rejection_id)."""
    events: dict[str, dict[str, Any]] = {}
    names = lakehouse.table_names()
    if "events" in names:
        for row in lakehouse.scan("events").to_pylist():
            events.setdefault(row["message_id"], row)
    rejected: dict[str, dict[str, Any]] = {}
    if "rejected_events" in names:
        for row in lakehouse.scan("rejected_events").to_pylist():
            rejected.setdefault(row["rejection_id"], row)
    return events, list(rejected.values())


def assert_accounted(lakehouse: Any, accepted_ids: Iterable[str], rejected_count: int) -> None:
    """Every accepted message_id is in events exactly once after dedupe, every rejection has a reason,
    and nothing else landed."""
    events, rejected = landed(lakehouse)
    accepted = set(accepted_ids)
    missing = accepted - events.keys()
    unexpected = events.keys() - accepted
    assert not missing, f"{len(missing)} accepted events never landed: {sorted(missing)[:5]}"
    assert not unexpected, f"{len(unexpected)} events landed that nobody sent: {sorted(unexpected)[:5]}"
    assert len(rejected) == rejected_count, f"expected {rejected_count} rejected, found {len(rejected)}"
    assert all(r["reason"] for r in rejected), "a rejected event has no reason"
