"""Compile the context spec into DuckDB SQL.

Everything here is string generation, no I/O: the build runs the SQL. Names in the SQL come from
the validated spec (identifier names, JSON keys matching ``[A-Za-z0-9_$-]``); literal values are
quoted with :func:`lit`. Traits over events become aggregates with ``FILTER (WHERE …)`` clauses in
**one** grouped scan of ``events_profiled``; ``most_frequent`` and ``sql`` traits run on their own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from customer_context.identifiers import normalize_sql
from customer_context.spec import (
    NUMERIC_KINDS,
    Condition,
    ContextSpec,
    EventFilter,
    IdentifierType,
    RecordTable,
    duration_seconds,
)

# Columns of `events` a trait may name directly (not JSON).
EVENT_COLUMNS = frozenset({
    "message_id", "type", "event", "user_id", "anonymous_id", "group_id", "previous_id", "timestamp",
    "source_id", "channel", "ip", "user_agent", "locale", "library_name", "library_version", "name", "category",
    "page_url", "page_path", "page_title", "page_referrer", "page_search",
})
_JSON_ROOTS = {"properties": "properties", "traits": "traits", "context": "context"}
_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")


class SpecCompileError(ValueError):
    """The spec names something the compiler cannot turn into SQL."""


def lit(value: object) -> str:
    """A SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def iso_time(expr: str) -> str:
    """A timestamp as ISO-8601 text in UTC with milliseconds and ``Z`` (how snapshots show times)."""
    return f"strftime(({expr}) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ')"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def event_value(path: str) -> str:
    """SQL for an event field: ``properties.x``, ``traits.x``, ``context.a.b`` or a column."""
    if path in EVENT_COLUMNS:
        return ident(path)
    root, _, rest = path.partition(".")
    if root not in _JSON_ROOTS or not rest:
        raise SpecCompileError(f"{path!r}: expected properties.<key>, traits.<key>, context.<key> "
                               f"or one of {', '.join(sorted(EVENT_COLUMNS))}")
    keys = rest.split(".")
    for key in keys:
        if not _KEY.match(key):
            raise SpecCompileError(f"{path!r}: key {key!r} has characters other than letters, digits, _ $ -")
    json_path = "$." + ".".join(f'"{k}"' for k in keys)
    return f"json_extract_string({_JSON_ROOTS[root]}, {lit(json_path)})"


def number(expr: str) -> str:
    """SQL: ``expr`` as a finite DOUBLE; NULL when it is no number, or NaN, ±Infinity or beyond a double's
    range (``TRY_CAST`` reads the text ``'Infinity'``, ``'nan'`` and ``'1e400'`` as non-finite doubles,
    which no trait or score may count, sum or show)."""
    cast = f"TRY_CAST({expr} AS DOUBLE)"
    return f"CASE WHEN isfinite({cast}) THEN {cast} END"


def _condition(expr: str, cond: Condition | object) -> str:
    if not isinstance(cond, Condition):
        cond = Condition(eq=cond)  # type: ignore[arg-type]
    (op, value), = ((k, getattr(cond, k)) for k in cond.model_fields_set)
    numeric = number(expr)
    if op == "in_":
        return f"{expr} IN ({', '.join(lit(str(v).lower() if isinstance(v, bool) else v) for v in value)})"
    if op in ("eq", "ne"):
        sql_op = "=" if op == "eq" else "<>"
        if isinstance(value, bool):
            return f"{expr} {sql_op} {lit(str(value).lower())}"
        if isinstance(value, int | float):
            return f"{numeric} {sql_op} {lit(float(value))}"
        return f"{expr} {sql_op} {lit(value)}"
    sql_op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    return f"{numeric} {sql_op} {lit(float(value))}"


def event_filter(where: EventFilter | None, window_s: int | None, as_of: str = "$as_of") -> str:
    """The WHERE condition of an event trait (``TRUE`` when it counts every event)."""
    parts = []
    if window_s is not None:
        parts.append(f"timestamp >= {as_of} - INTERVAL {window_s} SECOND")
    if where is not None:
        if where.type:
            parts.append(f"type IN ({', '.join(lit(t) for t in where.type)})")
        if where.event:
            parts.append(f"event IN ({', '.join(lit(e) for e in where.event)})")
        for path, cond in where.properties.items():
            parts.append(_condition(event_value(path if "." in path else f"properties.{path}"), cond))
    return " AND ".join(parts) if parts else "TRUE"


