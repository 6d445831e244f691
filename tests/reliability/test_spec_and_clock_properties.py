"""Property tests for the spec compiler and the clock-skew correction.

* A random valid trait compiles, its SQL runs in DuckDB, and its value for every customer equals
  what a plain-Python reading of the trait's definition gives on the same events — values that are no
  number under the numeric rule (``"1,234.50"``, ``" 12"``, ``"NaN"``, beyond 1e15) included, which the
  trait leaves out and counts as invalid.
* ``timestamp = receivedAt − (sentAt − originalTimestamp)`` undoes any client clock skew exactly,
  keeps the order of a batch's events, and never fails on a valid pair of client times.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import duckdb
import pytest
import yaml
from customer_context.assemble.compiler import MAX_MAGNITUDE, NUMBER_PATTERN, compile_traits
from customer_context.collect.service import stamp
from customer_context.spec import DEFAULT_SPEC, ContextSpec, duration_seconds
from customer_context.sql_text import lit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

AS_OF = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BASE = yaml.safe_load(DEFAULT_SPEC.read_text())
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------- the compiler

PROPERTIES = ("properties.amount", "properties.category", "event")
KINDS = ("count", "sum", "avg", "min", "max", "first_value", "last_value", "first_time", "last_time",
         "most_frequent", "unique_list", "unique_count", "exists")
VALUELESS = ("count", "exists", "first_time", "last_time")


@st.composite
def traits(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    trait: dict[str, Any] = {"description": "random", "kind": kind,
                             "window": draw(st.sampled_from(["all", "1d", "7d", "30d"]))}
    if kind not in VALUELESS:
        trait["property"] = draw(st.sampled_from(PROPERTIES))
    where: dict[str, Any] = {}
    if draw(st.booleans()):
        where["event"] = draw(st.lists(st.sampled_from(["Viewed", "Bought", "Left"]), min_size=1, max_size=2,
                                       unique=True))
    if draw(st.booleans()):
        op = draw(st.sampled_from(["gt", "gte", "lt", "lte", "eq", "ne"]))
        where["properties"] = {"amount": {op: draw(st.integers(-5, 30))}}
    if draw(st.booleans()):
        where["properties"] = {**where.get("properties", {}), "category": draw(st.sampled_from(["x", "y"]))}
    if where:
        trait["where"] = where
    if kind == "unique_list":
        trait["limit"] = draw(st.integers(1, 4))
    return trait


events = st.lists(st.fixed_dictionaries({
    "profile_id": st.sampled_from(["p1", "p2", "p3"]),
    "event": st.sampled_from(["Viewed", "Bought", "Left"]),
    "amount": st.one_of(st.none(), st.integers(-10, 40), st.integers(-10, 40).map(str),
                        st.sampled_from(["12.50", "-3", "1e1", "2.5E-1", "1,234.50", " 12", "+5", "1_000", "0x10",
                                         ".5", "NaN", "Infinity", "1e400", "abc", "٣", "", "true"]),
                        st.sampled_from([1e15, -1e15, 1.5e15, 1e300, 2.5])),
    "category": st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
    # minutes before AS_OF, up to ~40 days; a few share a timestamp
    "minutes": st.integers(0, 60 * 24 * 40).map(lambda m: m - m % 7),
}), min_size=1, max_size=30)


def _spec(trait: dict[str, Any]) -> ContextSpec:
    data = dict(BASE)
    data["traits"] = {"t": trait}
    data.pop("queries", None)  # they may name the default traits' tables; this spec is about one trait
    return ContextSpec.model_validate(data)


def _value(row: dict[str, Any], path: str) -> str | None:
    if path == "event":
        return row["event"]
    raw = row[path.split(".", 1)[1]]
    return None if raw is None else str(raw)


def _number(text: str | None) -> float | None:
    """The numeric rule, read from its definition: a decimal number's text, magnitude at most 1e15."""
    if text is None or not re.fullmatch(NUMBER_PATTERN, text) or abs(float(text)) > MAX_MAGNITUDE:
        return None
    return float(text)


