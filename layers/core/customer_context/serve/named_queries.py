"""query_context: named, parameterised queries over ONE customer's lakehouse rows, under budgets.

How a call runs:

1. the customer's identifiers come from the ``identity_graph`` Iceberg table (by profile id);
2. each table the query reads (``events`` and record tables: the query's ``tables``, else those its
   SQL names) is planned through pyiceberg with a row filter on those identifiers (a superset: raw
   column values, see below); the planned data files are summed first, and a scan above
   ``max_scan_bytes`` is refused before anything is read;
3. the rows read are loaded into a fresh in-memory DuckDB and cut down to the rows the last build
   gave this customer: a row belongs to the profile of its most important identifier (lowest
   ``priority``, then type, then value; blocked values ignored), exactly as the build assigns
   ``events_profiled`` / ``<table>_profiled``. So a shared device's events sent by another signed-in
   user, or a CRM row whose email belongs to someone else, stay out. A row whose most important
   identifier is newer than the last build is left out until the next build assigns it;
4. the connection is then locked down: external access off (no files, no URLs, no other tables,
   no extensions) and configuration locked. Only the customer's tables remain in it, so no
   cross-customer read is expressible;
5. the query runs with its parameters bound (``$name``, never pasted into the SQL) under a
   wall-time budget (``con.interrupt()`` from a timer; the whole call counts), a memory limit and a
   row budget: ``max_rows + 1`` rows are fetched and rows beyond the budget are cut with
   ``truncated: true`` (an agent still gets an answer, and knows it is partial);
6. identical calls (same query text, customer, parameters and row budget) within ``cache_seconds``
   are answered from a small in-process cache, with ``cached: true``; the cache is keyed by the
   serving store's deletion generation too, so a deletion job ends every cached answer.

The Iceberg row filter compares raw column values with the customer's normalised identifiers:
``In`` for types normalised by ``trim`` only, a case-insensitive range for ``casefold`` types
(values stored as ``Ann@Example.com`` are found), and no filter (the whole table is planned, so the
scan budget applies to all of it) for ``digits`` and ``phone`` types. Values stored with surrounding
whitespace, or (``casefold``) in another Unicode form than an ASCII case variant (full-width letters,
``İ``), are not found by the filter.

Imports duckdb, pyarrow and pyiceberg inside functions only: this module is importable on the
serving path.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from customer_context.errors import BudgetExceeded, ConfigError, InvalidRequest, NotFound
from customer_context.ports import JsonObject, JsonValue
from customer_context.spec import ContextSpec, NamedQuery
from customer_context.stores import row_filters

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.expressions import BooleanExpression

    from customer_context.ports import Lakehouse

MiB = 1024 * 1024
# event columns holding the identifiers events carry at the top level
_EVENT_ID_COLUMNS = {"userId": "user_id", "anonymousId": "anonymous_id"}
_ROW = "__cc_row"  # row number column used while cutting the rows down (never visible to the query)
_CACHE_MAX = 1000


@dataclass(frozen=True)
class QueryBudget:
    """Limits of one named-query call.

    Attributes:
        max_seconds: Wall time of the whole call (identifiers, scan, load, query); stopped beyond it.
        max_rows: Most rows returned; more are cut and the answer says ``truncated: true``.
        max_scan_bytes: Most bytes of data files one call may read, checked from the planned files
            before reading.
        cache_seconds: Identical calls within this many seconds are answered from the cache (0: off).
        max_memory_bytes: DuckDB's memory limit for the query (no spilling to disk).
    """

    max_seconds: float = 5.0
    max_rows: int = 200
    max_scan_bytes: int = 256 * MiB
    cache_seconds: float = 30.0
    max_memory_bytes: int = 512 * MiB


_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget cached results (tests)."""
    with _cache_lock:
        _cache.clear()


def bind_params(query: NamedQuery, given: JsonValue) -> JsonObject:
    """Check and type the call's parameters (defaults filled in).

    Args:
        query: The named query.
        given: The request body: a JSON object of parameter values.

    Returns:
        Parameter name → the Python value bound to DuckDB (datetime, timedelta, int …).

    Raises:
        InvalidRequest: not an object, an unknown or missing parameter, or a value of the wrong type;
            the message names the parameter and the reason.
    """
    if not isinstance(given, dict):
        raise InvalidRequest("body: expected a JSON object of parameters")
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        raise InvalidRequest(f"params.{unknown[0]}: not a parameter of this query; it takes: "
                             f"{', '.join(query.params) or 'none'}",
                             details=[{"field": f"params.{unknown[0]}", "reason": "unknown parameter"}])
    bound: dict[str, Any] = {}
    for name, param in query.params.items():
        value = given.get(name, param.default)
        if value is None and param.required:
            raise InvalidRequest(f"params.{name}: required ({param.description or param.type})",
                                 details=[{"field": f"params.{name}", "reason": "required"}])
        try:
            bound[name] = param.coerce(value)
        except ValueError as exc:
            raise InvalidRequest(f"params.{name}: {exc}",
                                 details=[{"field": f"params.{name}", "reason": str(exc)}]) from None
    return bound


