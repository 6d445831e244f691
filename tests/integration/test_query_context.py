"""Named queries: one customer's rows only, bound parameters, budgets, cache — on a real lakehouse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.assemble.records import load_file
from customer_context.errors import BudgetExceeded, ConfigError, InvalidRequest, NotFound
from customer_context.serve.named_queries import QueryBudget, clear_cache, run_named_query
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

EXTRA_QUERIES = """
  all_events:
    description: every event the query can see
    sql: SELECT user_id, anonymous_id, event FROM events
  by_event_name:
    description: events with a given name
    params:
      name: {type: string, required: true}
    sql: SELECT event FROM events WHERE event = $name
  try_file:
    description: tries to read files directly
    params:
      path: {type: string, required: true}
    sql: SELECT * FROM read_parquet($path)
  slow:
    description: a query that never ends in time
    sql: SELECT count(*) FROM range(100000000000) a
"""


@pytest.fixture
def world(lakehouse: Any) -> dict[str, Any]:
    """Two customers built into a lakehouse; returns the spec and their profile ids."""
    clear_cache()
    spec = parse_spec(DEFAULT_SPEC.read_text() + EXTRA_QUERIES)
    write_events(lakehouse, [
        ev("identify", 30, userId="ann", anonymousId="dev-a", traits={"email": "ann@example.com"}),
        ev("track", 20, userId="ann", event="Order Completed", properties={"revenue": 10, "order_id": "A1"}),
        ev("track", 2, anonymousId="dev-a", event="Order Completed", properties={"revenue": 30, "order_id": "A2"}),
        ev("page", 1, anonymousId="dev-a", name="Pricing", properties={"path": "/pricing"}),
        ev("identify", 30, userId="bob", traits={"email": "bob@example.com"}),
        ev("track", 3, userId="bob", event="Order Completed", properties={"revenue": 99, "order_id": "B1"}),
        ev("track", 3, userId="bob", event="x' OR 1=1 --"),
    ])
    tickets = (json.dumps({"ticket_id": "T1", "requester_email": "ann@example.com", "channel": "chat",
                           "status": "open", "subject": "Where is A2?", "body": "…",
                           "created_at": "2026-11-20T00:00:00Z", "updated_at": "2026-11-20T00:00:00Z"}) + "\n" +
               json.dumps({"ticket_id": "T2", "requester_email": "bob@example.com", "channel": "email",
                           "status": "open", "subject": "Bob's ticket", "body": "…",
                           "created_at": "2026-11-21T00:00:00Z", "updated_at": "2026-11-21T00:00:00Z"}) + "\n").encode()
    assert load_file(lakehouse, spec, "imports/support_tickets/t.jsonl", tickets).loaded == 2
    store = MemoryContextStore()
    build_context(lakehouse, store, spec, as_of=AS_OF)
    return {"spec": spec, "ann": store.resolve("user_id", "ann"), "bob": store.resolve("user_id", "bob")}


def test_a_query_sees_only_the_customers_own_rows(lakehouse: Any, world: dict[str, Any]) -> None:
    spec = world["spec"]
    # When the broadest possible query runs for ann
    result = run_named_query(lakehouse, spec, "all_events", world["ann"], {})
    # Then it sees her events (by user id and by her device) and nothing of bob's
    assert {r["user_id"] for r in result["rows"]} <= {"ann", None}
    assert {r["anonymous_id"] for r in result["rows"]} <= {"dev-a", None}
    assert result["row_count"] == 4
    tickets = run_named_query(lakehouse, spec, "open_tickets", world["ann"], {})
    assert [r["ticket_id"] for r in tickets["rows"]] == ["T1"]


def test_files_and_other_tables_are_unreachable(lakehouse: Any, world: dict[str, Any], tmp_path: Any) -> None:
    # Given the warehouse's Parquet files on disk, the query cannot read them directly
    files = [str(p) for p in (tmp_path / "data").rglob("*.parquet")]
    assert files
    with pytest.raises(InvalidRequest, match="failed"):
        run_named_query(lakehouse, world["spec"], "try_file", world["ann"], {"path": files[0]})


def test_parameters_are_bound_not_interpolated(lakehouse: Any, world: dict[str, Any]) -> None:
    spec = world["spec"]
    injected = run_named_query(lakehouse, spec, "by_event_name", world["ann"], {"name": "x' OR 1=1 --"})
    assert injected["rows"] == []  # ann has no such event; the text was compared as data
    own = run_named_query(lakehouse, spec, "by_event_name", world["bob"], {"name": "x' OR 1=1 --"})
    assert own["rows"] == [{"event": "x' OR 1=1 --"}]


def test_orders_in_period_with_typed_parameters(lakehouse: Any, world: dict[str, Any]) -> None:
    spec = world["spec"]
    result = run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {"since": "2026-11-01T00:00:00Z"})
    assert [r["order_id"] for r in result["rows"]] == ["A2", "A1"]
    assert [r["revenue"] for r in result["rows"]] == [30.0, 10.0]
    with pytest.raises(InvalidRequest, match="params.since: required"):
        run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {})
    with pytest.raises(InvalidRequest, match="params.since: expected an ISO-8601 date-time"):
        run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {"since": 5})
    with pytest.raises(InvalidRequest, match="params.sinse: not a parameter"):
        run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {"sinse": "2026-01-01"})
    with pytest.raises(NotFound, match="orders_in_period"):
        run_named_query(lakehouse, spec, "nope", world["ann"], {})


def test_scan_budget_is_checked_before_reading(lakehouse: Any, world: dict[str, Any]) -> None:
    with pytest.raises(BudgetExceeded, match=r"scan budget: .* would read [\d,]+ bytes .* limit is 100"):
        run_named_query(lakehouse, world["spec"], "all_events", world["ann"], {}, QueryBudget(max_scan_bytes=100))


def test_time_budget_stops_a_runaway_query(lakehouse: Any, world: dict[str, Any]) -> None:
    import time

    started = time.monotonic()
    with pytest.raises(BudgetExceeded, match="time budget: query 'slow' ran longer than 0.5 s"):
        run_named_query(lakehouse, world["spec"], "slow", world["ann"], {}, QueryBudget(max_seconds=0.5))
    assert time.monotonic() - started < 30


def test_rows_are_cut_at_the_row_budget_and_identical_calls_are_cached(lakehouse: Any, world: dict[str, Any]) -> None:
    spec, ann = world["spec"], world["ann"]
    cut = run_named_query(lakehouse, spec, "all_events", ann, {}, QueryBudget(max_rows=2, cache_seconds=60))
    assert cut["row_count"] == 2 and cut["truncated"] is True and cut["cached"] is False
    again = run_named_query(lakehouse, spec, "all_events", ann, {}, QueryBudget(max_rows=2, cache_seconds=60))
    assert again["cached"] is True and again["rows"] == cut["rows"]


@pytest.mark.parametrize(("sql", "error"), [
    ("SELECT * FROM events WHERE event = $nope", "queries.q: sql: $nope is used but not declared"),
    ("DELETE FROM events", "queries.q: sql: must be a SELECT"),
    ("SELECT 1; SELECT 2", "one statement only"),
    ("WITH x AS (SELECT 1) SELECT * FROM x WHERE 1 = (SELECT 1 FROM (INSERT INTO t VALUES (1)))", "'INSERT'"),
])
def test_query_spec_errors_name_the_path(sql: str, error: str) -> None:
    text = DEFAULT_SPEC.read_text() + f"\n  q:\n    description: d\n    sql: {json.dumps(sql)}\n"
    with pytest.raises(ConfigError, match=error.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")):
        parse_spec(text)


def test_query_context_handler_with_the_api_gateway_sample(lakehouse: Any, world: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context.local import lambda_runtime
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context.stores import factory

    from tests.conftest import load_event

    # Given the sample's consumer key and its user id known as ann's profile
    store = MemoryContextStore()
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("sample", ["*"], []))
    store.put_aliases([("user_id", "u_000001", world["ann"])])
    monkeypatch.setattr(factory, "context_store", lambda: store)
    # When the handler gets the event API Gateway sends for the query route
    response = lambda_runtime.invoke("query_context", load_event("query_context_post.json"))
    # Then it answers ann's orders since the sample's date
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert body["query"] == "orders_in_period" and [r["order_id"] for r in body["rows"]] == ["A2", "A1"]
