"""Unit tests of the synthetic dataset generator (customer_context_devtools.demo.generate)."""

from __future__ import annotations

import itertools
import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from customer_context_devtools.demo.generate import (
    BAD_KINDS,
    EVENTS_PER_CUSTOMER,
    SIZES,
    DemoConfig,
    generate_events,
    size_config,
)

END = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
REQUIRED = {
    "track": ("event", "properties"),
    "identify": ("traits",),
    "page": ("name", "properties"),
    "screen": ("name",),
    "group": ("groupId", "traits"),
    "alias": ("previousId", "userId"),
}


@pytest.fixture(scope="module")
def demo() -> list[dict[str, Any]]:
    """The default demo dataset (3000 customers, 90 days) with a fixed end."""
    return list(generate_events(DemoConfig(end=END)))


@pytest.fixture(scope="module")
def good(demo: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in demo if "_bad" not in e]


def test_same_seed_gives_same_events() -> None:
    # Given two identical configs and one with another seed
    config = DemoConfig(customers=500, end=END)
    # When generating the first 1000 events of each
    first = list(itertools.islice(generate_events(config), 1000))
    again = list(itertools.islice(generate_events(DemoConfig(customers=500, end=END)), 1000))
    other = list(itertools.islice(generate_events(DemoConfig(customers=500, end=END, seed=8)), 1000))
    # Then the same seed reproduces them exactly and another seed does not
    assert len(first) == 1000
    assert first == again
    assert first != other


def test_generation_is_lazy() -> None:
    # Given a config far too large to materialise
    config = DemoConfig(customers=10_000_000, end=END)
    # When taking a few events
    events = list(itertools.islice(generate_events(config), 5))
    # Then they come at once (a generator, not a list)
    assert len(events) == 5


def test_good_events_have_the_fields_of_their_type(good: list[dict[str, Any]]) -> None:
    # Given the good events of the demo dataset
    assert len(good) > 20_000
    for event in good:
        # Then each has a known type, a messageId, an identity, a context and its type's fields
        assert event["type"] in REQUIRED, event
        assert event["messageId"]
        assert event.get("userId") or event.get("anonymousId"), event
        for field in REQUIRED[event["type"]]:
            value = event.get(field)
            assert value or value == {}, (field, event)  # identify may carry no traits
        context = event["context"]
        assert context["ip"] and context["userAgent"] and context["locale"], event
        if event["type"] == "track":
            assert isinstance(event["properties"], dict)
        if event["type"] == "page":
            assert set(event["properties"]) >= {"url", "path", "title", "referrer"}
            assert context["page"]["path"] == event["properties"]["path"]
        if event["type"] == "screen":
            assert context["os"]["name"] in ("iOS", "Android") and context["device"]["model"]


def test_good_events_pass_the_collect_validation(demo: list[dict[str, Any]]) -> None:
    tracking = pytest.importorskip("customer_context.models.tracking")
    # Given the demo dataset
    for event in demo:
        # When validating each event as collect does (without the marker)
        body = {k: v for k, v in event.items() if k != "_bad"}
        reason = tracking.validate_event(body)
        # Then good events pass and bad events are rejected
        if "_bad" in event:
            assert reason is not None, event
        else:
            assert reason is None, (reason, event)


def test_timestamps_are_aware_iso_within_the_window(good: list[dict[str, Any]]) -> None:
    # Given the window of the demo config
    start = END - timedelta(days=90)
    for event in good:
        # When parsing each timestamp
        ts = datetime.fromisoformat(event["timestamp"])
        # Then it is aware and within the window
        assert ts.tzinfo is not None
        assert start <= ts <= END, event["timestamp"]


def test_message_ids_are_unique_uuid4(demo: list[dict[str, Any]]) -> None:
    # Given all message ids
    ids = [e["messageId"] for e in demo]
    # Then they are distinct canonical version-4 UUIDs
    assert len(set(ids)) == len(ids)
    for value in ids[:2000]:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and str(parsed) == value


