"""What a build leaves besides the served items: the snapshot history and refused edges in Iceberg,
duplicates removed, identifiers read from ``context.externalIds``, and the same documents when
rendered in slices with consent in play."""

from __future__ import annotations

import json
from typing import Any

from customer_context.assemble import build
from customer_context.assemble.build import build_context
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())


def _docs(store: MemoryContextStore) -> dict[str, dict[str, Any]]:
    return {i["profile_id"]: {n: v for n, v in json.loads(i["doc"]).items() if n != "built_at"}
            for k, i in store.items.items() if k[1] == "snapshot"}


def test_history_holds_every_landed_version_and_the_refused_edges(lakehouse: Any) -> None:
    write_events(lakehouse, [
        ev("identify", 9, userId="u1", anonymousId="a1", traits={"email": "u1@x.io"}),
        ev("track", 8, userId="u1", event="Order Completed", properties={"revenue": 10}),
        ev("identify", 7, userId="u2", anonymousId="a2"),
        # a2 is u2's device; u3 on it is refused (a profile holds one user id)
        ev("identify", 6, userId="u3", anonymousId="a2"),
    ])
    store = MemoryContextStore()
    first = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    history = lakehouse.scan("context_snapshots").to_pylist()
    # Then every landed document is in the history, as landed, version 1
    landed = {i["profile_id"]: i for k, i in store.items.items() if k[1] == "snapshot"}
    assert first.changed_profiles == len(landed) == len(history) == 3
    for row in history:
        item = landed[row["profile_id"]]
        assert (row["version"], row["content_hash"], row["doc"]) == (1, item["content_hash"], item["doc"])
        assert row["built_at"].isoformat() == first.built_at
    refused = lakehouse.scan("identity_rejected_edges").to_pylist()
    assert len(refused) == first.rejected_edges == 1
    assert {refused[0]["a_value"], refused[0]["b_value"]} == {"u3", "a2"} and "limit" in refused[0]["reason"]

    # When one customer changes, the next build adds only their new version
    write_events(lakehouse, [ev("track", 1, userId="u1", event="Order Completed", properties={"revenue": 5})])
    second = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    history = lakehouse.scan("context_snapshots").to_pylist()
    assert second.changed_profiles == 1 and len(history) == 4
    [latest] = lakehouse.scan("context_snapshots", row_filter=f"built_at >= '{second.built_at}'").to_pylist()
    assert latest["version"] == 2 and latest["profile_id"] == store.resolve("user_id", "u1")
    state = {r["profile_id"]: r["version"] for r in lakehouse.scan("profile_state").to_pylist()}
    assert sorted(state.values()) == [1, 1, 2]


def test_a_repeated_message_counts_once_as_first_received(lakehouse: Any) -> None:
    first = ev("track", 3, userId="u1", event="Order Completed", properties={"revenue": 10}, messageId="dup")
    again = {**first, "properties": {"revenue": 99}, "receivedAt": "2026-11-24T11:00:00Z"}
    write_events(lakehouse, [again])
    write_events(lakehouse, [first, ev("track", 2, userId="u1", event="Product Viewed", messageId="other")])
    store = MemoryContextStore()
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    doc = json.loads(store.get_snapshot(store.resolve("user_id", "u1"))["doc"])
    assert report.events == 2
    assert doc["traits"]["lifetime_revenue"] == 10 and len(doc["recent_events"]) == 2


def test_external_ids_join_the_profile(lakehouse: Any) -> None:
    spec = parse_spec(DEFAULT_SPEC.read_text().replace(
        "      # also from events: from_events: [externalIds.crm_id] reads context.externalIds entries\n",
        "      from_events: [externalIds.crm_id]\n", 1))
    write_events(lakehouse, [
        ev("identify", 5, anonymousId="a1", context={"externalIds": [
            {"id": "C7", "type": "crm_id", "collection": "users"}, {"id": "Z", "type": "other"}]}),
        ev("track", 4, anonymousId="a1", event="Product Viewed"),
        ev("identify", 3, userId="u1", context={"externalIds": [{"id": "C7", "type": "crm_id"}]}),
        ev("page", 2, anonymousId="a9", context={"externalIds": "not a list"}),
    ])
    store = MemoryContextStore()
    build_context(lakehouse, store, spec, as_of=AS_OF)
    profile = store.resolve("user_id", "u1")
    assert profile and store.resolve("crm_id", "C7") == profile == store.resolve("anonymous_id", "a1")
    doc = json.loads(store.get_snapshot(profile)["doc"])
    assert doc["profile"]["identifiers"] == {"anonymous_id": ["a1"], "crm_id": ["C7"], "user_id": ["u1"]}
    assert store.resolve("crm_id", "Z") is None and store.resolve("anonymous_id", "a9")


def test_slices_render_the_same_documents_with_consent(lakehouse: Any, tmp_path: Any, monkeypatch: Any) -> None:
    from tests.integration.test_consent import RUDDER_NO, SEGMENT_YES, spec_with_consent, viewed

    spec = spec_with_consent()
    events = [e for n in range(8) for e in (
        viewed(5, f"u{n}", "shoes", SEGMENT_YES if n % 2 else None), viewed(4, f"u{n}", "hats"),
        viewed(1, f"u{n}", "bags", RUDDER_NO if n % 3 == 0 else None),
        ev("identify", 6, userId=f"u{n}", anonymousId=f"a{n}", traits={"email": f"u{n}@x.io"}))]
    write_events(lakehouse, events)
    whole = MemoryContextStore()
    build_context(lakehouse, whole, spec, as_of=AS_OF)
    # When the same events are rendered a few profiles at a time
    monkeypatch.setattr(build, "EVENTS_PER_SLICE", 4)
    from customer_context import wiring

    monkeypatch.setenv("CUSTOMER_CONTEXT_DATA_DIR", str(tmp_path / "other"))
    wiring.reload_from_environment()
    other = wiring.lakehouse()
    write_events(other, events)
    sliced = MemoryContextStore()
    report = build_context(other, sliced, spec, as_of=AS_OF)
    assert report.profiles == 8
    assert _docs(sliced) == _docs(whole)
    withdrawn = _docs(whole)[whole.resolve("user_id", "u3")]
    assert "recent_events" not in withdrawn or withdrawn["recent_events"] is None
