"""One behavioural suite of the context store's ports (customer_context.ports), run against the in-memory
store and the DynamoDB store on moto's server over HTTP: what the domain relies on holds for both."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from customer_context.ports import ContextStore, RecentEvent, Refused, SnapshotItem


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[ContextStore]:
    """A fresh, empty context store of each kind."""
    if request.param == "memory":
        from customer_context.stores.context_store import MemoryContextStore

        yield MemoryContextStore()
        return
    request.getfixturevalue("aws")
    from customer_context.stores.aws import boto_client, dynamodb_table
    from customer_context.stores.context_store import DynamoContextStore
    from customer_context_devtools.local.template import resource_properties

    name = f"parity-{uuid.uuid4().hex[:12]}"
    props = resource_properties("ContextTable")
    boto_client("dynamodb").create_table(
        TableName=name, KeySchema=props["KeySchema"], AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode="PAY_PER_REQUEST")
    yield DynamoContextStore(dynamodb_table(name))
    boto_client("dynamodb").delete_table(TableName=name)


def _snapshot(pid: str, content_hash: str = "h1", **doc: Any) -> SnapshotItem:
    return SnapshotItem(pid, json.dumps({"profile_id": pid, **doc}), content_hash, 1, "2026-11-24T12:00:00+00:00",
                        "2026-11-24T11:59:00+00:00", json.dumps({"traits.plan": "2026-11-24T12:00:00+00:00"}))


def test_snapshots_are_written_read_and_deleted(store: ContextStore) -> None:
    assert store.put_snapshots([_snapshot("p1", plan="pro"), _snapshot("p2")]) == 2
    item = store.get_snapshot("p1")
    assert item is not None and json.loads(item["doc"])["plan"] == "pro"
    assert (item["content_hash"], int(item["version"]), item["data_as_of"]) == ("h1", 1, "2026-11-24T11:59:00+00:00")
    assert json.loads(item["changed_at"]) == {"traits.plan": "2026-11-24T12:00:00+00:00"}
    assert store.get_snapshot("nobody") is None
    assert set(store.get_snapshots(["p1", "p2", "nobody"])) == {"p1", "p2"}
    store.delete_snapshots(["p1"])
    assert store.get_snapshot("p1") is None and store.get_snapshot("p2") is not None


def test_a_snapshot_the_store_cannot_hold_is_refused_not_written(store: ContextStore) -> None:
    refused: list[Refused] = []
    written = store.put_snapshots([_snapshot("p1"), _snapshot("p" * 3000)], refused)
    assert written == 1 and [(r.kind, r.profile_id[:3]) for r in refused] == [("snapshot", "ppp")]
    refused = []
    assert store.put_aliases([("email", "x" * 3000, "p1"), ("email", "ada@example.com", "p1")], refused) == 1
    assert [(r.kind, r.identifier_type) for r in refused] == [("alias", "email")]


def test_aliases_resolve_one_and_many_and_are_deleted(store: ContextStore) -> None:
    store.put_aliases([("email", "ada@example.com", "p1"), ("user_id", "u1", "p1"), ("user_id", "u2", "p2")])
    assert store.resolve("email", "ada@example.com") == "p1"
    assert store.resolve("email", "nobody@example.com") is None
    assert store.resolve_many([("user_id", "u1"), ("user_id", "u2"), ("user_id", "u3")]) == {
        ("user_id", "u1"): "p1", ("user_id", "u2"): "p2"}
    store.delete_aliases([("user_id", "u1")])
    assert store.resolve("user_id", "u1") is None and store.resolve("user_id", "u2") == "p2"


def _event(owner: Any, second: int, message_id: str) -> RecentEvent:
    return RecentEvent(owner, f"2026-11-24T12:00:{second:02d}.000Z", message_id,
                       json.dumps({"type": "track", "event": message_id}), 2_000_000_000)


def test_live_tails_are_kept_per_owner_newest_first_after_a_point(store: ContextStore) -> None:
    store.put_recent([_event("p1", 1, "m1"), _event("p1", 3, "m3"), _event("p1", 2, "m2"),
                      _event(("anonymous_id", "a1"), 4, "m4"), _event("p2", 5, "m5")])
    rows = store.recent("p1", None, 10)
    assert [json.loads(r["event"])["event"] for r in rows] == ["m3", "m2", "m1"]
    assert rows[0]["sk"] == "2026-11-24T12:00:03.000Z#m3" and int(rows[0]["expires_at"]) == 2_000_000_000
    assert [r["sk"].split("#")[1] for r in store.recent("p1", "2026-11-24T12:00:01.000Z#\U0010ffff", 10)] == [
        "m3", "m2"]
    assert [r["sk"].split("#")[1] for r in store.recent("p1", None, 2)] == ["m3", "m2"]
    assert [r["sk"].split("#")[1] for r in store.recent(("anonymous_id", "a1"), None, 10)] == ["m4"]
    assert store.recent(("anonymous_id", "p1"), None, 10) == []  # an identifier's tail is not a profile's


def test_deleting_a_customer_takes_her_snapshots_aliases_and_tails_only(store: ContextStore) -> None:
    store.put_snapshots([_snapshot("p1"), _snapshot("p2")])
    store.put_aliases([("email", "ada@example.com", "p1"), ("email", "bob@example.com", "p2")])
    store.put_recent([_event("p1", 1, "m1"), _event(("email", "ada@example.com"), 2, "m2"), _event("p2", 3, "m3")])
    assert store.delete_customer(["p1"], [("email", "ada@example.com")]) >= 4
    assert store.get_snapshot("p1") is None and store.resolve("email", "ada@example.com") is None
    assert store.recent("p1", None, 10) == [] and store.recent(("email", "ada@example.com"), None, 10) == []
    assert store.get_snapshot("p2") is not None and store.resolve("email", "bob@example.com") == "p2"
    assert len(store.recent("p2", None, 10)) == 1


def test_consumers_are_created_listed_and_deleted(store: ContextStore) -> None:
    store.put_consumer("hash1", {"name": "support", "sections": ["traits"], "fields": []})
    store.put_consumer("hash2", {"name": "agent", "sections": ["*"], "fields": []})
    consumer = store.get_consumer("hash1")
    assert consumer is not None and consumer["name"] == "support" and list(consumer["sections"]) == ["traits"]
    assert sorted(c["name"] for c in store.list_consumers()) == ["agent", "support"]
    store.delete_consumer("hash1")
    assert store.get_consumer("hash1") is None
    assert [c["name"] for c in store.list_consumers()] == ["agent"]


def test_suppressions_keyed_and_legacy_and_those_filed_for_deletion(store: ContextStore) -> None:
    keyed = ["0" * 63 + "1", "a" * 64, "f" * 64]
    store.put_suppressions(keyed[:2], "r1")
    store.put_suppressions(keyed[2:], "r2", delete=True)
    assert store.suppressed([*keyed, "b" * 64]) == set(keyed)
    assert store.deleted_identifiers() == {keyed[2]}
    assert store.last_suppression() is None
    store.note_suppression("2026-11-24T12:00:00Z")
    assert store.last_suppression() == "2026-11-24T12:00:00Z"


def test_regulations_and_the_landing_fence(store: ContextStore) -> None:
    store.put_regulation({"id": "r1", "type": "suppress", "status": "running"})
    assert store.get_regulation("r1") == {"id": "r1", "type": "suppress", "status": "running"}
    assert store.get_regulation("r2") is None
    assert store.acquire_fence("build-1", 60) and store.acquire_fence("build-1", 60)
    assert not store.acquire_fence("deletion-1", 60)
    store.release_fence("deletion-1")  # not the holder: nothing happens
    assert not store.acquire_fence("deletion-1", 60)
    store.release_fence("build-1")
    assert store.acquire_fence("deletion-1", 60)
    assert store.acquire_fence("build-2", -1) is False  # a live lease is not taken over
    assert store.deletion_generation() == 0
    assert store.bump_deletion_generation() == 1 and store.bump_deletion_generation() == 2
    assert store.deletion_generation() == 2


def test_the_landing_marker_and_what_a_store_lost(store: ContextStore) -> None:
    assert store.get_landing_marker() is None
    store.put_landing_marker("g1")
    assert store.get_landing_marker() == "g1"
    store.put_snapshots([_snapshot("p1", "h1")])
    store.put_aliases([("user_id", "u1", "p1")])
    assert store.missing({"p1": "h1"}, [("user_id", "u1", "p1")]) is None
    assert store.missing({"p1": "h2"}, []) == "snapshot of profile p1 is not the one landed last"
    assert store.missing({"p9": "h1"}, []) == "snapshot of profile p9 missing"
    assert store.missing({}, [("user_id", "u1", "p2")]) == "an alias (user_id) of profile p2 missing or moved"
