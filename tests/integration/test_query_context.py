"""Named queries on a real lakehouse (SQLite catalog, file:// warehouse) and a real DuckDB: one customer's
rows only, bound parameters, scan / time / memory / row budgets, the cache, and the handler."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.assemble.records import load_file
from customer_context.errors import BudgetExceeded, ConfigError, InvalidRequest, NotFound
from customer_context.serve.named_queries import QueryBudget, clear_cache, run_named_query
from customer_context.spec import DEFAULT_SPEC, ContextSpec, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

EXTRA_QUERIES = """
  all_events:
    description: every event the query can see
    sql: SELECT user_id, anonymous_id, event FROM events ORDER BY timestamp
  by_event_name:
    description: events with a given name
    params:
      name: {type: string, required: true}
    sql: SELECT event FROM events WHERE event = $name
  tracked_within:
    description: track events in a period before a time
    params:
      period: {type: duration, required: true}
      until: {type: timestamp, required: true}
    sql: >
      SELECT json_extract_string(properties, '$.order_id') AS order_id FROM events
      WHERE type = 'track' AND event = 'Order Completed' AND timestamp >= $until - $period ORDER BY timestamp
  first_two:
    description: a query with its own row limit
    max_rows: 2
    sql: SELECT event FROM events  -- a trailing comment must not swallow the row limit
"""


def spec_with(queries: str = "") -> ContextSpec:
    """The default spec plus the queries above (and ``queries``, YAML under ``queries:``)."""
    return parse_spec(DEFAULT_SPEC.read_text() + EXTRA_QUERIES + queries)


def one_query(sql: str, params: str = "", tables: str = "") -> ContextSpec:
    """The default spec plus a query ``q``."""
    extra = f"\n  q:\n    description: d\n    sql: {json.dumps(sql)}\n"
    if params:
        extra += f"    params: {params}\n"
    if tables:
        extra += f"    tables: {tables}\n"
    return spec_with(extra)


@pytest.fixture
def world(lakehouse: Any) -> dict[str, Any]:
    """Two customers built into a lakehouse; ann's laptop (dev-a) is later used by bob, signed in."""
    clear_cache()
    spec = spec_with()
    write_events(lakehouse, [
        ev("identify", 30, userId="ann", anonymousId="dev-a", traits={"email": "ann@example.com"}),
        ev("track", 20, userId="ann", event="Order Completed", properties={"revenue": 10, "order_id": "A1"}),
        ev("track", 2, anonymousId="dev-a", event="Order Completed", properties={"revenue": 30, "order_id": "A2"}),
        ev("page", 1, anonymousId="dev-a", name="Pricing", properties={"path": "/pricing"}),
        ev("identify", 30, userId="bob", traits={"email": "bob@example.com"}),
        ev("track", 3, userId="bob", event="Order Completed", properties={"revenue": 99, "order_id": "B1"}),
        ev("track", 3, userId="bob", event="x' OR 1=1 --"),
        ev("track", 1, userId="bob", anonymousId="dev-a", event="Bob on the shared laptop"),
    ])
    tickets = [
        # ann's email as the help desk exported it: not normalised
        {"ticket_id": "T1", "requester_email": "Ann@Example.COM", "channel": "chat", "status": "open",
         "subject": "Where is A2?", "body": "…", "created_at": "2026-11-20T00:00:00Z",
         "updated_at": "2026-11-20T00:00:00Z"},
        {"ticket_id": "T2", "requester_email": "bob@example.com", "channel": "email", "status": "open",
         "subject": "Bob's ticket", "body": "…", "created_at": "2026-11-21T00:00:00Z",
         "updated_at": "2026-11-21T00:00:00Z"},
    ]
    data = "".join(json.dumps(t) + "\n" for t in tickets).encode()
    assert load_file(lakehouse, spec, "imports/support_tickets/t.jsonl", data).loaded == 2
    store = MemoryContextStore()
    build_context(lakehouse, store, spec, as_of=AS_OF)
    ann, bob = store.resolve("user_id", "ann"), store.resolve("user_id", "bob")
    assert store.resolve("anonymous_id", "dev-a") == ann != bob
    return {"spec": spec, "ann": ann, "bob": bob, "store": store}


