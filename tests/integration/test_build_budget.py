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


def test_a_build_rendered_in_slices_lands_the_same_documents(lakehouse: Any, tmp_path: Any,
                                                              monkeypatch: Any) -> None:
    import pyarrow as pa
    from customer_context.assemble import build

    spec = parse_spec(DEFAULT_SPEC.read_text())
    write_events(lakehouse, [e for n in range(12) for e in (
        ev("identify", 5, userId=f"u{n}", anonymousId=f"a{n}", traits={"email": f"u{n}@x.io"}),
        ev("track", 3, userId=f"u{n}", event="Order Completed", properties={"revenue": 10 + n}),
        ev("page", 1, anonymousId=f"a{n}", name="Home"))])
    whole = MemoryContextStore()
    build_context(lakehouse, whole, spec, as_of=AS_OF)
    # When the same data is rendered in slices of a few events each (as a large build is)
    monkeypatch.setattr(build, "EVENTS_PER_SLICE", 5)
    sliced = MemoryContextStore()
    from customer_context import wiring

    monkeypatch.setenv("CUSTOMER_CONTEXT_DATA_DIR", str(tmp_path / "other"))
    wiring.reload_from_environment()
    other = wiring.lakehouse()
    write_events(other, [])  # an empty append creates the table
    for batch in lakehouse.scan("events").to_batches():
        other.append("events", pa.Table.from_batches([batch]))
    report = build_context(other, sliced, spec, as_of=AS_OF)
    # Then every customer's document is the same as rendered whole
    def docs(store: MemoryContextStore) -> dict[str, Any]:
        return {k[0]: {n: v for n, v in json.loads(i["doc"]).items() if n != "built_at"}
                for k, i in store.items.items() if k[1] == "snapshot"}
    assert report.profiles == 12
    assert docs(sliced) == docs(whole)
