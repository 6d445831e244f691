"""The trait-kind table (customer_context/trait_kinds.py) is what the spec accepts and what the compiler builds:
every kind is accepted where the table allows it, refused elsewhere, and compiles into SQL DuckDB runs."""

from datetime import datetime
from typing import Any, get_args

import duckdb
import pytest
import yaml
from customer_context.assemble.compiler import compile_traits
from customer_context.models.events import BUILD_EVENT_COLUMNS, EVENTS
from customer_context.spec import DEFAULT_SPEC, ContextSpec, Trait
from customer_context.sql_text import lit
from customer_context.trait_kinds import TRAIT_KINDS
from pydantic import ValidationError

BASE = yaml.safe_load(DEFAULT_SPEC.read_text())
RECORDS = "crm_contacts"  # a record table of the default spec


def _trait(kind: str, table: str) -> dict[str, Any]:
    trait: dict[str, Any] = {"description": "d", "kind": kind, "table": table}
    if kind == "sql":
        trait["sql"] = "SELECT profile_id, count(*) AS value FROM events_profiled GROUP BY profile_id"
    elif TRAIT_KINDS[kind].needs_property:
        trait["property"] = "properties.amount" if table == "events" else "full_name"
    return trait


def _spec(trait: dict[str, Any]) -> ContextSpec:
    return ContextSpec.model_validate({**{k: v for k, v in BASE.items() if k != "queries"}, "traits": {"t": trait}})


def _connection() -> duckdb.DuckDBPyConnection:
    """Empty tables shaped like the build's ``events_profiled`` and ``crm_contacts_profiled``, one profile each."""
    con = duckdb.connect()
    timestamps = {c.name for c in EVENTS if c.timestamp}
    columns = ", ".join(f"{c} {'TIMESTAMPTZ' if c in timestamps else 'VARCHAR'}"
                        for c in (*BUILD_EVENT_COLUMNS, "context", "time_flag"))
    con.execute(f"CREATE TABLE events_profiled (profile_id VARCHAR, {columns})")
    con.execute("INSERT INTO events_profiled (profile_id, message_id, type, timestamp, received_at, properties) "
                "VALUES ('p1', 'm1', 'track', TIMESTAMPTZ '2026-01-01 00:00:00+00', "
                "TIMESTAMPTZ '2026-01-01 00:00:00+00', '{\"amount\": 2}')")
    table = BASE["record_tables"][RECORDS]
    columns = ", ".join(f"{c} {'TIMESTAMPTZ' if kind == 'timestamp' else 'VARCHAR'}"
                        for c, kind in table["columns"].items())
    con.execute(f"CREATE TABLE {RECORDS}_profiled (profile_id VARCHAR, {columns})")
    con.execute(f"INSERT INTO {RECORDS}_profiled (profile_id, contact_id, full_name, updated_at) "
                "VALUES ('p1', 'c1', 'Ada', TIMESTAMPTZ '2026-01-01 00:00:00+00')")
    return con


def test_the_spec_field_lists_the_table():
    assert get_args(Trait.model_fields["kind"].annotation) == tuple(TRAIT_KINDS)


@pytest.mark.parametrize("table", ["events", RECORDS])
@pytest.mark.parametrize("kind", list(TRAIT_KINDS))
def test_every_kind_is_accepted_where_allowed_and_compiles(kind: str, table: str):
    row = TRAIT_KINDS[kind]
    allowed = row.on_events if table == "events" else (row.on_records or row.sql is None)
    if not allowed:
        with pytest.raises(ValidationError, match="not available on"):
            _spec(_trait(kind, table))
        return
    spec = _spec(_trait(kind, table))
    queries = compile_traits(spec)
    assert ("t" in queries.zero_default) == (row.zero is not None)
    con = _connection()
    as_of = lit(datetime.fromisoformat("2026-02-01T00:00:00+00:00"))
    if row.own_query:
        assert not queries.grouped and list(queries.separate) == ["t"]
        rows = con.sql(queries.separate["t"].replace("$as_of", as_of)).fetchall()
    else:
        assert not queries.separate and len(queries.grouped) == 1
        rows = con.sql(next(iter(queries.grouped.values())).replace("$as_of", as_of)).fetchall()
    assert all(r[0] == "p1" for r in rows)
    if row.zero is not None:
        assert con.sql(f"SELECT {row.zero}").fetchall()  # the zero value is SQL


@pytest.mark.parametrize("kind", [k for k, row in TRAIT_KINDS.items() if row.needs_property])
def test_a_kind_that_reads_a_value_needs_a_property(kind: str):
    trait = _trait(kind, "events")
    trait.pop("property")
    with pytest.raises(ValidationError, match=f"property: required for kind {kind}"):
        _spec(trait)
