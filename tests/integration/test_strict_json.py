"""Strict JSON in and out: NaN and Infinity are never stored as numbers and never served.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e400`` as non-finite floats and writes them back
as tokens strict parsers refuse; DuckDB's ``TRY_CAST('Infinity' AS DOUBLE)`` gives one too. Every
answer here is parsed with ``parse_constant`` raising, as a strict client would.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from customer_context import envelope, strict_json, wiring
from customer_context.api import json_response
from customer_context.assemble.build import build_context
from customer_context.collect.ingest import rows_from_message
from customer_context.collect.service import Limits, TrackingRequest, collect
from customer_context.serve.consumers import Consumer
from customer_context.serve.fetch import ContextService
from customer_context.serve.mcp import handle_mcp
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore, SnapshotItem
from customer_context.stores.keys import StaticWriteKeys
from customer_context.stores.queue import MemoryEventQueue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.lake import AS_OF, ev, write_events

EVERYONE = Consumer("all", frozenset({"*"}))
BIG_ORDERS = """
  big_orders:
    description: Orders above 100
    kind: count
    where: {type: track, event: Order Completed, properties: {revenue: {gt: 100}}}
"""


def _refuse(token: str) -> Any:
    raise ValueError(f"not strict JSON: {token}")


def strict(text: str | bytes) -> Any:
    """Parse as a strict JSON client does (NaN / Infinity refused)."""
    return json.loads(text, parse_constant=_refuse)


def test_revenue_infinity_is_neither_counted_nor_served(lakehouse: Any) -> None:
    # Given orders whose revenue is the text "Infinity", "-Infinity", "NaN" or "1e400", and one of 25
    spec = parse_spec(DEFAULT_SPEC.read_text().replace("\nscores:", BIG_ORDERS + "\nscores:", 1))
    order = lambda rev: ev("track", 1, userId="u1", event="Order Completed", properties={"revenue": rev})  # noqa: E731
    write_events(lakehouse, [order(v) for v in ("Infinity", "-Infinity", "NaN", "1e400", "inf", 25)])
    store = MemoryContextStore()
    # When the build runs and the customer is fetched
    build_context(lakehouse, store, spec, as_of=AS_OF)
    doc = strict(store.get_snapshot(store.resolve("user_id", "u1"))["doc"])
    # Then no non-finite number counts, is summed or is stored
    assert doc["traits"]["largest_order"] == 25
    assert doc["traits"]["big_orders"] == 0
    assert doc["traits"]["revenue_90d"] == 25
    # and the answer is strict JSON
    result = ContextService(store, spec).fetch("user_id", "u1", EVERYONE)
    assert strict(json_response(200, result.body).body)["context"]["traits"]["largest_order"] == 25


def test_a_stored_non_finite_number_is_served_as_null() -> None:
    # Given a snapshot written by an older build with Infinity and NaN in it
    store = MemoryContextStore()
    doc = '{"profile_id":"p1","traits":{"largest_order":Infinity,"revenue_90d":NaN,"orders_90d":2}}'
    store.put_snapshots([SnapshotItem("p1", doc, "h", 1, "2026-11-24T12:00:00+00:00", None)])
    store.put_aliases([("user_id", "u1", "p1")])
    spec = parse_spec(DEFAULT_SPEC.read_text())
    # When it is fetched as JSON
    result = ContextService(store, spec).fetch("user_id", "u1", EVERYONE)
    traits = strict(json_response(200, result.body).body)["context"]["traits"]
    # Then a strict client reads it, the non-finite numbers as null
    assert traits == {"largest_order": None, "revenue_90d": None, "orders_90d": 2}


LIMITS = Limits(max_request_bytes=1 << 20, max_event_bytes=64 * 1024, max_message_bytes=256 * 1024)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-2.5e999"])
def test_an_event_holding_a_non_json_number_is_rejected_and_the_others_kept(token: str) -> None:
    # Given a batch (as Python SDKs send with json.dumps' defaults) where one event holds NaN or Infinity
    body = ('{"batch": [{"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "bad",'
            f' "properties": {{"revenue": {token}, "items": [1, {token}]}}}},'
            ' {"type": "track", "event": "Viewed", "userId": "u1", "messageId": "good", "properties": {"x": 1.5}}]}')
    queue = MemoryEventQueue()
    request = TrackingRequest("batch", body.encode(), {"authorization": "Basic d2s6"}, None, "r1",
                              datetime(2026, 11, 24, tzinfo=UTC))
    # When collect takes it
    result = collect(request, write_keys=StaticWriteKeys({"wk": "web"}), queue=queue, spool=None, limits=LIMITS)
    # Then that event is rejected with the field and the reason, and the other one accepted
    assert result.accepted == 1
    [rejection] = result.rejections
    assert rejection.index == 0 and rejection.reason.startswith("properties.revenue: ")
    assert "not a JSON number" in rejection.reason
    # and what is queued, then written by ingest, is strict JSON
    for message in queue.bodies:
        strict(message)
        rows = rows_from_message(message, None)
        for row in rows.events:
            assert row["message_id"] == "good" and strict(row["properties"]) == {"x": 1.5}
        for row in rows.rejected:
            assert "not a JSON number" in row["reason"]
            assert strict(row["raw"])["properties"]["revenue"] is None


def test_ingest_rejects_a_non_finite_number_from_another_producer() -> None:
    # Given a queue message (not from collect) with an event holding NaN, and a good one
    stamped = {"receivedAt": "2026-11-24T12:00:00Z", "sourceId": "other"}
    good = json.dumps({"type": "track", "event": "x", "userId": "u1", "messageId": "m1", **stamped})
    bad = json.dumps({"type": "track", "event": "x", "userId": "u1", "messageId": "m2", **stamped,
                      "properties": {"score": float("nan")}})
    assert "NaN" in bad
    rows = rows_from_message(envelope.body_of([good, bad], []), None)
    # Then the good event is a row, the other a rejection naming the field; no JSON column holds NaN
    assert [r["message_id"] for r in rows.events] == ["m1"]
    assert rows.rejected[0]["reason"].startswith("properties.score: NaN is not a JSON number")
    assert strict(rows.rejected[0]["raw"])["properties"] == {"score": None}


def test_request_bodies_with_non_json_numbers_are_refused() -> None:
    # MCP and named-query bodies are read strictly
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        strict_json.loads(b'{"a": NaN}')
    with pytest.raises(ValueError, match=r"b\[1\]: Infinity is not a JSON number"):
        strict_json.loads('{"b": [1, 1e999]}')
    status, body, _ = handle_mcp(b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": Infinity}}', {},
                                 EVERYONE, context_service=wiring.context_service)
    assert status == 400 and "not a JSON number" in strict(json.dumps(body))["error"]["message"]


# ---------------------------------------------------------------------------------- every answer

NUMBERS = st.floats(allow_nan=True, allow_infinity=True)
VALUES = st.recursive(st.none() | st.booleans() | NUMBERS | st.integers() | st.text(max_size=10),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(traits=st.dictionaries(st.sampled_from(["orders_90d", "largest_order", "plan", "revenue_90d"]), VALUES),
       scores=st.dictionaries(st.sampled_from(["churn_risk", "p_alive", "ltv_365d"]), NUMBERS))
def test_every_answer_is_strict_json(traits: dict[str, Any], scores: dict[str, float], monkeypatch: Any) -> None:
    # Given a stored snapshot holding any values (non-finite numbers included, as an older build wrote them)
    store = MemoryContextStore()
    doc = json.dumps({"profile_id": "p1", "profile": {"identifiers": {"user_id": ["u1"]}}, "traits": traits,
                      "scores": scores})
    store.put_snapshots([SnapshotItem("p1", doc, "h", 1, "2026-11-24T12:00:00+00:00", None)])
    store.put_aliases([("user_id", "u1", "p1")])
    service = ContextService(store, parse_spec(DEFAULT_SPEC.read_text()))
    # When it is fetched, fetched in a batch, and read through MCP
    one = json_response(200, service.fetch("user_id", "u1", EVERYONE).body).body
    many = json_response(200, service.fetch_many([{"type": "user_id", "value": "u1"}], EVERYONE)).body
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "get_customer_context", "arguments": {"identifier_type": "user_id",
                                                                      "identifier_value": "u1", "format": "json"}}}
    status, answer, _ = handle_mcp(json.dumps(call).encode(), {}, EVERYONE, context_service=lambda: service)
    # Then every answer parses as strict JSON, the MCP tool's text included
    assert status == 200
    for text in (one, many, json_response(200, answer).body):
        strict(text)
    strict(answer["result"]["content"][0]["text"])
    # and every finite number is served as it was stored
    served = strict(one)["context"]["traits"]
    for name, value in traits.items():
        if isinstance(value, float) and math.isfinite(value):
            assert served[name] == value