def _aggregate(kind: str, value: str | None, cond: str, time_col: str, limit: int) -> str:
    """One FILTER-ed aggregate."""
    nn = f"{cond} AND {value} IS NOT NULL" if value else cond
    num = number(value) if value else None
    match kind:
        case "count":
            return f"count(*) FILTER (WHERE {cond})"
        case "exists":
            return f"coalesce(count(*) FILTER (WHERE {cond}) > 0, FALSE)"
        case "sum" | "avg":
            # exact decimal sums: a DOUBLE sum depends on the order parallel threads add in, which
            # flips the last rounded digit between builds and re-lands unchanged customers
            dec = f"TRY_CAST({value} AS DECIMAL(38, 9))"
            return f"CAST(round({kind}({dec}) FILTER (WHERE {nn} AND {dec} IS NOT NULL), 4) AS DOUBLE)"
        case "min" | "max":
            return f"round({kind}({num}) FILTER (WHERE {nn} AND {num} IS NOT NULL), 4)"
        case "first_value":
            return f"arg_min({value}, ({time_col}, {value})) FILTER (WHERE {nn})"
        case "last_value":
            return f"arg_max({value}, ({time_col}, {value})) FILTER (WHERE {nn})"
        case "first_time":
            return iso_time(f"min({time_col}) FILTER (WHERE {cond})")
        case "last_time":
            return iso_time(f"max({time_col}) FILTER (WHERE {cond})")
        case "unique_count":
            return f"count(DISTINCT {value}) FILTER (WHERE {nn})"
        case "unique_list":
            return f"list_slice(list_sort(list_distinct(list({value}) FILTER (WHERE {nn}))), 1, {limit})"
    raise SpecCompileError(f"kind {kind!r} cannot be an aggregate")


@dataclass(frozen=True)
class TraitQueries:
    """The SQL computing every trait: one grouped scan per source plus the special ones."""

    grouped: dict[str, str]          # source table → one SELECT profile_id, <traits…> GROUP BY profile_id
    separate: dict[str, str]         # trait name → SELECT profile_id, value
    zero_default: tuple[str, ...]    # count-like traits: 0, FALSE or [] instead of NULL for profiles without rows


def compile_traits(spec: ContextSpec) -> TraitQueries:
    """Compile every trait. ``$as_of`` stays a placeholder the build replaces with a literal."""
    grouped_cols: dict[str, list[str]] = {}
    separate: dict[str, str] = {}
    zero: list[str] = []
    for name, trait in spec.traits.items():
        if trait.kind in ("count", "exists", "unique_count", "unique_list"):
            zero.append(name)
        if trait.kind == "sql":
            assert trait.sql
            separate[name] = trait.sql.strip().rstrip(";")
            continue
        if trait.table == "events":
            value = event_value(trait.property) if trait.property else None
            cond = event_filter(trait.where if isinstance(trait.where, EventFilter) else None,
                                duration_seconds(trait.window))
            source, time_col = "events_profiled", "timestamp"
        else:
            table = spec.record_tables[trait.table]
            value = ident(trait.property) if trait.property else None
            parts = [f"{ident(col)} = {lit(val)}" for col, val in (trait.where or {}).items()]  # type: ignore[union-attr]
            window = duration_seconds(trait.window)
            if window is not None:
                parts.append(f"{ident(table.updated_at)} >= $as_of - INTERVAL {window} SECOND")
            cond = " AND ".join(parts) or "TRUE"
            source, time_col = f"{trait.table}_profiled", ident(table.updated_at)
        if trait.consent:
            cond = f"({cond}) AND {consent_granted_sql(spec, trait.consent, ident('consent_' + trait.consent))}"
        if trait.kind == "most_frequent":
            separate[name] = _most_frequent(source, value, cond)  # type: ignore[arg-type]
            continue
        if trait.kind in NUMERIC_KINDS and value is None:
            raise SpecCompileError(f"traits.{name}: property required")
        grouped_cols.setdefault(source, []).append(
            f"{_aggregate(trait.kind, value, cond, time_col, trait.limit)} AS {ident(name)}")
    grouped = {
        source: f"SELECT profile_id, {', '.join(cols)} FROM {source} GROUP BY profile_id"
        for source, cols in grouped_cols.items()
    }
    return TraitQueries(grouped, separate, tuple(zero))


def _most_frequent(source: str, value: str, cond: str) -> str:
    """Segment's rule: the most frequent value seen at least twice; ties → alphabetical first."""
    return (
        f"SELECT profile_id, arg_min(v, (-n, v)) AS value FROM ("
        f"SELECT profile_id, {value} AS v, count(*) AS n FROM {source} "
        f"WHERE {cond} AND {value} IS NOT NULL GROUP BY ALL HAVING count(*) >= 2"
        f") GROUP BY profile_id"
    )


def consent_granted_sql(spec: ContextSpec, category: str, consent: str) -> str:
    """Whether ``consent`` (SQL: an event's or the latest consent to ``category``, NULL when nothing was
    said) grants it: the category's declared default stands in for NULL."""
    default = "TRUE" if spec.consent[category].default == "granted" else "FALSE"
    return f"coalesce({consent}, {default})"


def consent_sql(ids: list[str]) -> str:
    """One event's consent to a category named ``ids``: FALSE if denied, TRUE if allowed, else NULL.

    Reads RudderStack's ``context.consentManagement`` (``allowedConsentIds`` / ``deniedConsentIds``)
    and Segment's ``context.consent.categoryPreferences``.
    """
    listed = "[" + ", ".join(lit(i) for i in ids) + "]"
    def listed_in(key: str) -> str:
        ids_json = f"json_extract(context, '$.consentManagement.{key}')"
        return f"list_has_any(coalesce(TRY_CAST({ids_json} AS VARCHAR[]), []), {listed})"

    denied, allowed = listed_in("deniedConsentIds"), listed_in("allowedConsentIds")
    prefs = [f"TRY_CAST(json_extract(context, {lit('$.consent.categoryPreferences.' + json.dumps(i))}) AS BOOLEAN)"
             for i in ids]
    segment = f"coalesce({', '.join(prefs)})"
    return f"CASE WHEN {denied} THEN FALSE WHEN {allowed} THEN TRUE ELSE {segment} END"


