"""The live tail files each event where the build will put it: under the profile of its most important
identifier, never under another profile one of its lesser identifiers belongs to."""

from __future__ import annotations

import json
from typing import Any

from customer_context.serve.consumers import Consumer
from customer_context.serve.fetch import ContextService
from customer_context.serve.recent import RecentTail
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore, SnapshotItem

SPEC = parse_spec(DEFAULT_SPEC.read_text())
EVERYTHING = Consumer("all", frozenset({"*"}))


def _event(n: int, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "messageId": f"m{n}", "receivedAt": f"2026-11-24T12:00:0{n}Z",
            "timestamp": f"2026-11-24T12:00:0{n}Z", **fields}


def _recent(store: MemoryContextStore, id_type: str, value: str) -> list[str]:
    service = ContextService(store, SPEC)
    try:
        body = service.fetch(id_type, value, EVERYTHING, sections="recent_events").body
    except Exception:  # noqa: BLE001 - nobody known by it
        return []
    return [e.get("event") or e.get("name") for e in body["context"]["recent_events"] if e["source"] == "live"]


def _store() -> MemoryContextStore:
    # alice: her user id, her laptop (which bob later uses) and her email; bob: his user id
    store = MemoryContextStore()
    store.put_aliases([("user_id", "alice", "p_alice"), ("anonymous_id", "laptop", "p_alice"),
                       ("email", "alice@example.com", "p_alice"), ("user_id", "bob", "p_bob")])
    store.put_snapshots([SnapshotItem(p, json.dumps({"profile_id": p, "recent_events": []}), "h", 1,
                                      "2026-11-24T00:00:00+00:00", "2026-11-24T00:00:00+00:00")
                         for p in ("p_alice", "p_bob")])
    return store


def test_bobs_order_from_alices_laptop_is_bobs_only() -> None:
    store = _store()
    RecentTail(store, SPEC, 3600).record([_event(1, userId="bob", anonymousId="laptop", event="Bob's order")])
    assert _recent(store, "user_id", "bob") == ["Bob's order"]
    assert _recent(store, "user_id", "alice") == []


def test_a_new_user_on_alices_laptop_is_not_alice() -> None:
    store = _store()
    RecentTail(store, SPEC, 3600).record([_event(2, userId="newbie", anonymousId="laptop", event="Signed up")])
    assert _recent(store, "user_id", "alice") == []
    assert _recent(store, "user_id", "newbie") == ["Signed up"]


def test_an_identifier_in_traits_counts_as_the_build_counts_it() -> None:
    store = _store()
    # a page from a new device that carries alice's email: the email outranks the device
    RecentTail(store, SPEC, 3600).record([_event(3, type="page", event=None, anonymousId="new-phone", name="Home",
                                                 context={"traits": {"email": "Alice@Example.com"}})])
    assert _recent(store, "user_id", "alice") == ["Home"]
    assert _recent(store, "anonymous_id", "new-phone") == []


def test_an_event_received_in_the_millisecond_of_data_as_of_is_served_once() -> None:
    from customer_context.ports import RecentEvent

    # Given a snapshot whose newest event was received at 12:00:00.123 (the build writes data_as_of with an
    # offset and microseconds; collect writes receivedAt with milliseconds and Z)
    store = MemoryContextStore()
    store.put_aliases([("user_id", "ann", "p_ann")])
    store.put_snapshots([SnapshotItem("p_ann", json.dumps({"profile_id": "p_ann", "recent_events": [
        {"type": "track", "event": "In the build"}]}), "h", 1, "2026-11-24T12:05:00+00:00",
        "2026-11-24T12:00:00.123000+00:00")])
    # and in the tail that same event, plus one received a millisecond later
    store.put_recent([RecentEvent("p_ann", "2026-11-24T12:00:00.123Z", "m1",
                                  json.dumps({"type": "track", "event": "In the build"}), 0),
                      RecentEvent("p_ann", "2026-11-24T12:00:00.124Z", "m2",
                                  json.dumps({"type": "track", "event": "After the build"}), 0)])
    body = ContextService(store, SPEC).fetch("user_id", "ann", EVERYTHING, sections="recent_events").body
    # Then the first is served once (from the snapshot), the second live
    assert [(e["event"], e["source"]) for e in body["context"]["recent_events"]] == [
        ("After the build", "live"), ("In the build", "snapshot")]
