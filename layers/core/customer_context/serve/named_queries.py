"""query_context: named, parameterised queries over ONE customer's lakehouse rows, under budgets.

How a call runs:

1. the customer's identifiers come from the ``identity_graph`` Iceberg table (by profile id);
2. each table the query names (``events`` and record tables) is scanned through pyiceberg with a
   row filter on those identifiers — its planned data files are summed first, and a scan above
   ``max_scan_bytes`` is refused before anything is read;
3. the filtered rows are loaded into a fresh in-memory DuckDB, which is then locked down: external
   access off (no files, no URLs, no other tables) and configuration locked, so the query can see
   only this customer's rows — no cross-customer read is expressible;
4. the query runs with its parameters bound (``$name``), under a wall-time limit
   (``con.interrupt()`` from a timer) and a row limit (rows beyond it are cut, ``truncated: true``);
5. identical calls within ``cache_seconds`` are answered from a small in-process cache.

Imports duckdb and pyarrow inside functions only: this module is importable on the serving path.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from customer_context.errors import BudgetExceeded, InvalidRequest, NotFound
from customer_context.spec import ContextSpec, NamedQuery, QueryParam

# event columns holding identifiers sent at the top level of an event
_EVENT_ID_COLUMNS = {"userId": "user_id", "anonymousId": "anonymous_id", "groupId": "group_id",
                     "previousId": "previous_id"}


@dataclass(frozen=True)
class QueryBudget:
    """Limits of one named-query call."""

    max_seconds: float = 5.0
    max_rows: int = 200
    max_scan_bytes: int = 256 * 1024 * 1024
    cache_seconds: float = 30.0


_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget cached results (tests)."""
    with _cache_lock:
        _cache.clear()


