"""The deletion job: remove one customer from every copy, and nobody else.

**What is hers.** A row is the customer's when the build would give it to one of her profiles: its most
important identifier that has a profile is hers (:mod:`customer_context.assemble.attribution`, the
build's own rule, over the last build's ``identity_graph`` plus the identifiers the regulation names).
So a device she shared keeps the other person's signed-in rows, and a CRM row is matched by its
normalised value (``" Gone@Example.COM"`` is hers). Her rows are deleted.

**What mentions her.** A row that is someone else's but carries one of her identifiers — another
user's identify holding her email, an alias naming her device, a ticket whose text quotes her address,
a snapshot of someone else listing her — keeps its place with her values removed: an identifier
column holding one of her values becomes null, a JSON text column (properties, traits, context, raw
events, snapshot documents) loses every value that is hers (by each identifier type's normalisation,
and by its token where the PII policy hashes) and has her values cut out of longer texts, and other
text columns have them cut out (``[deleted]``). Texts are searched for values of at least
``MIN_TEXT`` characters (a two-letter id is removed where it stands alone, never out of a sentence).

**Where.** Every table of the lakehouse: ``events``, ``rejected_events`` (attributed from the raw JSON),
every record table, ``identity_graph``, ``identity_rejected_edges``, ``context_snapshots``,
``profile_state``, ``serving_audit`` (by profile, and by the keyed token of her identifiers), ``build_rows``
(emptied: the next build, a full one, writes it again), and any other table (her values cut out).
Rewrites are copy-on-write: the affected rows' keys are deleted and the kept rows appended in one
transaction. Then every table gets a snapshot that carries no manifest
entry of a removed file (their column bounds hold values too), every older snapshot is expired and the
files only they referenced are deleted. Outside the lakehouse: spooled events in S3 (claim checks: hers
emptied, others' cut), record drops under ``imports/`` that mention her (their rows are in the record
tables already), and in DynamoDB her snapshots, aliases and live tail, and other customers' served
snapshots and live-tail items that mention her (cut like their history).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from customer_context.assemble import attribution
from customer_context.assemble.compiler import event_identifiers_sql, record_identifier_sql
from customer_context.identifiers import normalize_identifier
from customer_context.ports import JsonValue, Row
from customer_context.spec import ContextSpec
from customer_context.sql_text import ident
from customer_context.stores import row_filters

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

    from customer_context.stores.iceberg import Lakehouse as IcebergLakehouse  # commits through its retry loop

MIN_TEXT = 5      # shortest value cut out of a longer text
MIN_DIGITS = 7    # shortest digits-only value (a phone) searched inside texts
DELETED = "[deleted]"
_KEY = "__cc_k"   # row number of a batch while it is attributed
# event columns holding identifiers (nulled when they hold hers in someone else's row)
EVENT_ID_COLUMNS = ("user_id", "anonymous_id", "previous_id", "group_id")
EVENT_JSON_COLUMNS = ("properties", "traits", "context", "integrations", "extra")


@dataclass
class Target:
    """The customer: her profiles, identifiers (as the identity graph holds them) and what to search for.

    Args:
        spec: The context spec (identifier types and their normalisation).
        profiles: Her profile ids.
        identifiers: ``(type, value)`` in lookup form (normalised; tokens where the PII policy hashes).
        raw_values: Values as the regulation named them (searched in texts too).
        pii: The PII policy (tokens of values found in texts, audit tokens); optional.
    """

    spec: ContextSpec
    profiles: set[str]
    identifiers: set[tuple[str, str]]
    raw_values: set[str] = field(default_factory=set)
    pii: Any | None = None

    def __post_init__(self) -> None:
        self.by_type: dict[str, set[str]] = {}
        for id_type, value in self.identifiers:
            self.by_type.setdefault(id_type, set()).add(value)
        self.values = {v for _, v in self.identifiers}
        texts = {v.strip().lower() for v in self.values | self.raw_values}
        texts |= {v for t, vs in self.by_type.items() for v in vs if t in self.spec.identifiers.types}
        self.texts = sorted({t for t in texts if len(t) >= MIN_TEXT and not t.isdigit()}, key=len, reverse=True)
        digit_types = {t for t, r in self.spec.identifiers.types.items() if "digits" in r.normalize}
        self.digits = sorted({v for t in digit_types for v in self.by_type.get(t, ()) if len(v) >= MIN_DIGITS}
                             | {d for v in self.raw_values if len(d := re.sub(r"\D", "", v)) >= MIN_DIGITS
                                and len(d) >= len(v) / 2})
        patterns = [re.escape(t) for t in self.texts] + [r"\+?" + r"[\s().-]*".join(d) for d in self.digits]
        self._pattern = re.compile("|".join(patterns), re.IGNORECASE) if patterns else None
        audit = self.pii.audit_value if self.pii is not None else (lambda v: "")
        self.audit_values = {a for v in self.values if (a := audit(v))} | self.values

    def __bool__(self) -> bool:
        return bool(self.profiles or self.identifiers)

    def is_hers(self, value: JsonValue) -> bool:
        """Whether a single value is one of her identifiers, under any type's normalisation (or token)."""
        if value is None or isinstance(value, bool | dict | list):
            return False
        text = str(value)
        for id_type, values in self.by_type.items():
            if id_type not in self.spec.identifiers.types:
                continue
            normal = normalize_identifier(self.spec, id_type, text)
            if normal and (normal in values or (self.pii is not None and id_type in self.pii.hashed_types
                                                and self.pii.hash(normal, id_type) in values)):
                return True
        return text in self.values

    def cut(self, text: str) -> str:
        """A text with her values cut out."""
        return self._pattern.sub(DELETED, text) if self._pattern is not None else text

    def scrub(self, value: JsonValue) -> JsonValue:
        """A JSON value without her: her values become null, texts lose hers (keys too)."""
        if isinstance(value, dict):
            return {self.cut(str(k)): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if self.is_hers(value):
            return None
        return self.cut(value) if isinstance(value, str) else value

    def scrub_json(self, text: str) -> str:
        """A JSON text without her (plain text if it does not parse)."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return self.cut(text)
        clean = self.scrub(data)
        return text if clean == data else json.dumps(clean, separators=(",", ":"), ensure_ascii=False)

    def candidate_sql(self, columns: Iterable[str]) -> str:
        """A DuckDB condition true for rows whose text columns may hold her (exactness in Python after)."""
        terms = []
        for column in columns:
            col = ident(column)
            terms += [f"contains(lower({col}), {_lit(t)})" for t in self.texts]
            terms += [f"contains(regexp_replace({col}, '[^0-9]', '', 'g'), {_lit(d)})" for d in self.digits]
            terms += [f"{col} IN ({', '.join(_lit(v) for v in sorted(self.values))})"] if self.values else []
        return " OR ".join(terms) or "FALSE"


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class TableRule:
    """How one table is cleaned.

    Attributes:
        group: A non-null column: the affected rows' values of it are deleted, the kept rows of those values
            appended again (copy-on-write by key).
        doomed: SQL over batch ``b`` (and tables ``owner``, ``her_profiles``, ``her_ids``, ``her_audit``):
            true for her rows; ``None``: no row is hers as such.
        ids: Columns holding identifiers (nulled when they hold hers).
        json: JSON text columns (scrubbed value by value).
        prepare: Creates table ``owner`` (``__cc_k``, profile_id) for the batch in ``b``.
    """

    group: str
    doomed: str | None = None
    ids: tuple[str, ...] = ()
    json: tuple[str, ...] = ()
    prepare: Callable[[Any], None] | None = None


def _owner_of_events(spec: ContextSpec, source: str = "b") -> Callable[[Any], None]:
    def prepare(con: Any) -> None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE b_ids AS SELECT {_KEY}, ids FROM (SELECT {_KEY}, "
                    f"{event_identifiers_sql(spec)} AS ids FROM {source}) WHERE len(ids) > 0")
        con.execute("DROP TABLE IF EXISTS owner")
        attribution.attribute(con, "b_ids", _KEY, "graph", "owner")
    return prepare


def _owner_of_records(spec: ContextSpec, name: str) -> Callable[[Any], None]:
    table = spec.record_tables[name]
    key = " || '|' || ".join(f"CAST({ident(k)} AS VARCHAR)" for k in table.primary_key)

    def prepare(con: Any) -> None:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM b")
        con.execute(f"CREATE OR REPLACE TEMP TABLE b_long AS {record_identifier_sql(spec, name, table)}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE b_rows AS {attribution.record_ids_sql('b_long')}")
        con.execute("DROP TABLE IF EXISTS b_owner")
        attribution.attribute(con, "b_rows", "row_key", "graph", "b_owner")
        con.execute("DROP TABLE IF EXISTS owner")
        con.execute(f"CREATE TEMP TABLE owner AS SELECT b.{_KEY}, o.profile_id FROM b JOIN b_owner o "
                    f"ON o.row_key = ({key})")
    return prepare


def _rejected_as_events(spec: ContextSpec) -> Callable[[Any], None]:
    """Rejected events are attributed from their raw JSON, read as the event it was."""
    def prepare(con: Any) -> None:
        def field_sql(path: str, text: bool = True) -> str:
            fn = "json_extract_string" if text else "json_extract"
            return f"CASE WHEN json_valid(raw) THEN {fn}(raw, '$.{path}') END"
        con.execute(f"CREATE OR REPLACE TEMP TABLE b_events AS SELECT {_KEY}, {field_sql('userId')} AS user_id, "
                    f"{field_sql('anonymousId')} AS anonymous_id, CAST({field_sql('traits', False)} AS VARCHAR) "
                    f"AS traits, CAST({field_sql('context', False)} AS VARCHAR) AS context FROM b")
        _owner_of_events(spec, "b_events")(con)
    return prepare


def _rules(spec: ContextSpec, names: Iterable[str]) -> dict[str, TableRule]:
    owned = f"{_KEY} IN (SELECT {_KEY} FROM owner WHERE profile_id IN (SELECT profile_id FROM her_profiles))"
    rules = {
        "events": TableRule("message_id", owned, EVENT_ID_COLUMNS, EVENT_JSON_COLUMNS, _owner_of_events(spec)),
        "rejected_events": TableRule("rejection_id", owned, (), ("raw",), _rejected_as_events(spec)),
        "identity_graph": TableRule("profile_id", "profile_id IN (SELECT profile_id FROM her_profiles) OR "
                                    "identifier_value IN (SELECT v FROM her_ids)"),
        "identity_rejected_edges": TableRule("a_value", "a_value IN (SELECT v FROM her_ids) OR "
                                             "b_value IN (SELECT v FROM her_ids)"),
        "context_snapshots": TableRule("profile_id", "profile_id IN (SELECT profile_id FROM her_profiles)",
                                       json=("doc",)),
        "profile_state": TableRule("profile_id", "profile_id IN (SELECT profile_id FROM her_profiles)"),
        # the build's copy of the events it attributed, with each one's normalised identifiers: emptied (the
        # next build, a full one after any deletion, writes it again from the cleaned events)
        "build_rows": TableRule("message_id", "TRUE"),
        "serving_audit": TableRule("audit_id", "profile_id IN (SELECT profile_id FROM her_profiles) OR "
                                   "identifier_value IN (SELECT v FROM her_audit)"),
        # a rejected record row cannot be attributed (its raw text failed to parse as a row): one that
        # names her is deleted
        "rejected_records": TableRule("source_key", "TRUE"),
    }
    for name, table in spec.record_tables.items():
        rules[name] = TableRule(table.primary_key[0], owned if table.identifiers else None,
                                tuple(table.identifiers.values()), (),
                                _owner_of_records(spec, name) if table.identifiers else None)
    for name in names:
        rules.setdefault(name, TableRule(""))
    return rules


class Cleaner:
    """Runs the rules over the lakehouse's tables (and rows from elsewhere) in one DuckDB connection."""

    def __init__(self, lakehouse: IcebergLakehouse, spec: ContextSpec, target: Target) -> None:
        import duckdb
        import pyarrow as pa

        from customer_context.stores.tables import record_table_def

        self.lakehouse = lakehouse
        self.spec = spec
        self.target = target
        for name, table in spec.record_tables.items():
            lakehouse.define(record_table_def(name, table.columns, table.primary_key, table.description))
        self.names = lakehouse.table_names()
        self.rules = _rules(spec, [*self.names, *spec.record_tables])
        from customer_context import identifiers

        self.con = duckdb.connect()
        identifiers.register(self.con)  # the attribution SQL normalises identifiers as the build does
        self.con.execute("SET TimeZone = 'UTC'")
        graph = (lakehouse.scan("identity_graph", selected_fields=("identifier_type", "identifier_value",
                                                                   "profile_id"))
                 if lakehouse.exists("identity_graph") else None)
        first = sorted(target.profiles)[0] if target.profiles else None
        # her identifiers the graph does not know (named by the regulation, or seen only live) are hers too
        extra = pa.table({"identifier_type": [t for t, _ in sorted(target.identifiers)],
                          "identifier_value": [v for _, v in sorted(target.identifiers)],
                          "profile_id": [first] * len(target.identifiers)},
                         schema=pa.schema([("identifier_type", pa.string()), ("identifier_value", pa.string()),
                                           ("profile_id", pa.string())]))
        self.con.register("graph_extra", extra)
        if graph is not None:
            self.con.register("graph_arrow", graph)
            self.con.execute("CREATE TABLE graph AS SELECT * FROM graph_arrow UNION ALL SELECT * FROM graph_extra "
                             "WHERE profile_id IS NOT NULL AND (identifier_type, identifier_value) NOT IN "
                             "(SELECT (identifier_type, identifier_value) FROM graph_arrow)")
            self.con.unregister("graph_arrow")
        else:
            self.con.execute("CREATE TABLE graph AS SELECT * FROM graph_extra WHERE profile_id IS NOT NULL")
        self.con.unregister("graph_extra")
        for name, values in (("her_profiles", target.profiles), ("her_ids", target.values),
                             ("her_audit", target.audit_values)):
            column = "profile_id" if name == "her_profiles" else "v"
            self.con.register(f"{name}_arrow", pa.table({column: pa.array(sorted(values), pa.string())}))
            self.con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_arrow")
            self.con.unregister(f"{name}_arrow")

    def close(self) -> None:
        self.con.close()

    def decide(self, rule: TableRule, batch: pa.Table | pa.RecordBatch, every_row: bool
               ) -> list[tuple[Row, bool, bool, str | None]]:
        """``(row, hers, changed, owner)`` for the rows of ``batch`` that are hers or mention her
        (``every_row``: for all rows). ``row`` is scrubbed when it is not hers; ``owner``: whose it is, when
        known."""
        import pyarrow as pa

        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        table = table.append_column(_KEY, pa.array(range(table.num_rows), pa.int64()))
        self.con.register("b_arrow", table)
        self.con.execute("CREATE OR REPLACE TEMP TABLE b AS SELECT * FROM b_arrow")
        self.con.unregister("b_arrow")
        if rule.prepare is not None:
            rule.prepare(self.con)
        doomed = rule.doomed or "FALSE"
        if rule.doomed == "TRUE":  # any row that mentions her is hers
            doomed = self.target.candidate_sql(strings)
        where = "TRUE" if every_row else f"({doomed}) OR ({self.target.candidate_sql(strings)})"
        owner = ("(SELECT o.profile_id FROM owner o WHERE o.__cc_k = b.__cc_k)" if rule.prepare is not None
                 else "b.profile_id" if "profile_id" in strings else "NULL")
        result = self.con.execute(f"SELECT *, ({doomed}) AS __cc_hers, {owner} AS __cc_owner FROM b WHERE {where}")
        names = [d[0] for d in result.description]
        out = []
        for values in result.fetchall():
            row = dict(zip(names, values, strict=True))
            hers, whose = bool(row.pop("__cc_hers")), row.pop("__cc_owner")
            row.pop(_KEY)
            changed = False
            if not hers:
                for column in strings:
                    value = row.get(column)
                    if value is None:
                        continue
                    if column in rule.ids and self.target.is_hers(value):
                        new: Any = None
                    elif column in rule.json:
                        new = self.target.scrub_json(value)
                    elif column in rule.ids:
                        new = value
                    else:
                        new = self.target.cut(value)
                    if new != value:
                        row[column] = new
                        changed = True
            if hers or changed or every_row:
                out.append((row, hers, changed, whose))
        return out

    def clean(self, name: str, rule: TableRule) -> tuple[int, int, set[str]]:
        """Delete her rows of one table and scrub the rows that mention her; returns (rows deleted, rows
        rewritten, owners of the rewritten rows that have one)."""
        import pyarrow as pa

        if not self.lakehouse.exists(name):
            return 0, 0, set()
        table = self.lakehouse.table(name)
        schema = table.schema().as_arrow()
        group = rule.group or schema.names[0]
        affected: set[Any] = set()
        null_group = False
        for batch in table.scan().to_arrow_batch_reader():
            for row, _, _, _ in self.decide(rule, batch, every_row=False):
                if row[group] is None:
                    null_group = True
                else:
                    affected.add(row[group])
        if not affected and not null_group:
            return 0, 0, set()
        terms = (([row_filters.one_of(group, affected)] if affected else [])
                 + ([row_filters.is_null(group)] if null_group else []))
        deleted = rewritten = 0
        kept: list[dict[str, Any]] = []
        owners: set[str] = set()
        for term in terms:
            data = table.scan(row_filter=term).to_arrow()
            for row, hers, changed, whose in self.decide(rule, data, every_row=True):
                if hers:
                    deleted += 1
                    continue
                kept.append(row)
                if changed:
                    rewritten += 1
                    if whose:
                        owners.add(whose)
        rows = pa.Table.from_pylist(kept, schema=schema) if kept else None

        def rewrite(t: Any) -> None:
            with t.transaction() as tx:
                for term in terms:
                    tx.delete(term)
                if rows is not None:
                    tx.append(rows)

        self.lakehouse._commit(name, rewrite)
        return deleted, rewritten, owners


    def clean_lakehouse(self, step: Callable[[str, int], None]) -> set[str]:
        """Every table: her rows deleted, mentions scrubbed, removed files' manifests and history purged.

        Returns:
            The other customers whose rows were rewritten (their served snapshots and tails are scrubbed too).
        """
        others: set[str] = set()
        # the identity graph last: the other tables are attributed by it
        for name in sorted(self.names, key=lambda n: n == "identity_graph"):
            deleted, rewritten, owners = self.clean(name, self.rules[name])
            step(name, deleted)
            if rewritten:
                step(f"{name}_rewritten", rewritten)
            others |= owners
        # rows removed above are gone from the current snapshots; the manifests of the commits that removed
        # them, and older snapshots, still hold them (data files, bounds): drop those entries, expire the
        # old snapshots and delete the files only they referenced
        removed = 0
        for name in self.names:
            drop_removed_entries(self.lakehouse, name)
            removed += purge_history(self.lakehouse, name)
        step("files_purged", removed)
        return others - self.target.profiles


def drop_removed_entries(lakehouse: IcebergLakehouse, name: str) -> None:
    """Commit a snapshot that keeps no manifest of removed files only (an empty fast append): the
    manifests a delete leaves behind list each removed file with its column bounds."""
    table = lakehouse.table(name)
    if table.current_snapshot() is None:
        return

    def commit(t: Any) -> None:
        with t.transaction() as tx, tx.update_snapshot().fast_append():
            pass

    lakehouse._commit(name, commit)


def referenced_files(table: Table, live_only: bool = True) -> set[str]:
    """Data files, manifests (their column bounds hold values too) and manifest lists of every snapshot
    (``live_only``: not the entries that only record a file's removal)."""
    paths: set[str] = set()
    for snapshot in table.snapshots():
        if snapshot.manifest_list:
            paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            paths.add(manifest.manifest_path)
            paths.update(entry.data_file.file_path
                         for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=live_only))
    return paths


def purge_history(lakehouse: IcebergLakehouse, name: str) -> int:
    """Expire every snapshot but the current one and delete the files only they referenced.

    Only files known to the table's history are deleted (never files of an in-flight commit).
    """
    table = lakehouse.catalog.load_table((lakehouse.namespace, name))
    current = table.current_snapshot()
    if current is None:
        return 0
    before = referenced_files(table, live_only=False)
    old = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != current.snapshot_id]
    if old:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    table = lakehouse.catalog.load_table((lakehouse.namespace, name))
    kept = referenced_files(table, live_only=True)
    removed = 0
    for path in sorted(before - kept):
        try:
            table.io.delete(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