def query_tool_schemas(spec: ContextSpec) -> list[JsonObject]:
    """Each named query as an LLM tool: ``{"name", "description", "parameters"}`` (JSON Schema).

    The schema holds the query's own parameters only; the HTTP route (and the ``query_<name>``
    tools of :mod:`customer_context.serve.tools`) add which customer it is about.
    """
    tools = []
    for name, query in spec.queries.items():
        tools.append({
            "name": name,
            "description": query.description,
            "parameters": {
                "type": "object",
                "properties": {p: param.json_schema() for p, param in query.params.items()},
                "required": [p for p, param in query.params.items() if param.required],
                "additionalProperties": False,
            },
        })
    return tools


def query_reveals(spec: ContextSpec, query: NamedQuery) -> tuple[str, ...]:
    """What a query's answer reveals, as sections or field paths (its ``reveals``; default every section)."""
    return tuple(query.reveals) if query.reveals else tuple(s.name for s in spec.snapshot.sections)


def tables_read(spec: ContextSpec, query: NamedQuery) -> list[str]:
    """The tables a query reads: its ``tables``, else the known tables its SQL names."""
    if query.tables is not None:
        named = list(dict.fromkeys(query.tables))
    else:
        names = ["events", *spec.record_tables]
        named = [n for n in names if re.search(rf"\b{re.escape(n)}\b", query.sql, re.IGNORECASE)]
    # a consent-gated query learns the customer's consent from their events
    return ["events", *[n for n in named if n != "events"]] if query.consent else named


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def snapshot_identifiers(snapshot: JsonObject | None) -> list[tuple[str, str]] | None:
    """The customer's (type, normalised value) pairs as their snapshot lists them under
    ``profile.identifiers`` (written from the same identity graph by the same build, and never cut
    by the size budget), or ``None`` without a snapshot."""
    if not snapshot or not snapshot.get("doc"):
        return None
    listed = (json.loads(snapshot["doc"]).get("profile") or {}).get("identifiers")
    if not isinstance(listed, dict):
        return None
    return sorted({(str(t), str(v)) for t, values in listed.items() for v in values or ()})


def _identifiers(lakehouse: Lakehouse, profile_id: str) -> list[tuple[str, str]]:
    """The customer's (type, normalised value) pairs, from the last build's identity graph."""
    if not lakehouse.exists("identity_graph"):
        return []
    rows = lakehouse.scan("identity_graph", row_filter=row_filters.equal("profile_id", profile_id),
                          selected_fields=("identifier_type", "identifier_value")).to_pylist()
    return sorted({(r["identifier_type"], r["identifier_value"]) for r in rows})


def _id_columns(spec: ContextSpec, table: str) -> list[tuple[str, str]]:
    """(column, identifier type) pairs of a table."""
    if table == "events":
        return [(_EVENT_ID_COLUMNS[path], id_type) for id_type, rule in spec.identifiers.types.items()
                for path in rule.from_events if path in _EVENT_ID_COLUMNS]
    return [(column, id_type) for id_type, column in spec.record_tables[table].identifiers.items()]


def row_filter(spec: ContextSpec, table: str, identifiers: Iterable[tuple[str, str]]) -> BooleanExpression | None:
    """A pyiceberg expression selecting (a superset of) the customer's rows of one table.

    ``None``: no row can be the customer's (nothing is read). Exactness comes after reading, from
    the rows' normalised identifiers.
    """
    from pyiceberg.expressions import AlwaysTrue, And, Or

    by_type: dict[str, set[str]] = {}
    for id_type, value in identifiers:
        by_type.setdefault(id_type, set()).add(value)
    terms: list[Any] = []
    for column, id_type in _id_columns(spec, table):
        values = by_type.get(id_type)
        if not values:
            continue
        steps = spec.identifiers.types[id_type].normalize
        if "digits" in steps or "phone" in steps:
            return AlwaysTrue()  # `+1 (555)…` vs `+1555…`: nothing to push down; read all, cut after
        if "casefold" in steps:
            # every case variant of a lower-case value lies between its upper- and lower-case forms
            terms += [And(row_filters.at_least(column, v.upper()), row_filters.at_most(column, v))
                      for v in sorted(values)]
        else:
            terms.append(row_filters.one_of(column, values))
    if not terms:
        return None
    expr = terms[0]
    for term in terms[1:]:
        expr = Or(expr, term)
    return expr