def _invalid(rows: list[dict[str, Any]], trait: dict[str, Any]) -> int:
    """Events the trait meets (all but its numeric conditions hold) whose value or numeric condition's value is
    there and no number."""
    numeric_value = trait["kind"] in ("sum", "avg", "min", "max")
    conditions = trait.get("where", {}).get("properties", {})
    numeric_keys = [k for k, c in conditions.items() if not isinstance(c, str)]
    plain = {**trait, "where": {**trait.get("where", {}),
                                "properties": {k: c for k, c in conditions.items() if isinstance(c, str)}}}
    paths = [f"properties.{k}" for k in numeric_keys] + ([trait["property"]] if numeric_value else [])
    return sum(1 for r in rows if _passes(r, plain) and any(
        (v := _value(r, p)) is not None and _number(v) is None for p in paths))


def _passes(row: dict[str, Any], trait: dict[str, Any]) -> bool:
    window = duration_seconds(trait["window"])
    if window is not None and row["ts"] < AS_OF - timedelta(seconds=window):
        return False
    where = trait.get("where", {})
    if "event" in where and row["event"] not in where["event"]:
        return False
    for key, cond in where.get("properties", {}).items():
        text = _value(row, f"properties.{key}")
        if isinstance(cond, str):
            if text != cond:
                return False
            continue
        (op, bound), = cond.items()
        number = _number(text)
        if number is None:
            return False
        if not {"gt": number > bound, "gte": number >= bound, "lt": number < bound, "lte": number <= bound,
                "eq": number == bound, "ne": number != bound}[op]:
            return False
    return True


def _round4(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def _expected(rows: list[dict[str, Any]], trait: dict[str, Any]) -> Any:
    """The trait's value for one customer's events, read from its definition in plain Python."""
    kind = trait["kind"]
    kept = [r for r in rows if _passes(r, trait)]
    if kind == "count":
        return len(kept)
    if kind == "exists":
        return bool(kept)
    if kind in ("first_time", "last_time"):
        if not kept:
            return None
        at = (min if kind == "first_time" else max)(r["ts"] for r in kept)
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    pairs = [(r["ts"], v) for r in kept if (v := _value(r, trait["property"])) is not None]
    values = [v for _, v in pairs]
    if kind in ("sum", "avg"):
        numbers = [Decimal(v) for v in values if _number(v) is not None]
        if not numbers:
            return None
        total = sum(numbers, Decimal(0))
        return _round4(total if kind == "sum" else total / len(numbers))
    if kind in ("min", "max"):
        numbers = [n for v in values if (n := _number(v)) is not None]
        return round((min if kind == "min" else max)(numbers), 4) if numbers else None
    if kind == "first_value":
        return min(pairs)[1] if pairs else None
    if kind == "last_value":
        return max(pairs)[1] if pairs else None
    if kind == "unique_count":
        return len(set(values))
    if kind == "unique_list":
        return sorted(set(values))[: trait.get("limit", 10)]
    if kind == "most_frequent":
        counts = Counter(values)
        frequent = [(-n, v) for v, n in counts.items() if n >= 2]
        return min(frequent)[1] if frequent else None
    raise AssertionError(kind)


def _computed(spec: ContextSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    con = duckdb.connect()
    con.execute("CREATE TABLE events_profiled (profile_id VARCHAR, type VARCHAR, event VARCHAR, "
                "timestamp TIMESTAMPTZ, properties VARCHAR, traits VARCHAR, context VARCHAR)")
    con.executemany("INSERT INTO events_profiled VALUES (?, 'track', ?, ?, ?, NULL, '{}')", [
        [r["profile_id"], r["event"], r["ts"],
         json.dumps({k: r[k] for k in ("amount", "category") if r[k] is not None})] for r in rows])
    queries = compile_traits(spec)
    values: dict[str, Any] = {}
    for sql in [*queries.grouped.values(), *queries.separate.values()]:
        result = con.execute(sql.replace("$as_of", lit(AS_OF)))
        names = [d[0] for d in result.description]
        for row in result.fetchall():
            for column, key in (("t", row[0]), ("value", row[0]), ("_invalid_t", ("invalid", row[0]))):
                if column in names:
                    values[key] = row[names.index(column)]
    con.close()
    if "t" in queries.zero_default:  # as the build does: 0, FALSE or [] where no row counted
        zero = {"count": 0, "unique_count": 0, "exists": False, "unique_list": []}[spec.traits["t"].kind]
        values = {p: zero if v is None and isinstance(p, str) else v for p, v in values.items()}
    return values


@settings(SETTINGS, max_examples=60)
@given(traits(), events)
def test_a_random_trait_computes_what_its_definition_says(trait: dict[str, Any], raw: list[dict[str, Any]]) -> None:
    spec = _spec(trait)
    rows = [{**r, "ts": AS_OF - timedelta(minutes=r["minutes"])} for r in raw]
    computed = _computed(spec, rows)
    for profile in sorted({r["profile_id"] for r in rows}):
        expected = _expected([r for r in rows if r["profile_id"] == profile], trait)
        got = computed.get(profile)
        if trait["kind"] in ("sum", "avg", "min", "max") and got is not None and expected is not None:
            assert got == pytest.approx(expected, abs=1e-9), (trait, profile)
        else:
            assert got == expected, (trait, profile)
        # … and the values it met and could not read are counted (the build report sums these)
        assert computed.get(("invalid", profile), 0) == _invalid([r for r in rows if r["profile_id"] == profile],
                                                                 trait), (trait, profile)


# ---------------------------------------------------------------------------------- the clock

def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1),
                        timezones=st.just(UTC)).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