def test_a_query_sees_only_the_customers_own_rows(lakehouse: Any, world: dict[str, Any]) -> None:
    spec = world["spec"]
    # When the broadest possible query runs for ann, then for bob
    ann = run_named_query(lakehouse, spec, "all_events", world["ann"], {})
    bob = run_named_query(lakehouse, spec, "all_events", world["bob"], {})
    # Then ann sees her events (by user id and by her device) and none of bob's, not even the one he
    # sent signed in on her laptop; bob sees that one, as the build assigned it
    assert [(r["user_id"], r["anonymous_id"]) for r in ann["rows"]] == [
        ("ann", "dev-a"), ("ann", None), (None, "dev-a"), (None, "dev-a")]
    assert {r["user_id"] for r in bob["rows"]} == {"bob"}
    assert "Bob on the shared laptop" in {r["event"] for r in bob["rows"]}
    assert ann["row_count"] == 4 and bob["row_count"] == 4


def test_record_rows_are_matched_on_normalised_identifiers(lakehouse: Any, world: dict[str, Any]) -> None:
    # Given ann's ticket stored with her email in mixed case
    # When ann's open tickets are asked for
    tickets = run_named_query(lakehouse, world["spec"], "open_tickets", world["ann"], {})
    # Then it is found (and bob's is not)
    assert [r["ticket_id"] for r in tickets["rows"]] == ["T1"]
    assert [r["ticket_id"] for r in run_named_query(
        lakehouse, world["spec"], "open_tickets", world["bob"], {})["rows"]] == ["T2"]


def _warehouse(tmp_path: Path) -> Path:
    return tmp_path / "data" / "warehouse"


@pytest.mark.parametrize(("sql", "target"), [
    ("SELECT * FROM read_parquet($path)", "events data file"),
    ("SELECT * FROM read_parquet($path)", "every data file (glob)"),
    ("SELECT * FROM read_text($path)", "events metadata file"),
    ("SELECT * FROM read_json($path)", "events metadata file"),
    ("SELECT * FROM read_blob($path)", "catalog database"),
    ("SELECT * FROM sqlite_scan($path, 'iceberg_tables')", "catalog database"),
    ("SELECT * FROM read_csv($path)", "http url"),
])
def test_files_urls_and_metadata_are_unreachable(lakehouse: Any, world: dict[str, Any], tmp_path: Path,
                                                 sql: str, target: str) -> None:
    # Given the path of a real file of the lakehouse (or a URL)
    warehouse = _warehouse(tmp_path)
    paths = {
        "events data file": next((warehouse / "customer_context" / "events").rglob("*.parquet")),
        "every data file (glob)": f"{warehouse}/**/*.parquet",
        "events metadata file": next((warehouse / "customer_context" / "events").rglob("*.metadata.json")),
        "catalog database": tmp_path / "data" / "catalog.db",
        "http url": "http://127.0.0.1:9/x.csv",
    }
    assert target == "http url" or "*" in str(paths[target]) or Path(paths[target]).exists()
    spec = one_query(sql, params="{path: {type: string, required: true}}")
    # When a query tries to read it for ann, Then it fails: the connection can reach no file or URL
    with pytest.raises(ConfigError, match="named query 'q' .* failed: .*(Permission|not in the catalog)"):
        run_named_query(lakehouse, spec, "q", world["ann"], {"path": str(paths[target])})


@pytest.mark.parametrize("table", ["identity_graph", "context_snapshots", "events_unique", "_cc_ids", "_cc_rows"])
def test_other_tables_are_unreachable(lakehouse: Any, world: dict[str, Any], table: str) -> None:
    # Given a table of the lakehouse that is not one a query may read, or a working table of the run
    spec = one_query(f"SELECT * FROM {table}", tables="[events]")
    # When a query names it, Then it does not exist in the query's connection
    with pytest.raises(ConfigError, match="does not exist"):
        run_named_query(lakehouse, spec, "q", world["ann"], {})


def test_the_connection_holds_only_the_tables_the_query_reads(lakehouse: Any, world: dict[str, Any]) -> None:
    # Given a query declaring it reads events and support tickets
    spec = one_query("SELECT table_name FROM duckdb_tables() ORDER BY 1", tables="[events, support_tickets]")
    # When it lists the connection's tables
    result = run_named_query(lakehouse, spec, "q", world["ann"], {})
    # Then only those two are there (no working tables, nothing else)
    assert [r["table_name"] for r in result["rows"]] == ["events", "support_tickets"]
    # And a query declaring only support tickets cannot read events
    with pytest.raises(ConfigError, match="events does not exist"):
        run_named_query(lakehouse, one_query("SELECT count(*) FROM events", tables="[support_tickets]"), "q",
                        world["ann"], {})


