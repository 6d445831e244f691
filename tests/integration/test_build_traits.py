"""build_context over a small hand-made lakehouse: identity, every trait kind, scores skipped,
snapshots, landing — each checked against an answer computed by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.assemble.records import load_file
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text().replace("min_customers: 30", "min_customers: 1000") + """
""".strip())

EXTRA_TRAITS = """
  order_count_all:
    description: all orders
    kind: count
    where: {type: track, event: Order Completed}
  smallest_order:
    description: smallest
    kind: min
    property: properties.revenue
    where: {type: track, event: Order Completed}
  first_order_revenue:
    description: first
    kind: first_value
    property: properties.revenue
    where: {type: track, event: Order Completed}
  last_order_revenue:
    description: last
    kind: last_value
    property: properties.revenue
    where: {type: track, event: Order Completed}
  first_order_at:
    description: first order time
    kind: first_time
    where: {type: track, event: Order Completed}
  categories_count_30d:
    description: distinct categories
    kind: unique_count
    property: properties.category
    window: 30d
    where: {type: track, event: Product Viewed}
"""


def _spec() -> Any:
    text = DEFAULT_SPEC.read_text().replace("min_customers: 30", "min_customers: 1000")
    text = text.replace("\nscores:", EXTRA_TRAITS + "\nscores:", 1)
    return parse_spec(text)


@pytest.fixture
def built(lakehouse: Any) -> tuple[MemoryContextStore, Any, Any]:
    spec = _spec()
    view = lambda days, cat, **who: ev("track", days, event="Product Viewed", properties={"category": cat}, **who)  # noqa: E731
    order = lambda days, rev, **who: ev("track", days, event="Order Completed", properties={"revenue": rev}, **who)  # noqa: E731
    write_events(lakehouse, [
        # Ann: browses anonymously on a1, signs up as u1 with a messy email, orders three times
        ev("page", 120, anonymousId="a1", name="Home", properties={"path": "/"}),
        ev("identify", 110, anonymousId="a1", userId="u1", traits={"email": " Ann@X.com ", "plan": "pro",
                                                                   "name": "Ann"}),
        order(100, 10, userId="u1"), order(50, 20, userId="u1"), order(10, 30, userId="u1"),
        view(20, "Home", userId="u1"), view(15, "Home", anonymousId="a1"), view(12, "Apparel", userId="u1"),
        view(3, "Toys", userId="u1"),
        ev("screen", 2, userId="u1", name="Cart"),
        ev("identify", 1, userId="u1", traits={"plan": "enterprise"}),
        # Bob: only a user id, one order; views tie between Apparel and Home (→ Apparel)
        order(5, 5, userId="u2"),
        view(4, "Home", userId="u2"), view(4, "Apparel", userId="u2"), view(3, "Home", userId="u2"),
        view(2, "Apparel", userId="u2"),
        # a shared device: a9 first used by u3, later by u4 — u3 and u4 must stay apart
        ev("identify", 30, anonymousId="a9", userId="u3"),
        ev("identify", 20, anonymousId="a9", userId="u4"),
    ])
    crm = b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n" \
          b"C1,ann@x.com,Ann X,vip,Priya,2026-11-01T00:00:00Z\nC1,ann@x.com,Ann X,lead,Priya,2026-10-01T00:00:00Z\n"
    tickets = json.dumps({"ticket_id": "T1", "requester_email": "ANN@X.COM", "channel": "chat", "status": "open",
                          "subject": "Where is my order?", "body": "x" * 1000, "created_at": "2026-11-20T00:00:00Z",
                          "updated_at": "2026-11-21T00:00:00Z"}).encode()
    assert load_file(lakehouse, spec, "imports/crm_contacts/crm.csv", crm).loaded == 1
    assert load_file(lakehouse, spec, "imports/support_tickets/t.jsonl", tickets).loaded == 1
    store = MemoryContextStore()
    report = build_context(lakehouse, store, spec, as_of=AS_OF)
    return store, report, spec


def _doc(store: MemoryContextStore, id_type: str, value: str) -> dict[str, Any]:
    profile = store.resolve(id_type, value)
    assert profile, f"{id_type}:{value} has no alias"
    item = store.get_snapshot(profile)
    assert item is not None
    return json.loads(item["doc"])


def test_identity_joins_devices_emails_and_records(built: Any) -> None:
    store, report, _ = built
    ann = _doc(store, "user_id", "u1")
    # Every identifier of Ann resolves to the same profile, emails normalised, CRM id via the email
    assert ann["profile"]["identifiers"] == {"anonymous_id": ["a1"], "crm_id": ["C1"], "email": ["ann@x.com"],
                                             "user_id": ["u1"]}
    for id_type, value in (("anonymous_id", "a1"), ("email", "ann@x.com"), ("crm_id", "C1")):
        assert store.resolve(id_type, value) == ann["profile_id"]
    # the shared device did not fuse u3 and u4
    assert store.resolve("user_id", "u3") != store.resolve("user_id", "u4")
    assert report.rejected_edges >= 1


def test_every_trait_kind_matches_the_hand_computed_answer(built: Any) -> None:
    store, _, _ = built
    ann = _doc(store, "user_id", "u1")["traits"]
    bob = _doc(store, "user_id", "u2")["traits"]
    assert ann["orders_90d"] == 2 and bob["orders_90d"] == 1           # count, 90d window
    assert ann["order_count_all"] == 3                                  # count, all time
    assert ann["revenue_90d"] == 50 and ann["lifetime_revenue"] == 60   # sum
    assert ann["average_order_value"] == 20                             # avg
    assert ann["largest_order"] == 30 and ann["smallest_order"] == 10   # max, min
    assert ann["first_order_revenue"] == "10" and ann["last_order_revenue"] == "30"  # first/last value
    assert ann["first_order_at"] == "2026-08-16T12:00:00.000Z"             # first_time: 100 days before
    assert ann["last_order_at"] == "2026-11-14T12:00:00.000Z"              # last_time
    assert ann["plan"] == "enterprise" and ann["name"] == "Ann"         # last_value of identify traits
    assert ann["favourite_category"] == "Home"                          # most_frequent
    assert bob["favourite_category"] == "Apparel"                       # tie → alphabetical
    assert ann["categories_viewed_30d"] == ["Apparel", "Home", "Toys"]  # unique_list, sorted
    assert ann["categories_count_30d"] == 3                             # unique_count
    assert ann["products_viewed_7d"] == 1                               # 7d window
    assert ann["uses_mobile_app"] is True and bob["uses_mobile_app"] is False  # exists
    assert ann["crm_stage"] == "vip" and ann["account_manager"] == "Priya"     # latest record row wins
    assert ann["open_tickets"] == 1 and bob["open_tickets"] == 0        # record count with a filter
    assert ann["days_since_last_order"] == 10 and bob["days_since_last_order"] == 5  # sql trait
    assert bob["crm_stage"] is None


def test_snapshot_sections_records_interactions_and_freshness(built: Any) -> None:
    store, report, spec = built
    doc = _doc(store, "user_id", "u1")
    assert list(doc)[:7] == ["profile_id", "profile", "scores", "traits", "records", "interactions", "recent_events"]
    assert doc["records"]["crm_contacts"]["lifecycle_stage"] == "vip"
    ticket = doc["interactions"][0]
    assert ticket["subject"] == "Where is my order?" and len(ticket["body"]) == 400  # truncated to the budget
    assert [e["type"] for e in doc["recent_events"]][:2] == ["screen", "track"]     # newest first
    # built_at is the wall clock of the build; data_as_of the newest event received (the events here
    # were received at their own times, the newest one day before AS_OF)
    assert doc["built_at"] == report.built_at and doc["data_as_of"] == "2026-11-23T12:00:00+00:00"
    assert report.as_of == AS_OF.isoformat()
    assert doc["scores"]["churn_risk"] is None and "skipped" in report.scores


def test_a_second_build_with_no_new_data_writes_nothing(built: Any, lakehouse: Any) -> None:
    store, first, spec = built
    assert first.items_written > 0
    again = build_context(lakehouse, store, spec, as_of=AS_OF)
    assert again.items_written == 0 and again.items_deleted == 0 and again.changed_profiles == 0


def test_one_changed_customer_writes_only_their_items(built: Any, lakehouse: Any) -> None:
    store, _, spec = built
    before = store.writes
    write_events(lakehouse, [ev("track", 0.5, event="Order Completed", properties={"revenue": 7}, userId="u2")])
    report = build_context(lakehouse, store, spec, as_of=AS_OF)
    assert report.changed_profiles == 1 and report.items_written == 1 and store.writes - before == 1
    assert _doc(store, "user_id", "u2")["traits"]["orders_90d"] == 2