def _empty(lakehouse: Lakehouse, spec: ContextSpec, table: str) -> Any:
    """An empty Arrow table with ``table``'s columns (a record table need not be declared on this Lakehouse)."""
    if lakehouse.exists(table):
        return lakehouse.table(table).schema().as_arrow().empty_table()
    if table in spec.record_tables:
        from customer_context.stores.tables import record_table_def

        record = spec.record_tables[table]
        definition = record_table_def(table, record.columns, record.primary_key, record.description)
        return definition.schema.as_arrow().empty_table()
    return lakehouse.arrow_schema(table).empty_table()


def _blocked(spec: ContextSpec, values: Iterable[str]) -> list[str]:
    """Values the identity resolution ignores (``blocked_values``, tested trimmed, case-insensitive)."""
    patterns = [re.compile(p, re.IGNORECASE) for p in spec.identifiers.blocked_values]
    return [v for v in values if not v.strip() or any(p.search(v.strip()) for p in patterns)]


def _keep_own_rows(con: duckdb.DuckDBPyConnection, spec: ContextSpec, table: str, data: Any,
                   identifiers: list[tuple[str, str]]) -> None:
    """Create table ``table`` in ``con`` holding the customer's rows of ``data`` only.

    A row is the customer's when its most important non-blocked identifier (by priority, type,
    value; values normalised as the build does) is one of the customer's identifiers.
    """
    import pyarrow as pa

    from customer_context.assemble.compiler import event_identifiers_sql, record_identifier_sql
    from customer_context.sql_text import first_copy_order, ident

    quoted = ident(table)
    con.register("_cc_rows", data)
    if table == "events":
        # deduplicated as the build does; the identifiers are read by the build's own SQL
        con.execute(f"CREATE TABLE events_unique AS SELECT row_number() OVER () AS {ident(_ROW)}, * FROM ("
                    "SELECT * FROM _cc_rows QUALIFY row_number() OVER (PARTITION BY message_id "
                    f"ORDER BY {first_copy_order()}) = 1)")
        con.unregister("_cc_rows")
        con.execute("CREATE TABLE _cc_ids AS SELECT k, x.t AS id_type, x.v AS id_value, x.p AS priority FROM ("
                    f"SELECT {ident(_ROW)} AS k, unnest({event_identifiers_sql(spec)}) AS x FROM events_unique)")
        source, key = "events_unique", ident(_ROW)
    else:
        record = spec.record_tables[table]
        con.execute(f"CREATE TABLE {quoted} AS SELECT * FROM _cc_rows")
        con.unregister("_cc_rows")
        if record.identifiers:
            con.execute(f"CREATE TABLE _cc_ids AS SELECT row_key AS k, id_type, id_value, priority "
                        f"FROM ({record_identifier_sql(spec, table, record)})")
        else:
            con.execute("CREATE TABLE _cc_ids (k VARCHAR, id_type VARCHAR, id_value VARCHAR, priority INTEGER)")
        source = None
        key = " || '|' || ".join(f"CAST({ident(k)} AS VARCHAR)" for k in record.primary_key)
    seen = [v for (v,) in con.execute("SELECT DISTINCT id_value FROM _cc_ids").fetchall()]
    blocked = _blocked(spec, seen)
    if blocked:
        con.execute("DELETE FROM _cc_ids WHERE list_contains($blocked, id_value)", {"blocked": blocked})
    con.register("_cc_mine", pa.table({"t": [t for t, _ in identifiers], "v": [v for _, v in identifiers]},
                                      schema=pa.schema([("t", pa.string()), ("v", pa.string())])))
    owned = ("SELECT k FROM (SELECT k, arg_min(id_type, (priority, id_type, id_value)) AS t, "
             "arg_min(id_value, (priority, id_type, id_value)) AS v FROM _cc_ids GROUP BY k) "
             "SEMI JOIN _cc_mine USING (t, v)")
    if source is not None:
        con.execute(f"CREATE TABLE {quoted} AS SELECT * EXCLUDE ({key}) FROM {source} WHERE {key} IN ({owned})")
        con.execute(f"DROP TABLE {source}")
    else:
        con.execute(f"DELETE FROM {quoted} WHERE ({key}) IS NULL OR ({key}) NOT IN ({owned})")
    con.unregister("_cc_mine")
    con.execute("DROP TABLE _cc_ids")