def test_settings_cannot_be_changed_back(lakehouse: Any, world: dict[str, Any]) -> None:
    # Given a query that tries to re-enable file access through a table function (SET is refused by the spec)
    spec = one_query("SELECT * FROM duckdb_settings() WHERE name = 'enable_external_access'")
    # When it runs, Then external access is off and the configuration is locked
    row = run_named_query(lakehouse, spec, "q", world["ann"], {})["rows"][0]
    assert row["value"] == "false"
    locked = run_named_query(lakehouse, one_query(
        "SELECT value FROM duckdb_settings() WHERE name = 'lock_configuration'"), "q", world["ann"], {})
    assert locked["rows"] == [{"value": "true"}]


def test_parameters_are_bound_not_interpolated(lakehouse: Any, world: dict[str, Any]) -> None:
    spec = world["spec"]
    # Given a value that would widen the filter if it were pasted into the SQL
    value = "x' OR 1=1 --"
    # When ann asks for events of that name
    injected = run_named_query(lakehouse, spec, "by_event_name", world["ann"], {"name": value})
    # Then she gets none (she has no such event): the text was compared as data
    assert injected["rows"] == []
    # And bob, who sent an event named exactly that, gets that one only
    own = run_named_query(lakehouse, spec, "by_event_name", world["bob"], {"name": value})
    assert own["rows"] == [{"event": value}]


def test_orders_in_period_with_typed_parameters(lakehouse: Any, world: dict[str, Any]) -> None:
    spec = world["spec"]
    # When ann's orders since November 1st are asked for
    result = run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {"since": "2026-11-01T00:00:00Z"})
    # Then they come newest first with JSON-safe values, and the parameters used are echoed
    assert [r["order_id"] for r in result["rows"]] == ["A2", "A1"]
    assert [r["revenue"] for r in result["rows"]] == [30.0, 10.0]
    assert result["rows"][0]["timestamp"].startswith("2026-11-22T12:00:00")
    assert result["params"] == {"since": "2026-11-01T00:00:00Z", "until": None}
    assert result["columns"] == ["timestamp", "order_id", "revenue", "currency"]
    json.dumps(result)
    # And bad parameters are refused, each naming the parameter and the reason
    with pytest.raises(InvalidRequest, match="params.since: required"):
        run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {})
    with pytest.raises(InvalidRequest, match="params.since: expected an ISO-8601 date-time"):
        run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {"since": 5})
    with pytest.raises(InvalidRequest, match="params.sinse: not a parameter"):
        run_named_query(lakehouse, spec, "orders_in_period", world["ann"], {"sinse": "2026-01-01"})
    with pytest.raises(NotFound, match="orders_in_period"):
        run_named_query(lakehouse, spec, "nope", world["ann"], {})


def test_recent_pages_example(lakehouse: Any, world: dict[str, Any]) -> None:
    # When ann's recent pages are asked for (the default spec's example, limit defaulted)
    pages = run_named_query(lakehouse, world["spec"], "recent_pages", world["ann"], {})
    # Then her one page view comes back, and the limit parameter is bound inside LIMIT
    assert [(r["type"], r["page"]) for r in pages["rows"]] == [("page", "/pricing")]
    assert pages["params"] == {"limit": 20}
    assert run_named_query(lakehouse, world["spec"], "recent_pages", world["ann"], {"limit": 0})["rows"] == []


def test_duration_parameters_are_intervals(lakehouse: Any, world: dict[str, Any]) -> None:
    spec, until = world["spec"], AS_OF.isoformat()
    # When ann's orders in the week, then in the month, before AS_OF are asked for
    week = run_named_query(lakehouse, spec, "tracked_within", world["ann"], {"period": "7d", "until": until})
    month = run_named_query(lakehouse, spec, "tracked_within", world["ann"], {"period": "30d", "until": until})
    # Then the week holds the order 2 days back, the month both
    assert [r["order_id"] for r in week["rows"]] == ["A2"]
    assert [r["order_id"] for r in month["rows"]] == ["A1", "A2"]
    with pytest.raises(InvalidRequest, match="params.period: expected a duration like 30d"):
        run_named_query(lakehouse, spec, "tracked_within", world["ann"], {"period": "a month", "until": until})


