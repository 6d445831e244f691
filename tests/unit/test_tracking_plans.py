"""Tracking plans: schema violations rejected with the path, or flagged, per setting; unplanned events."""

from __future__ import annotations

import pytest
from customer_context.collect.plans import TrackingPlans
from customer_context.errors import ConfigError
from customer_context.spec import DEFAULT_SPEC, parse_spec

from tests.unit.test_collect_service import queued, request, run

PLAN = """
tracking_plans:
  web:
    allow_unplanned_events: false
    on_violation: {invalid_traits: flag}
    events:
      Order Completed:
        properties:
          type: object
          required: [revenue]
          properties:
            revenue: {type: number, minimum: 0}
            currency: {type: string, enum: [USD, EUR]}
      Viewed: {}
    identify_traits:
      type: object
      properties:
        email: {type: string, format: email}
"""


def plans() -> TrackingPlans:
    return TrackingPlans(parse_spec(DEFAULT_SPEC.read_text() + PLAN))


def test_violations_are_rejected_with_the_schema_path_or_flagged() -> None:
    checked = plans()
    batch = {"batch": [
        {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": "ten"}},
        {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 10, "currency": "USD"}},
        {"type": "track", "userId": "u1", "event": "Refund Requested", "properties": {}},
        {"type": "identify", "userId": "u1", "traits": {"email": "not an email"}},
        {"type": "page", "userId": "u1", "name": "Home"},
    ]}
    from customer_context.collect.service import collect
    from customer_context.stores.queue import MemoryEventQueue

    from tests.unit.test_collect_service import KEYS, LIMITS

    queue = MemoryEventQueue()
    result = collect(request(batch), write_keys=KEYS, queue=queue, spool=None, limits=LIMITS, plans=checked)
    events, rejected = queued(queue)
    reasons = [r.reason for r in result.rejections]
    # Then the bad revenue and the unplanned event are rejected, each naming where and why
    assert reasons == ["tracking plan web: event 'Order Completed': properties.revenue must be number",
                       "tracking plan web: event 'Refund Requested' is not in the plan"]
    assert [r["reason"] for r in rejected] == reasons
    # And the bad trait is accepted but flagged, the valid order and the page pass untouched
    assert result.accepted == 3 and result.flagged == 1 and result.plan_violations == 3
    identify = next(e for e in events if e["type"] == "identify")
    assert identify["context"]["violationErrors"] == [
        {"type": "invalid_traits", "message": "tracking plan web: identify: traits.email must be email"}]
    assert "violationErrors" not in (next(e for e in events if e["type"] == "track").get("context") or {})
    assert checked.violations[("web", "Order Completed", "invalid_properties")] == 1


def test_sources_without_a_plan_pass_everything() -> None:
    result, _ = run(request({"batch": [{"type": "track", "userId": "u", "event": "Anything"}]}))
    assert result.accepted == 1
    assert not TrackingPlans(parse_spec(DEFAULT_SPEC.read_text()))


def test_an_invalid_schema_is_a_spec_error_naming_the_path() -> None:
    bad = PLAN.replace("revenue: {type: number, minimum: 0}", "revenue: {type: numbr}")
    with pytest.raises(ConfigError, match="tracking_plans.web: events.Order Completed.properties: not a valid JSON"):
        parse_spec(DEFAULT_SPEC.read_text() + bad)


def test_plans_report_counts_rejected_and_flagged_per_source_and_event(lakehouse: object, tmp_path: object,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from customer_context.collect.ingest import Rows, rows_from_message, write_rows
    from customer_context.collect.service import collect
    from customer_context.stores.queue import MemoryEventQueue
    from customer_context_devtools.cli import main

    from tests.unit.test_collect_service import KEYS, LIMITS

    # Given a batch that violates the plan in every way, collected and ingested
    queue = MemoryEventQueue()
    batch = {"batch": [
        {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": "ten"}},
        {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": -1}},
        {"type": "track", "userId": "u1", "event": "Refund Requested"},
        {"type": "identify", "userId": "u1", "traits": {"email": "nope"}},
    ]}
    collect(request(batch), write_keys=KEYS, queue=queue, spool=None, limits=LIMITS, plans=plans())
    rows = Rows()
    for body in queue.bodies:
        part = rows_from_message(body, None)
        rows.events += part.events
        rows.rejected += part.rejected
    write_rows(lakehouse, rows)
    # When the report runs
    assert main(["plans", "report", "--json", "--data-dir", str(tmp_path / "data")]) == 0
    report = {(r["source_id"], r["event"], r["kind"], r["action"]): r["violations"]
              for r in json.loads(capsys.readouterr().out)}
    # Then every violation is counted where it happened
    assert report == {("web", "Order Completed", "invalid_properties", "rejected"): 2,
                      ("web", "Refund Requested", "unplanned_event", "rejected"): 1,
                      ("web", "identify", "invalid_traits", "flagged"): 1}