def test_default_end_is_now_truncated_to_the_minute() -> None:
    # Given a config without an end
    before = datetime.now(UTC)
    # When generating
    events = [e for e in generate_events(DemoConfig(customers=200)) if "_bad" not in e]
    # Then every timestamp lies in the 90 days before now
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in events]
    assert max(stamps) <= datetime.now(UTC)
    assert min(stamps) >= before.replace(second=0, microsecond=0) - timedelta(days=90, minutes=1)


def test_each_users_events_are_chronological_and_start_with_identify_or_alias(
    good: list[dict[str, Any]],
) -> None:
    # Given the good events grouped by userId, in stream order
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in good:
        if "userId" in event:
            by_user[event["userId"]].append(event)
    assert len(by_user) > 1500
    for user, events in by_user.items():
        # Then each user's story is in time order and begins with their identify (or the alias
        # introducing the new id)
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps), user
        assert events[0]["type"] in ("identify", "alias"), (user, events[0])


def test_bad_events_are_marked_and_about_the_requested_share(demo: list[dict[str, Any]]) -> None:
    # Given the demo dataset (bad_event_rate 1 %)
    kinds = Counter(e["_bad"] for e in demo if "_bad" in e)
    # Then about 1 % of the events are bad, of every kind, each kind really broken
    share = sum(kinds.values()) / len(demo)
    assert 0.007 <= share <= 0.013, share
    assert set(kinds) == set(BAD_KINDS)
    for event in (e for e in demo if "_bad" in e):
        kind = event["_bad"]
        if kind == "missing_event":
            assert event["type"] == "track" and "event" not in event
        elif kind == "missing_identity":
            assert "userId" not in event and "anonymousId" not in event
        elif kind == "invalid_timestamp":
            with pytest.raises(ValueError):
                datetime.fromisoformat(event["timestamp"])
        elif kind == "missing_group_id":
            assert event["type"] == "group" and "groupId" not in event
        elif kind == "missing_previous_id":
            assert event["type"] == "alias" and "previousId" not in event
        else:
            assert isinstance(event["properties"], list)


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_bad_event_rate_is_honoured(rate: float) -> None:
    # Given a config with another bad-event rate
    events = list(generate_events(DemoConfig(customers=1000, end=END, bad_event_rate=rate)))
    # When counting the bad events
    share = sum("_bad" in e for e in events) / len(events)
    # Then their share is about the rate
    assert share == pytest.approx(rate, abs=0.015)


def test_size_s_yields_about_100k_events() -> None:
    # Given the S config
    config = size_config("S")
    # When generating it fully
    count = sum(1 for _ in generate_events(DemoConfig(customers=config.customers, end=END)))
    # Then it yields about 100k events
    assert 90_000 <= count <= 110_000, count


@pytest.mark.parametrize("size", ["M", "L", "m"])
def test_larger_sizes_target_their_counts_by_config(size: str) -> None:
    # Given a named size
    config = size_config(size, seed=3)
    # Then its customers times the measured events per customer is about the target
    target = SIZES[size.upper()]
    assert config.customers * EVENTS_PER_CUSTOMER == pytest.approx(target, rel=0.01)
    assert config.seed == 3 and config.days == 90 and config.end is None


def test_demo_size_and_invalid_inputs() -> None:
    # Given / When / Then: "demo" is the default config; unknown sizes and bad values are refused
    assert size_config("demo") == DemoConfig()
    with pytest.raises(ValueError):
        size_config("XL")
    with pytest.raises(ValueError):
        DemoConfig(bad_event_rate=1.0)
    with pytest.raises(ValueError):
        DemoConfig(days=0)


def test_shared_devices_exist(good: list[dict[str, Any]]) -> None:
    # Given the identify calls per anonymousId
    users_by_device: dict[str, set[str]] = defaultdict(set)
    devices = set()
    for event in good:
        if "anonymousId" in event:
            devices.add(event["anonymousId"])
            if event["type"] == "identify":
                users_by_device[event["anonymousId"]].add(event["userId"])
    # When counting devices on which two different users identified
    shared = [d for d, users in users_by_device.items() if len(users) > 1]
    # Then there are some, about 2 % of the devices
    assert shared
    assert 0.01 <= len(shared) / len(devices) <= 0.035


