"""Event values with one meaning: the numeric rule, currencies, untrusted event times and messageIds sent twice
with different contents, each through a real build over a real lakehouse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

# the shipped spec without scores (they have their own tests): its revenue traits are in USD
TEXT = DEFAULT_SPEC.read_text().replace("min_customers: 30", "min_customers: 1000")
SPEC = parse_spec(TEXT)


def _order(customer: str, days_ago: float, revenue: Any, **properties: Any) -> dict[str, Any]:
    props = {"revenue": revenue, **properties} if revenue is not ... else properties
    return ev("track", days_ago, userId=customer, event="Order Completed", properties=props)


def _traits(store: MemoryContextStore) -> dict[str, dict[str, Any]]:
    docs = [json.loads(i["doc"]) for k, i in store.items.items() if k[1] == "snapshot"]
    return {d["profile"]["identifiers"]["user_id"][0]: d["traits"] for d in docs}


def _build(lakehouse: Any, spec: Any = SPEC) -> tuple[Any, dict[str, dict[str, Any]]]:
    store = MemoryContextStore()
    report = build_context(lakehouse, store, spec, as_of=AS_OF)
    return report, _traits(store)


# ---------------------------------------------------------------------------------- the numeric rule

@pytest.mark.parametrize("text", ["1,234.50", " 12", "+5", "1_000", "0x10", "٣", "NaN", "Infinity", "1e400", "",
                                  "12 USD", "true"])
def test_a_value_that_is_no_number_is_neither_counted_nor_summed_and_is_reported(lakehouse: Any, text: str) -> None:
    # Given a customer with orders of 10 and 20, and one whose revenue is written `text`
    write_events(lakehouse, [_order("u1", 5, 10), _order("u1", 4, 20), _order("u1", 3, text)])
    # When the build runs
    report, traits = _build(lakehouse)
    # Then every numeric trait reads the two numbers only: the sum, the average (of two, not three) and the extremes
    t = traits["u1"]
    assert (t["lifetime_revenue"], t["revenue_90d"], t["average_order_value"], t["largest_order"]) == (30, 30, 15, 20)
    # … the order still counts as an order (orders_90d reads no number), and the report names what was left out
    assert t["orders_90d"] == 3
    assert report.invalid_values == {"lifetime_revenue": 1, "revenue_90d": 1, "average_order_value": 1,
                                     "largest_order": 1, "big_spender_orders": 1}


def test_a_numeric_condition_does_not_count_a_value_that_is_no_number(lakehouse: Any) -> None:
    # Given orders of 200, "1_000" and " 300" (orders over 150 count as big spender orders)
    write_events(lakehouse, [_order("u1", 5, 200), _order("u1", 4, "1_000"), _order("u1", 3, " 300")])
    report, traits = _build(lakehouse)
    # Then only the 200 counts, and the two others are reported for that trait too
    assert traits["u1"]["big_spender_orders"] == 1
    assert report.invalid_values["big_spender_orders"] == 2


def test_numbers_as_json_writes_them_and_plain_decimal_strings_are_read(lakehouse: Any) -> None:
    write_events(lakehouse, [_order("u1", 5, "12.50"), _order("u1", 4, -3), _order("u1", 3, "1e3"),
                             _order("u1", 2, 2.5E-1)])
    report, traits = _build(lakehouse)
    assert traits["u1"]["lifetime_revenue"] == 1009.75
    assert report.invalid_values == {}


def test_sums_cannot_overflow(lakehouse: Any) -> None:
    # Given two orders of 6e28 (their sum overflowed the exact decimal sum and stopped the build) beside a customer
    # with ordinary orders, and one order at the bound
    write_events(lakehouse, [_order("u1", 5, 6e28), _order("u1", 4, 6e28), _order("u1", 3, 7),
                             _order("u2", 3, 40), _order("u3", 2, 1e15), _order("u3", 1, 1e15)])
    # When the build runs, it completes
    report, traits = _build(lakehouse)
    # Then values beyond 1e15 are left out and reported; values at the bound add up exactly
    assert traits["u1"]["lifetime_revenue"] == 7 and traits["u1"]["largest_order"] == 7
    assert traits["u2"]["lifetime_revenue"] == 40
    assert traits["u3"]["lifetime_revenue"] == 2e15
    assert report.invalid_values["lifetime_revenue"] == 2


# ---------------------------------------------------------------------------------- currencies

RATES = TEXT.replace("  rates: {}", "  rates: {EUR: 1.08, JPY: 0.0067}")


def test_a_trait_adds_one_currency_others_converted_or_left_out(lakehouse: Any) -> None:
    # Given 100 USD, 100 JPY, 100 XYZ, 100 "eur " and an order naming no currency
    write_events(lakehouse, [_order("u1", 5, 100, currency="USD"), _order("u1", 4, 100, currency="JPY"),
                             _order("u1", 3, 100, currency="XYZ"), _order("u1", 2, 100, currency="eur "),
                             _order("u1", 1, 100)])
    # When the build runs with rates for EUR and JPY
    report, traits = _build(lakehouse, parse_spec(RATES))
    # Then the USD traits add USD, the converted JPY and EUR, and the order without a currency (assumed USD);
    # XYZ is left out, never added as-is, and reported
    t = traits["u1"]
    assert t["lifetime_revenue"] == pytest.approx(100 + 0.67 + 108 + 100)
    assert t["largest_order"] == 108 and t["average_order_value"] == pytest.approx(308.67 / 4, abs=1e-4)
    assert report.unconverted_values == {"lifetime_revenue": 1, "revenue_90d": 1, "average_order_value": 1,
                                         "largest_order": 1}


def test_without_rates_only_the_traits_currency_is_added(lakehouse: Any) -> None:
    write_events(lakehouse, [_order("u1", 5, 100, currency="USD"), _order("u1", 4, 100, currency="JPY"),
                             _order("u1", 3, 100, currency="XYZ")])
    report, traits = _build(lakehouse)
    assert traits["u1"]["lifetime_revenue"] == 100
    assert report.unconverted_values["lifetime_revenue"] == 2


def test_a_trait_in_another_currency_is_converted_into_it(lakehouse: Any) -> None:
    text = RATES.replace("    unit: USD\n  lifetime_revenue:", "    unit: EUR\n  lifetime_revenue:")
    spec = parse_spec(text)
    assert spec.traits["revenue_90d"].unit == "EUR"
    write_events(lakehouse, [_order("u1", 5, 108, currency="USD"), _order("u1", 4, 10, currency="EUR")])
    _, traits = _build(lakehouse, spec)
    assert traits["u1"]["revenue_90d"] == pytest.approx(110)
    assert traits["u1"]["lifetime_revenue"] == pytest.approx(118.8)


def test_missing_currency_can_be_excluded(lakehouse: Any) -> None:
    spec = parse_spec(TEXT.replace("  missing: assume", "  missing: exclude"))
    write_events(lakehouse, [_order("u1", 5, 100, currency="USD"), _order("u1", 4, 100)])
    report, traits = _build(lakehouse, spec)
    assert traits["u1"]["lifetime_revenue"] == 100
    assert report.unconverted_values["lifetime_revenue"] == 1


def test_a_currency_table_is_checked_when_the_spec_loads() -> None:
    from customer_context.errors import ConfigError

    for bad, reason in (("rates: {EUR: 0}", "rates.EUR: expected a number between"),
                        ("rates: {eur: 1.1}", "three capital letters"),
                        ("rates: {USD: 2}", "rates.USD: the base currency's rate is 1")):
        with pytest.raises(ConfigError, match=reason):
            parse_spec(TEXT.replace("  rates: {}", f"  {bad}"))


# ---------------------------------------------------------------------------------- event times

@pytest.mark.parametrize(("sent", "flag"), [("9999-12-31T00:00:00Z", "future"), ("2026-11-25T12:00:00Z", "future"),
                                            ("0001-01-01T00:00:00Z", "before_earliest"),
                                            ("1970-01-01T00:00:00Z", "before_earliest")])
def test_an_untrusted_event_time_moves_no_window(lakehouse: Any, sent: str, flag: str) -> None:
    # Given a customer's orders 100 and 10 days ago, and an order received 2 days ago but dated `sent` (an SDK
    # without sentAt, or a clock never set)
    received = ev("track", 2)["receivedAt"]
    write_events(lakehouse, [
        _order("u1", 100, 10), _order("u1", 10, 20),
        {**_order("u1", 2, 30), "timestamp": sent, "receivedAt": received},
    ])
    # When the build runs
    report, traits = _build(lakehouse)
    # Then that order counts as received: 2 days ago, inside the 90-day window, not in the future or the past
    t = traits["u1"]
    assert t["days_since_last_order"] == 2 and t["orders_90d"] == 2 and t["revenue_90d"] == 50
    assert t["last_order_at"] == received.replace("Z", ".000Z") and t["first_seen_at"] < t["last_order_at"]
    assert t["first_seen_at"].startswith("2026-08")  # the order 100 days ago, not year 1 or 1970
    # … and the report counts it
    assert report.flagged_times == {flag: 1}


def test_event_time_bounds_come_from_the_spec(lakehouse: Any) -> None:
    # Given an order dated 1995 imported through /v1/import, and one dated 3 hours after it was received
    received = ev("track", 2)["receivedAt"]
    write_events(lakehouse, [
        {**_order("u1", 2, 30), "timestamp": "1995-06-01T00:00:00Z", "receivedAt": received},
        {**_order("u1", 2, 30), "timestamp": ev("track", 2 - 3 / 24)["timestamp"], "receivedAt": received},
    ])
    # When the spec trusts history from 1990 and times up to 4 hours ahead
    text = TEXT.replace("earliest: 2000-01-01", "earliest: 1990-01-01").replace("future_margin: 1h",
                                                                                 "future_margin: 4h")
    report, traits = _build(lakehouse, parse_spec(text))
    # Then both keep their times
    assert report.flagged_times == {}
    assert traits["u1"]["first_seen_at"].startswith("1995-06-01")


# ---------------------------------------------------------------------------------- one messageId, two contents

def test_the_first_received_copy_of_a_message_id_wins_and_the_conflict_is_counted(lakehouse: Any) -> None:
    # Given messageId m-1 received first with revenue 10, then (a second later) with revenue 99
    first = {**_order("u1", 3, 10), "messageId": "m-1"}
    later = {**_order("u1", 3, 99), "messageId": "m-1",
             "receivedAt": ev("track", 3 - 1 / 86400)["receivedAt"]}
    write_events(lakehouse, [later])
    write_events(lakehouse, [first])
    report, traits = _build(lakehouse)
    # Then the first received is the event, and the conflict is counted
    assert traits["u1"]["lifetime_revenue"] == 10
    assert report.conflicting_message_ids == 1


def _winner(tmp_path: Any, order: list[dict[str, Any]], name: str) -> float:
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse

    lake = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(tmp_path / name)}))
    for event in order:
        write_events(lake, [event])  # one commit each: the files' order is the write order
    _, traits = _build(lake)
    return float(traits["u1"]["lifetime_revenue"])


def test_copies_received_at_the_same_instant_have_one_winner_whatever_the_order(tmp_path: Any) -> None:
    # Given two copies of m-2 with the same receivedAt and different revenues (one request, before collect refused
    # the second), written in either order
    copies = [{**_order("u1", 3, revenue), "messageId": "m-2"} for revenue in (10, 99, 40)]
    # Then every layout of the lakehouse keeps the same copy
    winners = {_winner(tmp_path, order, f"lake{i}") for i, order in enumerate(
        (copies, copies[::-1], [copies[1], copies[0], copies[2]]))}
    assert len(winners) == 1