def event_identifier_sql(spec: ContextSpec, key: str = "message_id") -> str:
    """One row per (event, identifier) found on it: ``key`` (the event's key column), timestamp, id_type,
    id_value, priority.

    Reads ``events_unique``. ``externalIds.<type>`` reads ``context.externalIds`` entries of that type.
    """
    key = ident(key)
    selects = []
    for id_type, rule in spec.identifiers.types.items():
        for path in rule.from_events:
            if path == "userId":
                expr, source = "user_id", "events_unique"
            elif path == "anonymousId":
                expr, source = "anonymous_id", "events_unique"
            elif path.startswith("externalIds."):
                ext_type = path.split(".", 1)[1]
                source = (f"(SELECT {key}, timestamp, unnest(from_json(json_extract(context, '$.externalIds'), "
                          "'[{\"id\":\"VARCHAR\",\"type\":\"VARCHAR\"}]')) AS ext FROM events_unique "
                          "WHERE json_type(json_extract(context, '$.externalIds')) = 'ARRAY')")
                selects.append(
                    f"SELECT {key}, timestamp, {lit(id_type)} AS id_type, {normalize_sql('ext.id', rule)} "
                    f"AS id_value, {rule.priority} AS priority FROM {source} WHERE ext.type = {lit(ext_type)}")
                continue
            elif path.startswith("context.traits."):
                expr, source = event_value("context.traits." + path.split(".", 2)[2]), "events_unique"
            else:
                expr, source = event_value(path), "events_unique"
            selects.append(
                f"SELECT {key}, timestamp, {lit(id_type)} AS id_type, {normalize_sql(expr, rule)} AS id_value, "
                f"{rule.priority} AS priority FROM {source}")
    union = "\nUNION ALL\n".join(selects)
    return f"SELECT * FROM ({union}) WHERE id_value IS NOT NULL"


def event_identifiers_sql(spec: ContextSpec) -> str:
    """SQL expression over an ``events_unique`` row: the identifiers found on the event, a list of
    ``{p, t, v}`` structs (priority, type, normalised value) without empty values, sorted by
    ``(priority, type, value)``, so its first element is the event's most important identifier.

    ``externalIds.<type>`` reads ``context.externalIds`` entries of that type.
    """
    singles: list[str] = []
    lists: list[str] = []
    for id_type, rule in spec.identifiers.types.items():
        def item(expr: str, rule: IdentifierType = rule, id_type: str = id_type) -> str:
            return f"{{'p': {rule.priority}, 't': {lit(id_type)}, 'v': {normalize_sql(expr, rule)}}}"

        for path in rule.from_events:
            if path == "userId":
                singles.append(item("user_id"))
            elif path == "anonymousId":
                singles.append(item("anonymous_id"))
            elif path.startswith("externalIds."):
                ext_type = path.split(".", 1)[1]
                ext = "json_extract(context, '$.externalIds')"
                entries = f"from_json({ext}, '[{{\"id\":\"VARCHAR\",\"type\":\"VARCHAR\"}}]')"
                lists.append(f"CASE WHEN json_type({ext}) = 'ARRAY' THEN list_transform(list_filter({entries}, "
                             f"lambda e: e.type = {lit(ext_type)}), lambda e: {item('e.id')}) ELSE [] END")
            elif path.startswith("context.traits."):
                singles.append(item(event_value("context.traits." + path.split(".", 2)[2])))
            else:
                singles.append(item(event_value(path)))
    parts = ([f"[{', '.join(singles)}]"] if singles else []) + lists
    if not parts:
        return "[]::STRUCT(p INTEGER, t VARCHAR, v VARCHAR)[]"
    combined = parts[0] if len(parts) == 1 else f"list_concat({', '.join(parts)})"
    return f"list_sort(list_filter({combined}, lambda x: x.v IS NOT NULL))"


def record_identifier_sql(spec: ContextSpec, table_name: str, table: RecordTable) -> str:
    """One row per (record row, identifier): row_key, updated_at, id_type, id_value, priority."""
    key = " || '|' || ".join(f"CAST({ident(k)} AS VARCHAR)" for k in table.primary_key)
    selects = [
        f"SELECT {key} AS row_key, {ident(table.updated_at)} AS updated_at, {lit(id_type)} AS id_type, "
        f"{normalize_sql(ident(column), spec.identifiers.types[id_type])} AS id_value, "
        f"{spec.identifiers.types[id_type].priority} AS priority FROM {ident(table_name)}"
        for id_type, column in table.identifiers.items()
    ]
    return f"SELECT * FROM ({' UNION ALL '.join(selects)}) WHERE id_value IS NOT NULL"