def test_cross_device_logins_and_messy_emails_exist(good: list[dict[str, Any]]) -> None:
    # Given the identify calls
    identifies = [e for e in good if e["type"] == "identify"]
    devices_by_user: dict[str, set[str]] = defaultdict(set)
    for event in identifies:
        if "anonymousId" in event:
            devices_by_user[event["userId"]].add(event["anonymousId"])
    emails = [e["traits"]["email"] for e in identifies if "email" in e["traits"]]
    # Then some users identify from several devices, and some emails need normalising
    assert sum(len(d) > 1 for d in devices_by_user.values()) > 300
    messy = [m for m in emails if m != m.strip().lower()]
    assert 0.1 <= len(messy) / len(emails) <= 0.5
    signups = [e for e in identifies if "created_at" in e["traits"]]
    assert signups and all(re.fullmatch(r"(u_\d{6}|legacy_[0-9a-f]{10})", e["userId"]) for e in signups)
    assert 1500 <= len(signups) <= 2100  # about 60 % of 3000 customers sign up


def test_alias_and_group_calls_exist(good: list[dict[str, Any]]) -> None:
    # Given the alias and group calls
    aliases = [e for e in good if e["type"] == "alias"]
    groups = [e for e in good if e["type"] == "group"]
    # Then there are some, about 5 % and 10 % of the customers
    assert 90 <= len(aliases) <= 220
    assert all(e["previousId"] != e["userId"] and e["userId"].startswith("u_") for e in aliases)
    assert 200 <= len(groups) <= 400
    for event in groups:
        assert re.fullmatch(r"acct_\d{3,}", event["groupId"])
        assert set(event["traits"]) == {"name", "industry", "employees"}


def test_orders_have_positive_revenue_and_consistent_lines(good: list[dict[str, Any]]) -> None:
    # Given the completed orders
    orders = [e for e in good if e["type"] == "track" and e["event"] == "Order Completed"]
    assert len(orders) > 1000
    per_user = Counter(e["userId"] for e in orders)
    for event in orders:
        props = event["properties"]
        # Then the revenue is positive, with 2 decimals, and the sum of the lines
        assert props["revenue"] > 0 and round(props["revenue"], 2) == props["revenue"]
        assert props["currency"] == "USD" and props["order_id"]
        lines = props["products"]
        assert lines and all(set(line) == {"sku", "price", "quantity"} for line in lines)
        assert sum(line["price"] * line["quantity"] for line in lines) == pytest.approx(props["revenue"])
        # And orders belong to identified users
        assert event["userId"]
    # And some customers buy again, none more than 12 times
    assert max(per_user.values()) <= 12
    assert sum(n > 1 for n in per_user.values()) > 200
    revenues = sorted(e["properties"]["revenue"] for e in orders)
    assert 30 <= revenues[len(revenues) // 2] <= 100


def test_some_identified_customers_churn(good: list[dict[str, Any]]) -> None:
    # Given the last activity of each user
    last: dict[str, str] = {}
    for event in good:
        if "userId" in event:
            last[event["userId"]] = max(last.get(event["userId"], ""), event["timestamp"])
    # When looking at the last 30 days
    cutoff = (END - timedelta(days=30)).isoformat()
    quiet = sum(ts < cutoff for ts in last.values())
    # Then a sizeable share has gone quiet, but not most
    assert 0.15 <= quiet / len(last) <= 0.6


def test_all_track_event_names_are_known(good: list[dict[str, Any]]) -> None:
    # Given the track events
    names = Counter(e["event"] for e in good if e["type"] == "track")
    # Then they are the documented ones, each present
    assert set(names) == {
        "Order Completed",
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Support Ticket Opened",
    }