def _coerce(name: str, param: QueryParam, value: Any) -> Any:
    if value is None:
        return None
    kind = param.type
    try:
        if kind == "string":
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError("expected an integer")
            return int(value)
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("expected a number")
            return float(value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if not isinstance(value, str):
            raise ValueError("expected an ISO-8601 date-time")
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError as exc:
        reason = str(exc) if str(exc).startswith("expected") else f"expected {kind}"
        raise InvalidRequest(f"params.{name}: {reason}, got {value!r}",
                             details=[{"field": f"params.{name}", "reason": reason}]) from None


def bind_params(query: NamedQuery, given: dict[str, Any]) -> dict[str, Any]:
    """Check and type the call's parameters.

    Raises:
        InvalidRequest: an unknown or missing parameter, or a value of the wrong type (named).
    """
    if not isinstance(given, dict):
        raise InvalidRequest("body: expected a JSON object of parameters")
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        raise InvalidRequest(f"params.{unknown[0]}: not a parameter of this query; it takes: "
                             f"{', '.join(query.params) or 'none'}")
    bound: dict[str, Any] = {}
    for name, param in query.params.items():
        value = given.get(name, param.default)
        if value is None and param.required:
            raise InvalidRequest(f"params.{name}: required ({param.description or param.type})",
                                 details=[{"field": f"params.{name}", "reason": "required"}])
        bound[name] = _coerce(name, param, value)
    return bound


def _tables_used(spec: ContextSpec, sql: str) -> list[str]:
    names = ["events", *spec.record_tables]
    return [n for n in names if re.search(rf"\b{re.escape(n)}\b", sql)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def _identifiers(lakehouse: Any, profile_id: str) -> list[tuple[str, str]]:
    from pyiceberg.expressions import EqualTo

    if not lakehouse.exists("identity_graph"):
        return []
    rows = lakehouse.scan("identity_graph", row_filter=EqualTo("profile_id", profile_id),
                          selected_fields=("identifier_type", "identifier_value")).to_pylist()
    return sorted({(r["identifier_type"], r["identifier_value"]) for r in rows})


def _row_filter(spec: ContextSpec, table: str, identifiers: Iterable[tuple[str, str]]) -> Any:
    """The customer's rows of one table, as a pyiceberg expression (None: no row can match)."""
    from pyiceberg.expressions import In, Or

    by_type: dict[str, list[str]] = {}
    for id_type, value in identifiers:
        by_type.setdefault(id_type, []).append(value)
    if table == "events":
        columns = [(_EVENT_ID_COLUMNS[path], id_type) for id_type, rule in spec.identifiers.types.items()
                   for path in rule.from_events if path in _EVENT_ID_COLUMNS]
    else:
        columns = [(column, id_type) for id_type, column in spec.record_tables[table].identifiers.items()]
    terms = [In(column, set(by_type[id_type])) for column, id_type in columns if by_type.get(id_type)]
    if not terms:
        return None
    expr = terms[0]
    for term in terms[1:]:
        expr = Or(expr, term)
    return expr


def run_named_query(lakehouse: Any, spec: ContextSpec, name: str, profile_id: str, params: dict[str, Any],
                    budget: QueryBudget | None = None) -> dict[str, Any]:
    """Run one named query for one customer.

    Raises:
        NotFound: no such query (the message lists them).
        InvalidRequest: bad parameters (named).
        BudgetExceeded: the scan, the time or the SQL's own limits would be exceeded (which, and by how much).
    """
    budget = budget or QueryBudget()
    query = spec.queries.get(name)
    if query is None:
        raise NotFound(f"no named query {name!r}; declared: {', '.join(spec.queries) or 'none'}")
    bound = bind_params(query, params)
    key = json.dumps([name, profile_id, bound], default=str, sort_keys=True)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return {**hit[1], "cached": True}

    started = time.perf_counter()
    identifiers = _identifiers(lakehouse, profile_id)
    tables = _tables_used(spec, query.sql)
    scans: dict[str, Any] = {}
    planned = 0
    for table in tables:
        expr = _row_filter(spec, table, identifiers)
        if expr is None or not lakehouse.exists(table):
            scans[table] = None
            continue
        scan = lakehouse.table(table).scan(row_filter=expr)
        planned += sum(task.file.file_size_in_bytes for task in scan.plan_files())
        scans[table] = scan
    if planned > budget.max_scan_bytes:
        raise BudgetExceeded(f"scan budget: query {name!r} would read {planned:,} bytes of data files; the limit is "
                             f"{budget.max_scan_bytes:,} (narrow the period, or raise "
                             "CUSTOMER_CONTEXT_QUERY_MAX_SCAN_BYTES)")

    import duckdb

    con = duckdb.connect(":memory:", config={"threads": 1})
    try:
        for table in tables:
            schema = lakehouse.arrow_schema(table) if lakehouse.exists(table) else None
            data = scans[table].to_arrow() if scans[table] is not None else (
                schema.empty_table() if schema is not None else None)
            if data is None:
                raise NotFound(f"table {table!r} has no data yet")
            con.register("_rows", data)
            dedupe = " QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY received_at) = 1" \
                if table == "events" else ""
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM _rows{dedupe}')
            con.unregister("_rows")
        # from here on the connection sees only the tables above: no files, URLs or other catalogs
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        limit = min(query.max_rows or budget.max_rows, budget.max_rows)
        timer = threading.Timer(budget.max_seconds, con.interrupt)
        timer.start()
        try:
            result = con.execute(f"SELECT * FROM ({query.sql.strip().rstrip(';')}) LIMIT {limit + 1}", bound)
            columns = [d[0] for d in result.description]
            rows = result.fetchall()
        except duckdb.InterruptException:
            raise BudgetExceeded(f"time budget: query {name!r} ran longer than {budget.max_seconds:g} s and was "
                                 "stopped") from None
        except duckdb.Error as exc:
            if time.perf_counter() - started >= budget.max_seconds:
                raise BudgetExceeded(f"time budget: query {name!r} ran longer than {budget.max_seconds:g} s and "
                                     "was stopped") from None
            raise InvalidRequest(f"query {name!r} failed: {str(exc).splitlines()[0]}") from None
        finally:
            timer.cancel()
    finally:
        con.close()
    truncated = len(rows) > limit
    answer = {
        "query": name, "profile_id": profile_id, "params": _json_safe(bound), "columns": columns,
        "rows": [dict(zip(columns, _json_safe(list(r)), strict=True)) for r in rows[:limit]],
        "row_count": min(len(rows), limit), "truncated": truncated, "cached": False,
        "scanned_bytes": planned, "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    with _cache_lock:
        if len(_cache) > 1000:
            _cache.clear()
        _cache[key] = (time.monotonic() + budget.cache_seconds, answer)
    return answer
