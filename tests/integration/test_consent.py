"""Consent: events carry it as the SDKs send it; gated traits and sections follow the latest state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.errors import ConfigError
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

CONSENT = """
consent:
  personalization:
    description: Use of browsing behaviour to personalise answers
    ids: [personalization, Personalization, C0004]
"""


def spec_with_consent() -> Any:
    text = DEFAULT_SPEC.read_text().replace(
        "    kind: most_frequent\n    property: properties.category\n",
        "    kind: most_frequent\n    property: properties.category\n    consent: personalization\n", 1)
    text = text.replace("    - name: recent_events\n      description: The customer's latest raw events, newest first",
                        "    - name: recent_events\n      description: The customer's latest raw events, newest first\n"
                        "      consent: personalization")
    return parse_spec(text + CONSENT)


def viewed(days: float, user: str, category: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    return ev("track", days, userId=user, event="Product Viewed", properties={"category": category},
              **({"context": context} if context else {}))


SEGMENT_YES = {"consent": {"categoryPreferences": {"Personalization": True}}}
SEGMENT_NO = {"consent": {"categoryPreferences": {"Personalization": False}}}
RUDDER_NO = {"consentManagement": {"deniedConsentIds": ["C0004"], "allowedConsentIds": ["C0001"]}}
RUDDER_YES = {"consentManagement": {"allowedConsentIds": ["C0004"], "deniedConsentIds": []}}


def build(lakehouse: Any, events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    write_events(lakehouse, events)
    store = MemoryContextStore()
    build_context(lakehouse, store, spec_with_consent(), as_of=AS_OF)
    return {u: json.loads(store.get_snapshot(store.resolve("user_id", u))["doc"]) for u in ("ann", "bob", "cy")}


def test_consent_gates_traits_and_sections(lakehouse: Any) -> None:
    docs = build(lakehouse, [
        # ann consented (Segment), then withdrew (RudderStack's consent manager)
        viewed(5, "ann", "shoes", SEGMENT_YES), viewed(4, "ann", "shoes", SEGMENT_YES),
        viewed(1, "ann", "hats", RUDDER_NO),
        # bob's events say nothing: the category's default (granted) applies
        viewed(3, "bob", "books"), viewed(2, "bob", "books"),
        # cy browsed without consent, then consented: only the consented view counts
        *(viewed(6 - i, "cy", "socks", SEGMENT_NO) for i in range(3)), viewed(2, "cy", "bags", RUDDER_YES),
        viewed(1, "cy", "bags", RUDDER_YES),
    ])
    ann, bob, cy = docs["ann"], docs["bob"], docs["cy"]
    # Then the latest state is in the profile, and withdrawn consent withholds the gated trait and section
    assert ann["profile"]["consent"] == {"personalization": False}
    assert ann["traits"]["favourite_category"] is None and ann["recent_events"] is None
    assert ann["traits"]["products_viewed_7d"] == 3  # not gated
    assert bob["profile"]["consent"] == {"personalization": True}
    assert bob["traits"]["favourite_category"] == "books" and bob["recent_events"]
    assert cy["profile"]["consent"] == {"personalization": True}
    assert cy["traits"]["favourite_category"] == "bags"  # the two views without consent are left out


def test_an_undeclared_category_is_a_spec_error() -> None:
    text = DEFAULT_SPEC.read_text().replace("    kind: most_frequent\n",
                                            "    kind: most_frequent\n    consent: marketing\n", 1)
    with pytest.raises(ConfigError, match="traits.favourite_category.consent: consent category 'marketing'"):
        parse_spec(text)


def test_withdrawn_consent_also_holds_back_live_events_at_fetch(lakehouse: Any) -> None:
    from customer_context.serve.consumers import Consumer
    from customer_context.serve.fetch import ContextService
    from customer_context.serve.recent import RecentTail

    spec = spec_with_consent()
    write_events(lakehouse, [viewed(2, "ann", "shoes", SEGMENT_YES), viewed(1, "ann", "hats", RUDDER_NO),
                             viewed(1, "bob", "books")])
    store = MemoryContextStore()
    build_context(lakehouse, store, spec, as_of=AS_OF)
    # Given events from both customers collected after the build
    later = "2099-01-01T00:00:00.000Z"
    RecentTail(store, spec, 3600).record([
        {"type": "track", "userId": user, "event": "Cart Viewed", "messageId": f"late-{user}", "receivedAt": later,
         "timestamp": later} for user in ("ann", "bob")])
    service = ContextService(store, spec)
    everything = Consumer("t", frozenset({"*"}))
    ann = service.fetch("user_id", "ann", everything, sections="recent_events").body
    traits = service.fetch("user_id", "ann", everything, fields="traits.favourite_category").body
    assert traits["context"] == {"traits": {"favourite_category": None}}  # type: ignore[index]
    bob = service.fetch("user_id", "bob", everything, sections="recent_events").body
    # Then ann, who withdrew consent, gets none of them; bob gets his
    assert ann["context"]["recent_events"] is None  # type: ignore[index]
    assert bob["context"]["recent_events"][0]["event"] == "Cart Viewed"  # type: ignore[index]


def test_a_consent_gated_named_query_follows_the_latest_consent(lakehouse: Any) -> None:
    from customer_context.serve.named_queries import clear_cache, run_named_query

    clear_cache()
    # (the default spec ends with its queries: this one is added to them)
    spec = parse_spec(DEFAULT_SPEC.read_text() + """
  viewed_categories:
    description: the categories a customer viewed
    consent: personalization
    sql: SELECT json_extract_string(properties, '$.category') AS category FROM events ORDER BY timestamp
""" + CONSENT)
    write_events(lakehouse, [
        viewed(5, "ann", "shoes", SEGMENT_YES), viewed(1, "ann", "hats", RUDDER_NO),
        viewed(3, "bob", "books"), viewed(2, "bob", "pens", SEGMENT_NO), viewed(1, "bob", "cups", RUDDER_YES),
    ])
    store = MemoryContextStore()
    build_context(lakehouse, store, spec, as_of=AS_OF)

    def ask(user: str) -> dict[str, Any]:
        return run_named_query(lakehouse, spec, "viewed_categories", store.resolve("user_id", user), {})

    # ann withdrew: the query answers nothing, and says why
    ann = ask("ann")
    assert ann["rows"] == [] and "personalization" in ann["withheld"]
    # bob's latest event consents: he sees what he viewed with consent (or saying nothing, default granted),
    # never the view sent while he had refused
    bob = ask("bob")
    assert "withheld" not in bob
    assert [r["category"] for r in bob["rows"]] == ["books", "cups"]


def test_a_named_query_needs_a_declared_consent_category() -> None:
    with pytest.raises(ConfigError, match=r"queries\.q\.consent: consent category .ads."):
        parse_spec(DEFAULT_SPEC.read_text() + "\n  q:\n    description: d\n    consent: ads\n"
                   "    sql: SELECT 1 FROM events\n")