def test_scan_budget_is_checked_before_reading(lakehouse: Any, world: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a lakehouse whose table scans record when rows are read
    reads: list[str] = []
    real_table = lakehouse.table

    def spied(name: str) -> Any:
        def scan(**kwargs: Any) -> Any:
            real = real_table(name).scan(**kwargs)
            return SimpleNamespace(plan_files=real.plan_files,
                                   to_arrow=lambda: reads.append(name) or real.to_arrow())
        return SimpleNamespace(scan=scan)

    monkeypatch.setattr(lakehouse, "table", spied)
    # When a query would scan more bytes than the budget allows
    with pytest.raises(BudgetExceeded, match=r"scan budget: query 'all_events' would read [\d,]+ bytes of data "
                                             r"files; the limit is 100 "):
        run_named_query(lakehouse, world["spec"], "all_events", world["ann"], {}, QueryBudget(max_scan_bytes=100))
    # Then nothing was read; within budget the same query reads and reports the planned bytes
    assert reads == []
    ok = run_named_query(lakehouse, world["spec"], "all_events", world["ann"], {})
    assert reads == ["events"] and ok["scanned_bytes"] > 100


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM range(100000000000) a",
    "SELECT count(*) FROM events a, range(100000) b, range(100000) c WHERE b.range + c.range > a.received_at.epoch()",
])
def test_time_budget_stops_a_runaway_query(lakehouse: Any, world: dict[str, Any], sql: str) -> None:
    # Given a query that would run for minutes
    spec = one_query(sql)
    started = time.monotonic()
    # When it runs with half a second of budget, Then it is stopped with an error naming the budget
    with pytest.raises(BudgetExceeded, match=r"time budget: query 'q' ran longer than 0.5 s"):
        run_named_query(lakehouse, spec, "q", world["ann"], {}, QueryBudget(max_seconds=0.5))
    # And it was stopped soon after the limit (a loose bound: this is not a benchmark)
    assert time.monotonic() - started < 10


def test_memory_budget_stops_a_query(lakehouse: Any, world: dict[str, Any]) -> None:
    spec = one_query("SELECT list(range) AS l FROM range(50000000)")
    with pytest.raises(BudgetExceeded, match="memory budget: query 'q' needed more than 33,554,432 bytes"):
        run_named_query(lakehouse, spec, "q", world["ann"], {}, QueryBudget(max_memory_bytes=32 * 1024 * 1024))


def test_rows_are_cut_at_the_row_budget(lakehouse: Any, world: dict[str, Any]) -> None:
    spec, ann = world["spec"], world["ann"]
    # When ann's 4 events are asked for with a budget of 2 rows
    cut = run_named_query(lakehouse, spec, "all_events", ann, {}, QueryBudget(max_rows=2))
    # Then 2 come back, flagged as truncated
    assert cut["row_count"] == 2 and len(cut["rows"]) == 2 and cut["truncated"] is True
    # And a query's own max_rows applies below the budget (a trailing SQL comment does not defeat it)
    own = run_named_query(lakehouse, spec, "first_two", ann, {})
    assert own["row_count"] == 2 and own["truncated"] is True
    # And a result that fits is not flagged
    whole = run_named_query(lakehouse, spec, "all_events", ann, {}, QueryBudget(max_rows=4))
    assert whole["row_count"] == 4 and whole["truncated"] is False


