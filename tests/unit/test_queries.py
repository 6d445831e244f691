"""Named queries without a lakehouse: the spec's checks, parameter binding, tool schemas, row filters, lean import."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from customer_context.errors import ConfigError, InvalidRequest
from customer_context.serve.named_queries import bind_params, query_tool_schemas, row_filter, tables_read
from customer_context.spec import DEFAULT_SPEC, ContextSpec, parse_spec

from tests.conftest import REPO


def spec_with_query(body: str) -> ContextSpec:
    """The default spec plus a query ``q`` (``body``: its YAML, indented under it)."""
    return parse_spec(DEFAULT_SPEC.read_text() + "\n  q:\n" + body)


def error_of(body: str) -> str:
    with pytest.raises(ConfigError) as caught:
        spec_with_query(body)
    return caught.value.message


def test_the_default_spec_declares_the_documented_example_queries() -> None:
    spec = parse_spec(DEFAULT_SPEC.read_text())
    assert set(spec.queries) == {"orders_in_period", "recent_pages", "open_tickets"}
    assert all(q.description for q in spec.queries.values())
    assert tables_read(spec, spec.queries["open_tickets"]) == ["support_tickets"]
    assert tables_read(spec, spec.queries["orders_in_period"]) == ["events"]


@pytest.mark.parametrize(("body", "error"), [
    ("    description: d\n    sql: SELECT * FROM events WHERE event = $nope\n",
     "queries.q: sql: $nope is used but not declared under params"),
    ("    description: d\n    sql: SELECT 1\n    params: {x: {type: string}}\n",
     "queries.q: params.x: declared but not used in sql"),
    ("    description: d\n    sql: DELETE FROM events\n", "queries.q: sql: must be a SELECT"),
    ("    description: d\n    sql: SELECT 1; SELECT 2\n", "queries.q: sql: one statement only"),
    ("    description: d\n    sql: WITH x AS (SELECT 1) SELECT * FROM x WHERE 1 = (SELECT 1 FROM (INSERT INTO t "
     "VALUES (1)))\n", "queries.q: sql: 'INSERT' is not allowed"),
    ("    description: d\n    sql: SELECT * FROM events, (SELECT 1) AS t(x) WHERE $a = 1\n"
     "    params: {a: {type: integer, default: soon}}\n",
     "queries.q.params.a: default: expected an integer, got 'soon'"),
    ("    description: d\n    sql: SELECT $a\n    params: {a: {type: duration, default: a week}}\n",
     "queries.q.params.a: default: expected a duration like 30d"),
    ("    description: d\n    sql: SELECT $a\n    params: {a: {type: string, required: true, default: x}}\n",
     "queries.q.params.a: default: a required parameter has no default"),
    ("    description: d\n    sql: SELECT $a\n    params: {a: {type: date}}\n", "queries.q.params.a.type"),
    ("    description: d\n    sql: SELECT 1\n    tables: [events, orders]\n",
     "queries.q.tables: no table 'orders' (declared: events, crm_contacts, support_tickets)"),
    ("    description: d\n    sql: SELECT 1\n    max_rows: 0\n", "queries.q.max_rows"),
    ("    description: ''\n    sql: SELECT 1\n", "queries.q.description"),
    ("    description: d\n    sql: SELECT 1\n    limit: 3\n", "queries.q.limit: Extra inputs are not permitted"),
    ("    description: d\n    sql: SELECT 1\n    reveals: [traits.shoe_size]\n",
     "queries.q.reveals: 'traits.shoe_size' is no section or field of the snapshot"),
    ("    description: d\n    sql: SELECT 1\n    reveals: []\n", "queries.q.reveals: name at least one"),
])
def test_query_spec_errors_name_the_path(body: str, error: str) -> None:
    # Given a query with one mistake, When the spec loads, Then the error names its path and the reason
    assert error in error_of(body)


def test_semicolons_and_dollars_inside_string_literals_are_data() -> None:
    spec = spec_with_query("    description: d\n    sql: \"SELECT ';' AS a, '$notaparam' AS b, "
                           "json_extract(properties, '$.x') FROM events\"\n")
    assert spec.queries["q"].params == {}


def test_a_query_named_with_a_bad_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"queries\.Bad-Name"):
        parse_spec(DEFAULT_SPEC.read_text() + "\n  Bad-Name:\n    description: d\n    sql: SELECT 1\n")


@pytest.fixture
def typed() -> Any:
    spec = spec_with_query(
        "    description: typed parameters\n"
        "    sql: SELECT $s, $i, $n, $b, $t, $d\n"
        "    params:\n"
        "      s: {type: string, required: true, description: a text}\n"
        "      i: {type: integer, default: 20}\n"
        "      n: {type: number}\n"
        "      b: {type: boolean}\n"
        "      t: {type: timestamp}\n"
        "      d: {type: duration, default: 30d}\n")
    return spec.queries["q"]


def test_parameters_are_typed_and_defaults_filled(typed: Any) -> None:
    # Given values as JSON gives them
    bound = bind_params(typed, {"s": "x' OR 1=1 --", "n": "2.5", "b": False, "t": "2026-11-01T10:00:00"})
    # Then each is the Python value DuckDB binds: text unchanged, naive times in UTC, durations as intervals
    assert bound == {"s": "x' OR 1=1 --", "i": 20, "n": 2.5, "b": False,
                     "t": datetime(2026, 11, 1, 10, tzinfo=UTC), "d": timedelta(days=30)}
    assert bind_params(typed, {"s": "a", "i": "7", "d": "90s"})["i"] == 7
    assert bind_params(typed, {"s": "a", "d": "15m"})["d"] == timedelta(minutes=15)


@pytest.mark.parametrize(("given", "error"), [
    ({}, "params.s: required (a text)"),
    ({"s": 1}, "params.s: expected a string, got 1"),
    ({"s": "a", "i": 1.5}, "params.i: expected an integer, got 1.5"),
    ({"s": "a", "i": True}, "params.i: expected an integer, got True"),
    ({"s": "a", "n": "NaN"}, "params.n: expected a finite number"),
    ({"s": "a", "b": "yes"}, "params.b: expected true or false"),
    ({"s": "a", "t": "yesterday"}, "params.t: expected an ISO-8601 date-time, got 'yesterday'"),
    ({"s": "a", "d": "30 days"}, "params.d: expected a duration like 30d"),
    ({"s": "a", "x": 1}, "params.x: not a parameter of this query; it takes: s, i, n, b, t, d"),
])
def test_bad_parameters_name_the_parameter_and_reason(typed: Any, given: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        bind_params(typed, given)
    assert caught.value.message.startswith(error)
    assert caught.value.status == 400


def test_the_body_must_be_an_object(typed: Any) -> None:
    with pytest.raises(InvalidRequest, match="body: expected a JSON object"):
        bind_params(typed, ["s"])


def test_tool_schemas_describe_each_query_and_its_parameters() -> None:
    spec = spec_with_query("    description: typed\n    sql: SELECT $since, $period\n    params:\n"
                           "      since: {type: timestamp, required: true, description: start}\n"
                           "      period: {type: duration, default: 7d}\n")
    tools = {t["name"]: t for t in query_tool_schemas(spec)}
    assert set(tools) == {"orders_in_period", "recent_pages", "open_tickets", "q"}
    assert tools["q"] == {
        "name": "q", "description": "typed",
        "parameters": {"type": "object", "required": ["since"], "additionalProperties": False, "properties": {
            "since": {"type": "string", "format": "date-time", "description": "start"},
            "period": {"type": "string", "pattern": r"^(\d+)([smhdw])$", "default": "7d"}}},
    }
    assert tools["recent_pages"]["parameters"]["properties"]["limit"]["type"] == "integer"
    json.dumps(tools)


def test_row_filters_select_a_superset_of_the_customers_rows() -> None:
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, In, LessThanOrEqual, Or

    spec = parse_spec(DEFAULT_SPEC.read_text())
    ids = [("user_id", "ann"), ("anonymous_id", "dev-a"), ("email", "ann@example.com"), ("phone", "15551234")]
    # events: the identifier columns, compared as they are stored (trim-only types)
    assert row_filter(spec, "events", ids) == Or(In("user_id", {"ann"}), In("anonymous_id", {"dev-a"}))
    # lower-cased types: every case variant is in range
    tickets = row_filter(spec, "support_tickets", ids)
    assert tickets == And(GreaterThanOrEqual("requester_email", "ANN@EXAMPLE.COM"),
                          LessThanOrEqual("requester_email", "ann@example.com"))
    assert "ANN@EXAMPLE.COM" <= "Ann@Example.COM" <= "ann@example.com"
    # no identifier of the table's types: nothing to read
    assert row_filter(spec, "support_tickets", [("user_id", "ann")]) is None
    assert row_filter(spec, "events", []) is None
    # a digits-normalised column cannot be pushed down: the whole table is planned (and budgeted)
    phones = parse_spec(DEFAULT_SPEC.read_text().replace("      email: requester_email",
                                                         "      email: requester_email\n      phone: channel"))
    assert row_filter(phones, "support_tickets", ids) == AlwaysTrue()


def test_tables_read_uses_the_declared_list_first() -> None:
    spec = spec_with_query("    description: d\n    sql: SELECT 1 AS events\n    tables: [support_tickets]\n")
    assert tables_read(spec, spec.queries["q"]) == ["support_tickets"]


def test_the_module_imports_no_analytics_package() -> None:
    # Given a fresh interpreter, When the named-query module and the spec load
    code = ("import sys, json; sys.path.insert(0, r'{}')\n"
            "import customer_context.serve.named_queries as q\n"
            "from customer_context.spec import DEFAULT_SPEC, parse_spec\n"
            "q.query_tool_schemas(parse_spec(DEFAULT_SPEC.read_text()))\n"
            "print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {{'pyarrow', 'duckdb', 'pyiceberg'}})))"
            ).format(REPO / "layers" / "core")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then neither duckdb, pyarrow nor pyiceberg was imported
    assert json.loads(out.stdout) == []
