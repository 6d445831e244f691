"""ingest's fast path (orjson decoding, orjson-written JSON columns, Arrow columns built from tuples)
stores exactly what the plain path stores."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from customer_context import envelope
from customer_context.collect.ingest import (
    EVENT_COLUMNS,
    IngestBatch,
    _plain_json_text,
    rows_from_message,
)
from customer_context.stores.tables import TABLES
from customer_context.strict_json import column_text
from hypothesis import given, settings
from hypothesis import strategies as st

STAMPED = {"receivedAt": "2026-11-24T12:00:00.000Z", "sourceId": "web"}

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text()
           | st.sampled_from([1e-05, 7e-09, 1e-4, 1e16, 1.5e-300, 2**63, 2**64, -(2**63) - 1, 0.00012]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def test_event_columns_are_the_events_schema_in_order() -> None:
    assert tuple(f.name for f in TABLES["events"].schema.as_arrow()) == EVENT_COLUMNS


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_a_plain_decoded_value_is_written_as_json_would(value: Any) -> None:
    # Given any JSON value on the queue (ASCII, as collect sends it)
    body = envelope.dumps({"v": 1, "events": [value]})
    env = envelope.loads(body)
    reference = json.loads(body)["events"][0]
    if env.plain:
        # Then orjson read the same value (ints stay ints) and writes the same text as json
        assert json.dumps(env.events[0]) == json.dumps(reference)
        assert _plain_json_text(env.events[0]) == column_text(reference)
    # And whatever orjson cannot read exactly is read by json (NaN, Infinity, lone surrogates, big ints)
    else:
        assert json.dumps(env.events[0]) == json.dumps(reference)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**64, -(2**63) - 1, "a\ud800"])
def test_values_orjson_would_change_are_decoded_by_json(value: Any) -> None:
    # (NaN and Infinity as another producer than collect may write them: collect never does)
    env = envelope.loads(json.dumps({"v": 1, "events": [{"x": value}]}))
    assert not env.plain
    got = env.events[0]["x"]
    assert got == value or (isinstance(value, float) and math.isnan(got))


@pytest.mark.parametrize("value", [1e-05, 7e-09, -3.9e-08, 0.00001234])
def test_small_floats_keep_json_s_spelling(value: float) -> None:
    assert _plain_json_text({"x": value}) == json.dumps({"x": value}, separators=(",", ":"))


def test_batch_tables_equal_the_rows_the_plain_path_writes() -> None:
    import pyarrow as pa

    # Given messages mixing kinds, extras, nested floats, non-ASCII text, a bad event and a rejection,
    # one decoded by orjson, one that only json reads (an integer beyond 64 bits), and one holding NaN
    # (as another producer than collect may write it): only json reads it, and it is rejected
    events = [
        {"type": "page", "anonymousId": "a1", "messageId": "m1", "name": "Prix", "properties": {
            "url": "https://x/é", "path": "/p", "ratio": 1e-05, "n": [1, 2.5, None]}, "context": {
            "page": {"title": "Prix", "referrer": "r"}, "ip": "1.2.3.4", "library": {"name": "js", "version": 3}},
         "vendor": {"k": True}, "timestamp": "2026-11-24T13:00:00+01:00", **STAMPED},
        {"type": "identify", "userId": 42, "messageId": "m2", "context": {"traits": {"email": "a@b.c"}}, **STAMPED},
        {"type": "track", "userId": "u1", "messageId": "m3", **STAMPED},  # no event name: rejected
        {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m4",
         "properties": {"revenue": 42.5, "big": 12345678901234567}, "sentAt": "2026-11-24T11:00:00Z", **STAMPED},
    ]
    rejection = envelope.dumps({"raw": '{"type":"x"}', "reason": "type: bad", "stage": "collect", **STAMPED})
    bodies = [envelope.body_of([envelope.dumps(e) for e in events], [rejection]),
              envelope.body_of([envelope.dumps({**events[3], "messageId": "m5", "properties": {"x": 2**64}})], []),
              envelope.body_of([json.dumps({**events[3], "messageId": "m6", "properties": {"x": float("nan")}})], [])]
    assert [envelope.loads(b).plain for b in bodies] == [True, False, False]

    class Lake:
        def arrow_schema(self, name: str) -> pa.Schema:
            return TABLES[name].schema.as_arrow()

    # When the batch builds its tables, and the plain path builds rows
    batch = IngestBatch(spool=None)
    for body in bodies:
        batch.add(body)
    tables = dict(batch.tables(Lake()))
    rows = [rows_from_message(b, None) for b in bodies]
    expected = pa.Table.from_pylist([r for part in rows for r in part.events], schema=Lake().arrow_schema("events"))
    # Then both hold the same events, and the same rejection with its reason
    assert tables["events"].equals(expected)
    assert tables["events"].column("message_id").to_pylist() == ["m1", "m2", "m4", "m5"]
    assert json.loads(tables["events"].column("properties")[0].as_py())["ratio"] == 1e-05
    assert tables["events"].column("user_id")[1].as_py() == "42"
    assert tables["rejected_events"].column("reason").to_pylist()[:2] == ["event: Field required", "type: bad"]
    assert tables["rejected_events"].column("reason")[2].as_py().startswith("properties.x: NaN is not a JSON number")
    assert tables["rejected_events"].column("message_id").to_pylist()[2] == "m6"
    assert tables["rejected_events"].to_pylist()[0]["message_id"] == "m3"


field_values = st.sampled_from([None, "", " ", "\t\u3000", " x ", "x", "u" * 1024, "u" * 1025, 5, 1.5, True, {},
                                {"a": 1}, [], ["x"], "2026-11-24T12:00:00Z", "2026-11-24", "bad time",
                                "0001-01-01T00:30+01:00", "9999-12-31T23:59:59-01:00"])
event_keys = ["messageId", "userId", "anonymousId", "groupId", "previousId", "event", "name", "category", "channel",
              "context", "integrations", "properties", "traits", "timestamp", "originalTimestamp", "sentAt"]
USUAL = [
    {"type": "track", "event": "Order Completed", "userId": "u1", "properties": {"revenue": 1}},
    {"type": "identify", "anonymousId": "a1", "traits": {"email": "a@b.c"}, "context": {"ip": "1.2.3.4"}},
    {"type": "page", "userId": "u1", "name": "Pricing", "properties": {"url": "https://x"}},
    {"type": "screen", "anonymousId": "a1", "name": "Cart"},
    {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
    {"type": "alias", "userId": "u1", "previousId": "a1"},
]
DROP = object()


def _mutated(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    event = {**base, "messageId": "m1", "timestamp": "2026-11-24T12:00:00.000Z", **STAMPED, **changes}
    return {k: v for k, v in event.items() if v is not DROP}


# usual events with up to three fields changed (to odd values, or removed): most stay close to valid
events_to_check = st.builds(
    _mutated, st.sampled_from(USUAL),
    st.dictionaries(st.sampled_from([*event_keys, "type"]),
                    field_values | st.just(DROP) | st.sampled_from(["other", "track", "alias"]), max_size=3),
)


@settings(max_examples=2000, deadline=None)
@given(events_to_check)
def test_the_quick_check_only_passes_what_validate_event_passes(event: dict[str, Any]) -> None:
    from customer_context.collect.ingest import _plainly_valid
    from customer_context.models.tracking import validate_event

    if _plainly_valid(event, {}):
        assert validate_event(dict(event)) is None, event


def _row(event: dict[str, Any], plain: bool) -> tuple[Any, ...] | str:
    """The row ingest makes of ``event`` on its quick path (``plain``) or its checked path, or the rejection."""
    import copy

    from customer_context.collect.ingest import _event_values, _plain_json_text, _plain_str, _str

    text, dump = (_plain_str, _plain_json_text) if plain else (_str, column_text)
    try:
        return _event_values(copy.deepcopy(event), text, dump, {}, plain)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        return str(exc)


@settings(max_examples=2000, deadline=None)
@given(events_to_check)
def test_the_quick_path_stores_what_the_checked_path_stores(event: dict[str, Any]) -> None:
    # Given any event close to a usual one (blank and padded identifiers included), as orjson decodes it
    # Then the quick path makes the same row (or the same rejection) as validate_event's path
    assert _row(event, plain=True) == _row(event, plain=False), event


def test_blank_identifiers_are_stored_as_absent() -> None:
    event = _mutated(USUAL[2], {"userId": "", "anonymousId": "a1"})
    for plain in (True, False):
        row = dict(zip(EVENT_COLUMNS, _row(event, plain), strict=True))
        assert (row["user_id"], row["anonymous_id"]) == (None, "a1")
        assert _row(_mutated(USUAL[2], {"userId": " \t", "anonymousId": DROP}), plain) == (
            "userId or anonymousId: at least one is required (userId: blank, so absent)")


@pytest.mark.parametrize("event", USUAL)
def test_the_quick_check_passes_the_usual_events(event: dict[str, Any]) -> None:
    from customer_context.collect.ingest import _plainly_valid

    assert _plainly_valid(_mutated(event, {"sentAt": "2026-11-24T12:00:01Z"}), {})


@pytest.mark.parametrize("plain", [True, False])
def test_an_event_without_message_id_is_rejected_and_the_rest_commits(lakehouse: Any, plain: bool) -> None:
    # Given a foreign producer's message: events with a null or no messageId next to a good one
    # (collect always sets one; the column is required, so one such row used to fail the whole append)
    good = {"type": "track", "event": "x", "userId": "u", "messageId": "m1", **STAMPED}
    null_id = {**good, "messageId": None}
    no_id = {k: v for k, v in good.items() if k != "messageId"}
    extra = [] if plain else [envelope.dumps({**good, "messageId": "m2", "properties": {"x": 2**64}})]  # json reads it
    body = envelope.body_of([envelope.dumps(e) for e in (good, null_id, no_id)] + extra, [])
    assert envelope.loads(body).plain is plain
    # When ingest adds and commits it
    batch = IngestBatch(spool=None)
    batch.add(body)
    written = batch.commit(lakehouse)
    # Then the good events land and the others are rejected with the reason, none lost
    assert written == {"events": 2 - plain, "rejected_events": 2}
    reasons = [r["reason"] for r in lakehouse.scan("rejected_events").to_pylist()]
    assert reasons == ["messageId: missing (not stamped by collect)"] * 2


def test_the_collector_is_paused_for_a_batch_and_restored_after() -> None:
    import gc

    from customer_context.collect.ingest import collector_paused

    assert gc.isenabled()
    try:
        # Given the collector on: paused inside, on again after, even when the batch fails
        with pytest.raises(RuntimeError), collector_paused():
            assert not gc.isenabled()
            raise RuntimeError("append failed")
        assert gc.isenabled()
        # Given it off already (a caller's choice): still off after
        gc.disable()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_events_tables_are_the_same_whatever_the_order_of_the_tables_columns() -> None:
    import pyarrow as pa
    from customer_context.collect.ingest import _events_table

    # Given rows as tuples, and the table's schema as created and with its columns in another order
    batch = IngestBatch(spool=None)
    batch.add(envelope.body_of([envelope.dumps({"type": "track", "event": "Order Completed", "userId": f"u{n}",
                                                "messageId": f"m{n}", "properties": {"n": n}, **STAMPED})
                                for n in range(3)], []))
    schema = TABLES["events"].schema.as_arrow()
    reordered = pa.schema(list(reversed(list(schema))))
    # Then both ways of building the table (one struct array, or column by column) hold the same rows
    same_order, other_order = _events_table(batch.events, schema), _events_table(batch.events, reordered)
    assert other_order.schema.names == reordered.names
    assert other_order.select(schema.names).equals(same_order)
    assert same_order.column("user_id").to_pylist() == ["u0", "u1", "u2"]


def test_every_event_type_has_a_fast_path_read_from_its_model() -> None:
    # the shapes come from models/tracking.py; a field of a kind the fast path does not know turns it off for
    # that type (all its events then go through validate_event), which this would show
    from customer_context.collect.ingest import _SHAPES
    from customer_context.models.tracking import EVENT_MODELS

    assert set(_SHAPES) == set(EVENT_MODELS)
    assert _SHAPES["alias"][1] == ("userId", "previousId")  # its required identifiers
    assert "properties" in _SHAPES["track"][3] and "traits" in _SHAPES["identify"][3]
