"""Compile the context spec into DuckDB SQL.

Everything here is string generation, no I/O: the build runs the SQL. Names in the SQL come from
the validated spec (identifier names, JSON keys matching ``[A-Za-z0-9_$-]``); literal values are
quoted with :func:`lit`. Traits over events become aggregates with ``FILTER (WHERE …)`` clauses in
**one** grouped scan of ``events_profiled``; ``most_frequent`` and ``sql`` traits run on their own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from customer_context.identifiers import normalize_sql
from customer_context.models.events import NAMEABLE_EVENT_COLUMNS
from customer_context.spec import (
    Condition,
    ContextSpec,
    EventFilter,
    IdentifierType,
    RecordTable,
    duration_seconds,
    is_currency,
)
from customer_context.sql_text import ident, lit
from customer_context.trait_kinds import TRAIT_KINDS, Aggregate

# Columns of `events` a trait may name directly (not JSON).
EVENT_COLUMNS = NAMEABLE_EVENT_COLUMNS
_JSON_ROOTS = {"properties": "properties", "traits": "traits", "context": "context"}
_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")


class SpecCompileError(ValueError):
    """The spec names something the compiler cannot turn into SQL."""


def iso_time(expr: str) -> str:
    """A timestamp as ISO-8601 text in UTC with milliseconds and ``Z`` (how snapshots show times)."""
    return f"strftime(({expr}) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ')"


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


# THE numeric rule: how every numeric trait kind, numeric `where` condition and the scores' revenue read a value.
# Its text (a JSON number as JSON writes it, a JSON string's content, a record column's value) is a decimal number
# — an optional minus, ASCII digits, an optional fraction, an optional exponent: 12.50, -3, 1e3 — whose magnitude
# is at most MAX_MAGNITUDE. Not numbers: "1,234.50", " 12", "+5", "1_000", "0x10", ".5", other scripts' digits,
# NaN, Infinity, true. The bound makes a sum's overflow impossible: a DECIMAL(38, 9) holds 10^29, so a profile
# would need 10^14 values at the bound to overflow one (two of 6e28 used to stop the build).
NUMBER_PATTERN = r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?"
MAX_MAGNITUDE = 1e15
_EXACT = "DECIMAL(38, 9)"


def number(expr: str) -> str:
    """SQL: ``expr`` under the numeric rule (above), as a DOUBLE; NULL when it fails it."""
    text = f"CAST({expr} AS VARCHAR)"
    cast = f"TRY_CAST({text} AS DOUBLE)"
    return (f"CASE WHEN regexp_full_match({text}, {lit(NUMBER_PATTERN)}) AND abs({cast}) <= {MAX_MAGNITUDE!r} "
            f"THEN {cast} END")


def not_a_number(expr: str) -> str:
    """SQL: ``expr`` holds a value that fails the numeric rule (absent is not invalid)."""
    return f"({expr} IS NOT NULL AND {number(expr)} IS NULL)"


@dataclass(frozen=True)
class Amount:
    """SQL reading one value under the numeric rule, in the unit it is added up in (see :func:`amount`)."""

    number: str       # DOUBLE in the unit; NULL when the value fails the rule or cannot be converted
    exact: str        # DECIMAL(38, 9) of the same: the value's own digits when no conversion was needed
    invalid: str      # BOOLEAN: a value is there but fails the rule (or, converted, leaves its bound)
    unconverted: str  # BOOLEAN: a number in a currency that cannot be converted into the unit


def currency_factor(spec: ContextSpec, unit: str, currency: str | None) -> str:
    """SQL: what one unit of the currency named by ``currency`` (SQL of its text; ``None``: the row names none)
    is worth in ``unit``, from the spec's rate table; NULL when it cannot be converted."""
    table = spec.currency.factors(unit)
    missing = "1.0" if spec.currency.missing == "assume" else "NULL"
    if currency is None:
        return missing
    code = f"upper(trim({currency}))"
    known = " ".join(f"WHEN {lit(c)} THEN {lit(f)}" for c, f in sorted(table.items()))
    return f"CASE WHEN {code} IS NULL OR {code} = '' THEN {missing} ELSE CASE {code} {known} END END"


def amount(spec: ContextSpec, expr: str, unit: str | None, currency: str | None) -> Amount:
    """``expr`` under the numeric rule; when ``unit`` is a currency (:func:`customer_context.spec.is_currency`),
    converted into it from the currency ``currency`` names (SQL of its text, ``None`` when rows name none) through
    the spec's rate table, and left out (``unconverted``) when the table cannot convert it. Never added as-is."""
    num = number(expr)
    exact = f"TRY_CAST(CAST({expr} AS VARCHAR) AS {_EXACT})"
    if not is_currency(unit):
        return Amount(num, f"CASE WHEN {num} IS NOT NULL THEN {exact} END", not_a_number(expr), "FALSE")
    assert unit is not None
    factor = currency_factor(spec, unit, currency)
    converted = f"({num}) * ({factor})"
    fits = f"abs({converted}) <= {MAX_MAGNITUDE!r}"
    return Amount(
        number=f"CASE WHEN {fits} THEN {converted} END",
        exact=f"CASE WHEN {fits} THEN CASE WHEN ({factor}) = 1 THEN {exact} ELSE CAST({converted} AS {_EXACT}) END END",
        invalid=f"({expr} IS NOT NULL AND ({num} IS NULL OR abs({converted}) > {MAX_MAGNITUDE!r}))",
        unconverted=f"({num} IS NOT NULL AND ({factor}) IS NULL)",
    )


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