skews = st.integers(-20 * 365 * 86400 * 1000, 20 * 365 * 86400 * 1000).map(lambda ms: timedelta(milliseconds=ms))


@SETTINGS
@given(instants, skews, st.lists(st.integers(0, 86_400_000), min_size=1, max_size=5),
       st.integers(0, 5_000))
def test_skew_correction_recovers_the_true_time_and_keeps_the_order(
        sent: datetime, skew: timedelta, ages_ms: list[int], latency_ms: int) -> None:
    # Given a client whose clock is off by `skew`, sending events that happened `ages` before it sent them
    received = sent + timedelta(milliseconds=latency_ms)
    true_times = [sent - timedelta(milliseconds=a) for a in ages_ms]
    items = [{"type": "track", "event": "e", "userId": "u", "originalTimestamp": _iso(t + skew)} for t in true_times]
    for item in items:
        stamp(item, source_id="s", received_at=received, batch_sent_at=_iso(sent + skew), source_ip=None)
    # Then each timestamp is the true time, shifted only by the network latency, whatever the skew
    stamped = [datetime.fromisoformat(i["timestamp"].replace("Z", "+00:00")) for i in items]
    assert stamped == [t + timedelta(milliseconds=latency_ms) for t in true_times]
    # … the batch keeps its order, and the client's own times are kept as sent
    assert sorted(range(len(items)), key=lambda k: (stamped[k], k)) == \
        sorted(range(len(items)), key=lambda k: (true_times[k], k))
    assert [i["originalTimestamp"] for i in items] == [_iso(t + skew) for t in true_times]


@SETTINGS
@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)), instants)
def test_any_pair_of_valid_client_times_gives_a_valid_timestamp(original: datetime, sent: datetime,
                                                                 received: datetime) -> None:
    # extreme pairs (year 1 against year 9999) push the correction off the calendar: the client's time is kept
    item = {"type": "track", "event": "e", "userId": "u", "originalTimestamp": original.isoformat(),
            "sentAt": sent.isoformat()}
    stamp(item, source_id="s", received_at=received, batch_sent_at=None, source_ip=None)
    at = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00"))
    assert at.tzinfo is not None
    assert item["receivedAt"] and item["messageId"]