def _consent_granted(con: duckdb.DuckDBPyConnection, spec: ContextSpec, category: str) -> bool:
    """Whether the customer's latest consent (from their events in ``con``, else the category's
    default) grants ``category``; when it does, the events sent without it are removed from ``events``."""
    from customer_context.assemble.compiler import consent_granted_sql, consent_sql

    con.execute(f"CREATE TABLE _cc_consent AS SELECT message_id, {consent_sql(spec.consent[category].ids)} AS c "
                "FROM events")
    latest_sql = consent_granted_sql(spec, category, "arg_max(c, e.timestamp) FILTER (WHERE c IS NOT NULL)")
    latest = con.execute(f"SELECT {latest_sql} FROM events e JOIN _cc_consent USING (message_id)").fetchone()
    if latest is not None and latest[0]:
        con.execute("DELETE FROM events WHERE message_id IN (SELECT message_id FROM _cc_consent "
                    f"WHERE NOT {consent_granted_sql(spec, category, 'c')})")
        granted = True
    else:
        granted = False
    con.execute("DROP TABLE _cc_consent")
    return granted


def _cache_get(key: str) -> dict[str, Any] | None:
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del _cache[key]
            return None
        return hit[1]


def _cache_put(key: str, seconds: float, answer: dict[str, Any]) -> None:
    if seconds <= 0:
        return
    with _cache_lock:
        now = time.monotonic()
        if len(_cache) >= _CACHE_MAX:
            for stale in [k for k, (expires, _) in _cache.items() if expires <= now]:
                del _cache[stale]
            while len(_cache) >= _CACHE_MAX:
                del _cache[next(iter(_cache))]  # oldest first (insertion order)
        _cache[key] = (now + seconds, answer)


def _time_exceeded(name: str, budget: QueryBudget) -> BudgetExceeded:
    return BudgetExceeded(f"time budget: query {name!r} ran longer than {budget.max_seconds:g} s and was stopped "
                          "(narrow the parameters, or raise CUSTOMER_CONTEXT_QUERY_MAX_SECONDS)")


