"""A snapshot over its byte budget is truncated (least important sections first, marked), never dropped."""

from __future__ import annotations

import json
from typing import Any

from customer_context.assemble.build import build_context, fit_to_budget
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events


def test_fit_to_budget_halves_lists_then_drops_sections() -> None:
    doc = json.dumps({"profile_id": "p1", "profile": {"identifiers": {"user_id": ["u"]}}, "traits": {"a": 1},
                      "recent_events": [{"x": "y" * 100}] * 40, "interactions": [{"body": "b" * 100}] * 10})
    cut, notes = fit_to_budget(doc, 1500)
    data = json.loads(cut)
    assert len(cut.encode()) <= 1500
    assert data["profile_id"] == "p1" and data["traits"] == {"a": 1}
    assert notes[0] == "recent_events: kept 20 of 40" and data["truncated"] == notes
    assert fit_to_budget('{"profile_id":"p"}', 1500) == ('{"profile_id":"p"}', [])


def test_build_truncates_an_oversized_snapshot_instead_of_dropping_it(lakehouse: Any) -> None:
    text = DEFAULT_SPEC.read_text().replace("max_bytes: 350000", "max_bytes: 2500")
    spec = parse_spec(text)
    # Given one customer whose recent events alone are far above a 2,500-byte budget
    write_events(lakehouse, [ev("track", i / 10, event="Product Viewed", userId="heavy",
                                properties={"category": "Home", "note": "n" * 400}) for i in range(30)])
    store = MemoryContextStore()
    report = build_context(lakehouse, store, spec, as_of=AS_OF)
    doc_text = store.get_snapshot(store.resolve("user_id", "heavy"))["doc"]
    doc = json.loads(doc_text)
    # Then it is landed within the budget, with what was cut listed
    assert report.truncated_profiles == 1
    assert len(doc_text.encode()) <= 2500
    assert doc["truncated"] and doc["truncated"][0].startswith("recent_events: kept")
    assert doc["traits"]["products_viewed_7d"] == 30