def _is_numeric(cond: Condition | object) -> bool:
    """Whether a where-condition compares numbers (its value is read under the numeric rule)."""
    if not isinstance(cond, Condition):
        return isinstance(cond, int | float) and not isinstance(cond, bool)
    (op, value), = ((k, getattr(cond, k)) for k in cond.model_fields_set)
    return op in ("gt", "gte", "lt", "lte") or (op in ("eq", "ne") and isinstance(value, int | float)
                                                 and not isinstance(value, bool))


def _filter_parts(where: EventFilter | None, window_s: int | None,
                  as_of: str) -> tuple[list[str], list[tuple[str, str]]]:
    """An event trait's conditions: those that read no number, and (condition, value read) of the numeric ones."""
    parts = []
    numeric = []
    if window_s is not None:
        parts.append(f"timestamp >= {as_of} - INTERVAL {window_s} SECOND")
    if where is not None:
        if where.type:
            parts.append(f"type IN ({', '.join(lit(t) for t in where.type)})")
        if where.event:
            parts.append(f"event IN ({', '.join(lit(e) for e in where.event)})")
        for path, cond in where.properties.items():
            expr = event_value(path if "." in path else f"properties.{path}")
            if _is_numeric(cond):
                numeric.append((_condition(expr, cond), expr))
            else:
                parts.append(_condition(expr, cond))
    return parts, numeric


def event_filter(where: EventFilter | None, window_s: int | None, as_of: str = "$as_of") -> str:
    """The WHERE condition of an event trait (``TRUE`` when it counts every event)."""
    parts, numeric = _filter_parts(where, window_s, as_of)
    parts += [cond for cond, _ in numeric]
    return " AND ".join(parts) if parts else "TRUE"


@dataclass(frozen=True)
class TraitQueries:
    """The SQL computing every trait: one grouped scan per source plus the special ones."""

    grouped: dict[str, str]          # source table → one SELECT profile_id, <traits…> GROUP BY profile_id
    separate: dict[str, str]         # trait name → SELECT profile_id, value
    zero_default: tuple[str, ...]    # count-like traits: 0, FALSE or [] instead of NULL for profiles without rows
    # source table → (column, trait, what) of the per-profile counts its grouped scan adds beside the traits:
    # values the trait met that fail the numeric rule (what = "invalid"), or in a currency its unit cannot be
    # converted from ("unconverted")
    counts: dict[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)


def compile_traits(spec: ContextSpec) -> TraitQueries:
    """Compile every trait. ``$as_of`` stays a placeholder the build replaces with a literal."""
    grouped_cols: dict[str, list[str]] = {}
    counts: dict[str, list[tuple[str, str, str]]] = {}
    separate: dict[str, str] = {}
    zero: list[str] = []
    for name, trait in spec.traits.items():
        kind = TRAIT_KINDS[trait.kind]
        if kind.zero is not None:
            zero.append(name)
        if kind.sql is None:  # the spec's own query
            assert trait.sql
            separate[name] = trait.sql.strip().rstrip(";")
            continue
        numbers_read: list[str] = []  # the values of numeric where-conditions
        if trait.table == "events":
            value = event_value(trait.property) if trait.property else None
            parts, numeric = _filter_parts(trait.where if isinstance(trait.where, EventFilter) else None,
                                           duration_seconds(trait.window), "$as_of")
            numbers_read = [expr for _, expr in numeric]
            currency: str | None = event_value(spec.currency.property)
            source, time_col = "events_profiled", "timestamp"
        else:
            table = spec.record_tables[trait.table]
            value = ident(trait.property) if trait.property else None
            parts = [f"{ident(col)} = {lit(val)}" for col, val in (trait.where or {}).items()]  # type: ignore[union-attr]
            numeric = []
            window = duration_seconds(trait.window)
            if window is not None:
                parts.append(f"{ident(table.updated_at)} >= $as_of - INTERVAL {window} SECOND")
            currency = None  # record rows name no currency: `currency.missing` decides
            source, time_col = f"{trait.table}_profiled", ident(table.updated_at)
        if trait.consent:
            parts.append(consent_granted_sql(spec, trait.consent, ident('consent_' + trait.consent)))
        plain = " AND ".join(parts) or "TRUE"
        cond = " AND ".join([*parts, *(c for c, _ in numeric)]) or "TRUE"
        if kind.numeric and value is None:
            raise SpecCompileError(f"traits.{name}: property required")
        figure = amount(spec, value, trait.unit, currency) if kind.numeric and value else None
        cols = grouped_cols.setdefault(source, [])
        # what the trait met and could not read, counted per profile in the grouped scan (the build report sums)
        invalid = [not_a_number(expr) for expr in numbers_read] + ([figure.invalid] if figure else [])
        if invalid:
            column = f"_invalid_{name}"
            cols.append(f"count(*) FILTER (WHERE {plain} AND ({' OR '.join(invalid)})) AS {ident(column)}")
            counts.setdefault(source, []).append((column, name, "invalid"))
        sql = kind.sql(Aggregate(value, figure.number if figure else None, figure.exact if figure else None, cond,
                                 time_col, trait.limit, source, iso_time))
        if kind.own_query:
            separate[name] = sql
            continue
        cols.append(f"{sql} AS {ident(name)}")
        if figure is not None and is_currency(trait.unit):
            column = f"_unconverted_{name}"
            cols.append(f"count(*) FILTER (WHERE {cond} AND {figure.unconverted}) AS {ident(column)}")
            counts.setdefault(source, []).append((column, name, "unconverted"))
    grouped = {
        source: f"SELECT profile_id, {', '.join(cols)} FROM {source} GROUP BY profile_id"
        for source, cols in grouped_cols.items() if cols
    }
    return TraitQueries(grouped, separate, tuple(zero), {k: tuple(v) for k, v in counts.items()})


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