def run_named_query(lakehouse: Lakehouse, spec: ContextSpec, name: str, profile_id: str, params: JsonValue,
                    budget: QueryBudget | None = None,
                    identifiers: list[tuple[str, str]] | None = None, generation: int = 0) -> JsonObject:
    """Run one named query for one customer.

    Args:
        lakehouse: The Iceberg tables (:class:`customer_context.stores.iceberg.Lakehouse`).
        spec: The context spec holding the query under ``queries``.
        name: The query's name.
        profile_id: The customer (as resolved from any of their identifiers).
        params: The request body: a JSON object of parameter values.
        budget: Time, row, scan, memory and cache limits (defaults: :class:`QueryBudget`).
        identifiers: The customer's (type, value) pairs when the caller has them (from the snapshot,
            :func:`snapshot_identifiers`: one key-value read); else they are read from the identity
            graph, an unpartitioned table scan.
        generation: The serving store's deletion generation: part of the cache key, so no cached answer
            outlives a deletion job.

    Returns:
        ``{"query", "profile_id", "params", "columns", "rows" (objects, JSON-safe: timestamps as
        ISO-8601), "row_count", "truncated", "cached", "scanned_bytes", "elapsed_ms"}``.

    Raises:
        NotFound: no such query (the message lists them).
        InvalidRequest: a bad parameter (named, with the reason), or a value the query cannot use.
        BudgetExceeded: the scan would exceed ``max_scan_bytes`` (planned bytes and the limit, before
            reading), or the call ran past ``max_seconds`` or ``max_memory_bytes``.
        ConfigError: the query in the spec cannot run (an unknown table or column, a file read …).
    """
    budget = budget or QueryBudget()
    query = spec.queries.get(name)
    if query is None:
        raise NotFound(f"no named query {name!r}; declared: {', '.join(spec.queries) or 'none'}")
    bound = bind_params(query, params)
    limit = min(query.max_rows or budget.max_rows, budget.max_rows)
    shown = {p: params.get(p, query.params[p].default) for p in query.params}
    key = json.dumps([name, query.sql, profile_id, limit, bound, generation], default=repr, sort_keys=True)
    hit = _cache_get(key)
    if hit is not None:
        return {**hit, "rows": list(hit["rows"]), "cached": True}

    started = time.perf_counter()
    deadline = started + budget.max_seconds
    if identifiers is None:
        identifiers = _identifiers(lakehouse, profile_id)
    tables = tables_read(spec, query)
    scans: dict[str, Any] = {}
    planned = 0
    for table in tables:
        expr = row_filter(spec, table, identifiers) if lakehouse.exists(table) else None
        if expr is None:
            scans[table] = None
            continue
        scan = lakehouse.table(table).scan(row_filter=expr)
        planned += sum(task.file.file_size_in_bytes for task in scan.plan_files())
        scans[table] = scan
    if planned > budget.max_scan_bytes:
        raise BudgetExceeded(f"scan budget: query {name!r} would read {planned:,} bytes of data files; the limit is "
                             f"{budget.max_scan_bytes:,} (narrow the period, or raise "
                             "CUSTOMER_CONTEXT_QUERY_MAX_SCAN_BYTES)")
    data = {t: s.to_arrow() if s is not None else _empty(lakehouse, spec, t) for t, s in scans.items()}
    rows, columns, withheld = _execute(name, query, spec, data, identifiers, bound, limit, deadline, budget)
    truncated = len(rows) > limit
    answer = {
        "query": name, "profile_id": profile_id, "params": _json_safe(shown), "columns": columns,
        "rows": [dict(zip(columns, _json_safe(list(r)), strict=True)) for r in rows[:limit]],
        "row_count": min(len(rows), limit), "truncated": truncated, "cached": False,
        "scanned_bytes": planned, "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if withheld:
        answer["withheld"] = withheld
    _cache_put(key, budget.cache_seconds, answer)
    return answer


def _execute(name: str, query: NamedQuery, spec: ContextSpec, data: dict[str, Any],
             identifiers: list[tuple[str, str]], bound: dict[str, Any], limit: int, deadline: float,
             budget: QueryBudget) -> tuple[list[tuple[Any, ...]], list[str], str | None]:
    """Load the customer's rows into a locked DuckDB and run the query; returns (rows, columns,
    withheld: why the query did not run, when the customer's consent denies its category)."""
    import duckdb

    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        raise _time_exceeded(name, budget)
    con = duckdb.connect(":memory:", config={
        "threads": 1, "memory_limit": f"{max(budget.max_memory_bytes // MiB, 16)}MB", "temp_directory": "",
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "python_enable_replacements": False,
    })
    from customer_context.identifiers import register

    register(con)  # identifiers are normalised by the build's SQL, which calls the Python form
    def stop() -> None:
        with contextlib.suppress(duckdb.Error):  # already closed: the query ended as the timer fired
            con.interrupt()

    timer = threading.Timer(remaining, stop)
    timer.daemon = True
    timer.start()
    try:
        for table, rows in data.items():
            _keep_own_rows(con, spec, table, rows, identifiers)
            if time.perf_counter() >= deadline:
                raise _time_exceeded(name, budget)
        if query.consent and not _consent_granted(con, spec, query.consent):
            return [], [], (f"consent: the customer's latest consent denies {query.consent!r}, which query "
                            f"{name!r} needs")
        # from here on the connection sees only the tables above: no files, URLs, extensions or settings
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        sql = query.sql.strip().rstrip(";")
        result = con.execute(f"SELECT * FROM (\n{sql}\n) LIMIT {limit + 1}", bound)
        columns = [d[0] for d in result.description]
        return result.fetchall(), columns, None
    except duckdb.InterruptException:
        raise _time_exceeded(name, budget) from None
    except duckdb.OutOfMemoryException:
        raise BudgetExceeded(f"memory budget: query {name!r} needed more than {budget.max_memory_bytes:,} bytes "
                             "(narrow the parameters, or make the query aggregate sooner)") from None
    except (duckdb.ConversionException, duckdb.OutOfRangeException, duckdb.InvalidInputException) as exc:
        if time.perf_counter() >= deadline:
            raise _time_exceeded(name, budget) from None
        raise InvalidRequest(f"query {name!r} cannot use these parameters: {str(exc).splitlines()[0]}") from None
    except duckdb.Error as exc:
        if time.perf_counter() >= deadline:
            raise _time_exceeded(name, budget) from None
        raise ConfigError(f"named query {name!r} in the context spec failed: {str(exc).splitlines()[0]}") from None
    finally:
        timer.cancel()
        con.close()