def test_identical_calls_are_cached(lakehouse: Any, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    spec, ann = world["spec"], world["ann"]
    budget = QueryBudget(cache_seconds=60)
    first = run_named_query(lakehouse, spec, "orders_in_period", ann, {"since": "2026-11-01T00:00:00Z"}, budget)
    # Given the lakehouse can no longer be read
    monkeypatch.setattr(lakehouse, "table", lambda name: pytest.fail("read again"))
    # When the identical call comes again, Then it is answered from the cache
    again = run_named_query(lakehouse, spec, "orders_in_period", ann, {"since": "2026-11-01T00:00:00Z"}, budget)
    assert again["cached"] is True and first["cached"] is False and again["rows"] == first["rows"]
    # And another customer, other parameters or another row budget are not answered from it
    for call in (
        lambda: run_named_query(lakehouse, spec, "orders_in_period", world["bob"],
                                {"since": "2026-11-01T00:00:00Z"}, budget),
        lambda: run_named_query(lakehouse, spec, "orders_in_period", ann, {"since": "2026-11-02T00:00:00Z"}, budget),
        lambda: run_named_query(lakehouse, spec, "orders_in_period", ann, {"since": "2026-11-01T00:00:00Z"},
                                QueryBudget(max_rows=1, cache_seconds=60)),
    ):
        with pytest.raises(pytest.fail.Exception, match="read again"):
            call()


def test_no_cache_when_cache_seconds_is_zero(lakehouse: Any, world: dict[str, Any]) -> None:
    budget = QueryBudget(cache_seconds=0)
    run_named_query(lakehouse, world["spec"], "all_events", world["ann"], {}, budget)
    assert run_named_query(lakehouse, world["spec"], "all_events", world["ann"], {}, budget)["cached"] is False


def test_a_customer_unknown_to_the_identity_graph_sees_nothing(lakehouse: Any, world: dict[str, Any]) -> None:
    result = run_named_query(lakehouse, world["spec"], "all_events", "p_nobody", {})
    assert result["rows"] == [] and result["scanned_bytes"] == 0


def test_a_fresh_container_reads_record_tables_it_never_loaded(lakehouse: Any, world: dict[str, Any]) -> None:
    from customer_context import wiring

    # Given a new Lakehouse instance, as in a query function's first call (no record table declared on it)
    wiring.reload_from_environment()
    fresh = wiring.lakehouse()
    assert fresh is not lakehouse
    # When a customer with tickets, and one with no identifier of the table's types, ask for open tickets
    ann = run_named_query(fresh, world["spec"], "open_tickets", world["ann"], {})
    nobody = run_named_query(fresh, world["spec"], "open_tickets", "p_nobody", {})
    # Then the first gets theirs and the second an empty answer with the table's columns
    assert [r["ticket_id"] for r in ann["rows"]] == ["T1"]
    assert nobody["rows"] == [] and nobody["columns"] == ["ticket_id", "channel", "subject", "created_at", "updated_at"]
    # And a record table no file was ever loaded into reads as empty
    crm = run_named_query(fresh, one_query("SELECT contact_id, email FROM crm_contacts"), "q", world["ann"], {})
    assert crm["rows"] == [] and crm["columns"] == ["contact_id", "email"]


def test_blocked_and_unbuilt_identifiers_do_not_decide_ownership(lakehouse: Any, world: dict[str, Any]) -> None:
    # Given, after the build, an event on ann's laptop with a blocked user id, and one with a user id
    # the build has not seen yet
    write_events(lakehouse, [
        ev("track", 0.5, userId="unknown", anonymousId="dev-a", event="Blocked user id"),
        ev("track", 0.5, userId="carol", anonymousId="dev-a", event="Carol, not built yet"),
    ])
    # When ann's events are asked for
    names = {r["event"] for r in run_named_query(lakehouse, world["spec"], "all_events", world["ann"], {})["rows"]}
    # Then the blocked id is ignored (the device decides: ann's), and the unbuilt user's event waits for the build
    assert "Blocked user id" in names
    assert "Carol, not built yet" not in names


def test_query_context_handler_with_the_api_gateway_sample(lakehouse: Any, world: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context import wiring
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context_devtools.local import lambda_runtime

    from tests.conftest import load_event

    # Given the sample's consumer key and its user id known as ann's profile
    store = MemoryContextStore()
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("sample", ["*"], []))
    store.put_aliases([("user_id", "u_000001", world["ann"])])
    store.items.update({k: v for k, v in world["store"].items.items() if v.get("profile_id") == world["ann"]
                        and k[1] == "snapshot"})
    monkeypatch.setattr(wiring, "context_store", lambda: store)
    # When the handler gets the event API Gateway sends for the query route
    response = lambda_runtime.invoke("query_context", load_event("query_context_post.json"))
    # Then it answers ann's orders since the sample's date
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert body["query"] == "orders_in_period" and [r["order_id"] for r in body["rows"]] == ["A2", "A1"]


def test_the_snapshot_lists_the_same_identifiers_as_the_identity_graph(lakehouse: Any, world: dict[str, Any]) -> None:
    # the handler takes the customer's identifiers from their snapshot (one key-value read) instead of
    # scanning the identity graph: both must say the same, or a query would see other rows
    from customer_context.serve.named_queries import _identifiers, snapshot_identifiers

    store = world["store"]
    for who in ("ann", "bob"):
        listed = snapshot_identifiers(store.get_snapshot(world[who]))
        assert listed and listed == _identifiers(lakehouse, world[who])
    assert ("anonymous_id", "dev-a") in snapshot_identifiers(store.get_snapshot(world["ann"]))  # type: ignore[operator]
    assert snapshot_identifiers(None) is None
    # and a query given them answers as one that reads the graph
    spec = world["spec"]
    given = run_named_query(lakehouse, spec, "all_events", world["bob"], {},
                            identifiers=snapshot_identifiers(store.get_snapshot(world["bob"])))
    clear_cache()
    read = run_named_query(lakehouse, spec, "all_events", world["bob"], {})
    assert given["rows"] == read["rows"] and given["row_count"] > 0
