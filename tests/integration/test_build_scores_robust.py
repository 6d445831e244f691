"""Scores robust to one bad customer: a customer whose purchases the models cannot take (a revenue that is no
positive number in the base currency, a time that is not trusted) is left out of the fits and gets null scores;
nobody else's scores change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from customer_context.assemble.build import BuildReport, build_context
from customer_context.config import Settings
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore
from customer_context.stores.iceberg import Lakehouse

from tests.helpers.lake import AS_OF, established_shop, ev, order, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())


def scored(folder: Path, events: list[dict[str, Any]]) -> tuple[BuildReport, dict[str, dict[str, Any]]]:
    """A build over a new lakehouse under ``folder`` holding ``events``: the report, and each customer's scores."""
    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(folder)}))
    write_events(lakehouse, events)
    store = MemoryContextStore()
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    docs = [json.loads(i["doc"]) for k, i in store.items.items() if k[1] == "snapshot"]
    return report, {d["profile"]["identifiers"]["user_id"][0]: d["scores"] for d in docs}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildReport, dict[str, dict[str, Any]]]:
    """The established shop's scores, without the bad customer."""
    return scored(tmp_path_factory.mktemp("baseline"), established_shop())


NULL_SCORES = {"churn_risk": None, "p_alive": None, "expected_orders_365d": None, "ltv_365d": None,
               "repeat_purchases": None}


@pytest.mark.parametrize(("repeat", "reason"), [
    (order("bad", 20, -30), "invalid_revenue"),
    (order("bad", 20, 0), "invalid_revenue"),
    (order("bad", 20), "invalid_revenue"),                      # no revenue
    (order("bad", 20, "1,234.50"), "invalid_revenue"),
    (order("bad", 20, "NaN"), "invalid_revenue"),
    (order("bad", 20, 1e308), "invalid_revenue"),
    (order("bad", 20, 50, properties={"currency": "XYZ"}), "invalid_revenue"),  # no rate to the base currency
    ({**order("bad", 20, 50), "timestamp": "9999-12-31T00:00:00Z"}, "flagged_time"),
    ({**order("bad", 20, 50), "timestamp": "0001-01-01T00:00:00Z"}, "flagged_time"),
    ({**order("bad", 20, 50), "timestamp": "1970-01-01T00:00:00Z"}, "flagged_time"),
], ids=["negative", "zero", "missing", "thousands separator", "NaN text", "1e308", "unknown currency", "year 9999",
        "year 1", "1970"])
def test_one_bad_repeat_order_changes_nobody_elses_scores(tmp_path: Path, baseline: Any, repeat: dict[str, Any],
                                                          reason: str) -> None:
    before_report, before = baseline
    assert "p" in before_report.scores["gamma_gamma"]
    # Given the established shop and one more customer whose repeat order the models cannot take
    report, after = scored(tmp_path, [*established_shop(), order("bad", 40, 25), repeat])
    # Then everyone else has a lifetime value (Gamma-Gamma was skipped for all) …
    assert "p" in report.scores["gamma_gamma"]
    assert all(s["ltv_365d"] is not None for c, s in after.items() if c != "bad")
    # … both models are fitted as before, and every other customer's scores are exactly what they were
    assert report.scores["bgnbd"] == before_report.scores["bgnbd"]
    assert report.scores["gamma_gamma"] == before_report.scores["gamma_gamma"]
    assert {c: s for c, s in after.items() if c != "bad"} == before
    # … the bad customer's own scores are null, and the report says why they were left out
    assert after["bad"] == NULL_SCORES
    assert report.scores["left_out"] == {reason: 1}
    assert report.scores["buyers"] == before_report.scores["buyers"]


def test_a_fit_still_needs_enough_good_customers(tmp_path: Path) -> None:
    # Given 40 customers whose every purchase has a revenue in an unknown currency
    events = [{**e, "properties": {**e["properties"], "currency": "XYZ"}} for e in established_shop()]
    report, after = scored(tmp_path, [*events, ev("identify", 1, userId="nobody")])
    # Then nobody can be fitted: scores are skipped, saying how many were left out
    assert report.scores["skipped"].startswith("0 buyers")
    assert report.scores["left_out"] == {"invalid_revenue": 40}
    assert all(s == NULL_SCORES for s in after.values())
