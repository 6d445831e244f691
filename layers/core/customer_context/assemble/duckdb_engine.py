"""DuckDBEngine: the build's engine (:class:`customer_context.assemble.engine.BuildEngine`) on an in-memory
DuckDB database.

It owns the connection (compressed in-memory tables, spilling to the temporary directory, UTC) and the SQL:
what :mod:`customer_context.assemble.compiler` compiles from the spec, and the build's own statements here.
Its working tables, in the order the stages make them:

1. **read**: ``events_unique`` (the events, projected to the columns the spec needs, loaded through pyiceberg
   into Arrow a chunk of files at a time, deduplicated by ``message_id``) and one table per record table;
2. **identity**: ``event_ids``, ``alias_edges``, ``<table>__ids`` (the identifiers), then ``id_map`` (the
   resolved graph), ``profiles`` (each with its slice), ``events_profiled`` and ``<table>_profiled``;
3. **traits**: ``traits``; 4. **scores**: ``scores``;
5. **snapshots**: ``prev_state`` / ``prev_ids`` (what the last build landed), ``profile_identifiers``, and per
   slice ``slice_docs`` / ``slice_fields`` / ``slice_all``, every slice's hashes kept in ``docs``.

Before the events are attributed, those read from ``events`` are streamed with their identifiers to the build
(which writes them to ``build_rows``). An incremental build reads only the events appended
since the last build into ``events_unique``, and ``build_rows`` into ``kept``; after identity it keeps in
``profiles`` only the profiles the new events touch and adds their kept rows to ``events_unique`` /
``event_ids`` (:meth:`DuckDBEngine.narrow_to_affected`): every later stage then computes those profiles only.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from customer_context.assemble import attribution, compiler
from customer_context.assemble.engine import (
    EventsRead,
    EventsToRead,
    IdentityInputs,
    KnownCopies,
    LandedSample,
    PurchaseSummary,
    Suppressions,
    TraitCounts,
)
from customer_context.models.events import BUILD_EVENT_COLUMNS
from customer_context.observability import logger
from customer_context.spec import ContextSpec, duration_seconds
from customer_context.sql_text import event_content_sql, first_copy_order, ident, lit
from customer_context.stores.context_store import BOOKKEEPING_KEYS, FIELD_SECTIONS
from customer_context.trait_kinds import TRAIT_KINDS

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from customer_context.stores.iceberg import Lakehouse

# Events are read into DuckDB (and compressed) this many at a time.
EVENTS_PER_LOAD = 1_000_000
# Hex digits of a field value's MD5 kept in profile_state to tell the next build whether the field changed.
FIELD_HASH_CHARS = 16
# The scores table when there are none.
_NO_SCORES = ("CREATE TABLE scores AS SELECT profile_id, NULL::DOUBLE AS churn_risk, NULL::DOUBLE AS p_alive, "
              "NULL::DOUBLE AS expected_orders, NULL::DOUBLE AS ltv, NULL::INTEGER AS repeat_purchases, _slice "
              "FROM profiles ORDER BY _slice")


class DuckDBEngine:
    """The build's working data in an in-memory DuckDB database (see the module docstring)."""

    def __init__(self, memory_limit: str | None = None) -> None:
        import duckdb

        from customer_context import identifiers

        con = self.con = duckdb.connect()
        identifiers.register(con)  # the Python form of the identifier normalisations SQL cannot say exactly
        # tables are compressed at each checkpoint (a fifth of their plain in-memory size)
        con.execute("ATTACH ':memory:' AS build (COMPRESS)")
        con.execute("USE build")
        if memory_limit:
            con.execute(f"SET memory_limit = {lit(memory_limit)}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")  # lets DuckDB stream large results in less memory
        # an in-memory database spills to disk only where told (Lambda: /tmp, sized by EphemeralStorage)
        con.execute(f"SET temp_directory = {lit(str(Path(tempfile.gettempdir()) / 'customer-context-duckdb'))}")
        self.new_below: int | None = None  # incremental: ``ev`` of the events read from ``events`` is below it
        self.kept_read = False  # incremental: table ``kept`` holds what earlier builds kept
        self.previous_read = False  # tables ``prev_state`` and ``prev_ids`` hold what the last build landed

    def load_events(self, lakehouse: Lakehouse, spec: ContextSpec, events: EventsToRead) -> EventsRead:
        """See :class:`~customer_context.assemble.engine.BuildEngine`; table ``events_unique``."""
        return _register_events(self.con, lakehouse, spec, events)

    def load_kept_rows(self, lakehouse: Lakehouse, spec: ContextSpec) -> KnownCopies:
        """Table ``kept`` (``build_rows``: what the last builds kept, projected like ``events_unique``, with
        their identifiers); the new events' copies of a messageId it holds are dropped from ``events_unique``
        (the kept copy came first), unless they came first (counted: the caller builds in full)."""
        con = self.con
        columns = [*_event_columns(spec), "time_flag", "ids"]
        if lakehouse.exists("build_rows"):
            kept = lakehouse.scan("build_rows", selected_fields=tuple(columns))
        else:  # the last build read no events
            import pyarrow as pa

            schema = lakehouse.arrow_schema("build_rows")
            kept = pa.Table.from_pylist([], schema=pa.schema([schema.field(c) for c in columns]))
        con.register("kept_arrow", kept)
        con.execute("CREATE TABLE kept AS SELECT * FROM kept_arrow")
        con.unregister("kept_arrow")
        self.kept_read = True
        del kept
        content = event_content_sql()
        con.execute(f"CREATE TEMP TABLE copies AS SELECT n.ev, n.received_at AS n_at, n.content AS n_content, "
                    f"k.received_at AS k_at, k.content AS k_content FROM "
                    f"(SELECT ev, message_id, received_at, {content} AS content FROM events_unique) n JOIN "
                    f"(SELECT message_id, received_at, {content} AS content FROM kept WHERE message_id IN "
                    "(SELECT message_id FROM events_unique)) k USING (message_id)")
        dropped, conflicting, earlier = (int(v or 0) for v in con.sql(
            "SELECT count(*), count(*) FILTER (WHERE n_content <> k_content), "
            "count(*) FILTER (WHERE (n_at, n_content) < (k_at, k_content)) FROM copies").fetchall()[0])
        con.execute("DELETE FROM events_unique WHERE ev IN (SELECT ev FROM copies)")
        con.execute("DROP TABLE copies")
        return KnownCopies(dropped, conflicting, earlier)

    def narrow_to_affected(self) -> int:
        """Keep in ``profiles`` only the profiles holding an identifier of a new event, and add to
        ``events_unique`` / ``event_ids`` the kept rows that may be theirs (those carrying one of their
        identifiers; attribution picks each row's owner). Returns how many profiles."""
        con = self.con
        con.execute("CREATE TEMP TABLE touched AS SELECT DISTINCT m.profile_id FROM id_map m JOIN ("
                    "SELECT x.t AS t, x.v AS v FROM (SELECT unnest(ids) AS x FROM event_ids) "
                    "UNION SELECT a_type, a_value FROM alias_edges UNION SELECT b_type, b_value FROM alias_edges) n "
                    "ON m.identifier_type = n.t AND m.identifier_value = n.v")
        con.execute("DELETE FROM profiles WHERE profile_id NOT IN (SELECT profile_id FROM touched)")
        con.execute("CREATE TEMP TABLE their_ids AS SELECT identifier_type AS t, identifier_value AS v FROM id_map "
                    "WHERE profile_id IN (SELECT profile_id FROM touched)")
        start = self.new_below = int(_scalar(con, "SELECT coalesce(max(ev) + 1, 0) FROM events_unique"))
        con.execute(f"CREATE TEMP TABLE theirs AS SELECT *, {start} + row_number() OVER () - 1 AS ev FROM kept "
                    "WHERE rowid IN (SELECT k.rowid FROM (SELECT rowid, unnest(ids) AS x FROM kept) k "
                    "JOIN their_ids i ON i.t = k.x.t AND i.v = k.x.v)")
        columns = ", ".join(ident(c) for c in con.sql("SELECT * FROM events_unique LIMIT 0").columns)
        con.execute(f"INSERT INTO events_unique ({columns}) SELECT {columns} FROM theirs")
        con.execute("INSERT INTO event_ids SELECT ev, timestamp, type, ids FROM theirs")
        for table in ("theirs", "their_ids", "touched", "kept"):
            con.execute(f"DROP TABLE {table}")
        return int(_scalar(con, "SELECT count(*) FROM profiles"))

    def load_records(self, lakehouse: Lakehouse, spec: ContextSpec) -> None:
        """One table per record table."""
        _register_records(self.con, lakehouse, spec)

    def identity_inputs(self, spec: ContextSpec, suppressions: Suppressions | None) -> IdentityInputs:
        """See :func:`_identity_inputs` (the kept rows' user ids are known too, when read)."""
        return IdentityInputs(*_identity_inputs(self.con, spec, suppressions, "kept" if self.kept_read else None))

    def assign_profiles(self, graph: pa.Table, slices: int) -> int:
        """Tables ``id_map`` (the graph) and ``profiles`` (each profile's slice, kept (like traits and scores)
        in slice order: a slice's rows are read alone)."""
        con = self.con
        con.register("id_map", graph)
        con.execute(f"CREATE TABLE profiles AS SELECT profile_id, CAST({_slice_sql(slices)} AS INTEGER) AS _slice "
                    "FROM (SELECT DISTINCT profile_id FROM id_map) ORDER BY _slice")
        return int(_scalar(con, "SELECT count(*) FROM profiles"))

    def attribute_rows(self, spec: ContextSpec, slices: int,
                       keep: Callable[[pa.RecordBatchReader], None] | None = None) -> None:
        """See :func:`_profile_events`; ``keep`` first reads the events read from ``events`` (not the kept ones
        :meth:`narrow_to_affected` added) with their identifiers, streamed."""
        if keep is not None:
            below = f"WHERE e.ev < {self.new_below}" if self.new_below is not None else ""
            keep(self.con.sql("SELECT e.* EXCLUDE (ev), i.ids FROM events_unique e JOIN event_ids i USING (ev) "
                              f"{below}").to_arrow_reader(50_000))
        _profile_events(self.con, spec, slices)

    def compute_traits(self, spec: ContextSpec, as_of: datetime) -> TraitCounts:
        """See :func:`_compute_traits`."""
        return _compute_traits(self.con, spec, as_of)

    def purchase_summary(self, spec: ContextSpec, as_of: datetime) -> PurchaseSummary:
        """Each purchase's revenue under the numeric rule, in the base currency. A customer is fitted only on
        inputs the models can take: every purchase with a trusted time and a positive revenue. Anyone else is
        left out of both fits (their own scores null, counted in the report), so one bad customer changes nobody
        else's scores."""
        con = self.con
        revenue = compiler.amount(spec, compiler.event_value(f"properties.{spec.scores.revenue_property}"),
                                  spec.currency.base, compiler.event_value(spec.currency.property))
        con.execute(
            "CREATE TEMP TABLE score_purchases AS SELECT profile_id, date_trunc('day', timestamp) AS day, "
            f"time_flag IS NOT NULL AS flagged, {revenue.exact} AS rev FROM events_profiled "
            f"WHERE type = 'track' AND event = {lit(spec.scores.purchase_event)}")
        con.execute("CREATE TEMP TABLE score_buyers AS SELECT profile_id, bool_or(flagged) AS flagged_time, "
                    "bool_or(rev IS NULL OR rev <= 0) AS invalid_revenue FROM score_purchases GROUP BY profile_id")
        left_out = dict(zip(("invalid_revenue", "flagged_time"), (int(n) for n in con.sql(
            "SELECT count(*) FILTER (WHERE invalid_revenue), count(*) FILTER (WHERE flagged_time) FROM score_buyers"
        ).fetchall()[0]), strict=True))
        left_out = {reason: n for reason, n in left_out.items() if n}
        summary = con.sql(
            "WITH daily AS (SELECT profile_id, day, sum(rev) AS rev FROM score_purchases WHERE profile_id IN "
            "(SELECT profile_id FROM score_buyers WHERE NOT flagged_time AND NOT invalid_revenue) GROUP BY ALL) "
            "SELECT profile_id, count(*) - 1 AS frequency, "
            "date_diff('second', min(day), max(day)) / 86400.0 AS recency, "
            f"greatest(date_diff('second', min(day), {lit(as_of)}) / 86400.0, "
            "date_diff('second', min(day), max(day)) / 86400.0) AS T, "
            "CAST(CASE WHEN count(*) > 1 THEN (sum(rev) - arg_min(rev, day)) / (count(*) - 1) ELSE 0 END AS DOUBLE) "
            "AS monetary FROM daily GROUP BY profile_id ORDER BY profile_id"  # a fixed order: the fit sums in it
        ).fetchnumpy()
        con.execute("DROP TABLE score_purchases")
        con.execute("DROP TABLE score_buyers")
        return PurchaseSummary(summary, left_out)

    def store_scores(self, scores: pa.Table | None) -> None:
        """Table ``scores``, in slice order."""
        con = self.con
        if scores is None:
            con.execute(_NO_SCORES)
            return
        con.register("scores_arrow", scores)
        con.execute("CREATE TABLE scores AS SELECT p.profile_id, s.churn_risk, s.p_alive, s.expected_orders, s.ltv, "
                    "s.repeat_purchases, p._slice FROM profiles p LEFT JOIN scores_arrow s USING (profile_id) "
                    "ORDER BY p._slice")
        con.unregister("scores_arrow")

    def load_previous(self, lakehouse: Lakehouse) -> int:
        """Tables ``prev_state`` and ``prev_ids`` (:func:`_register_previous`), and ``profile_identifiers`` and
        ``docs`` the slices fill."""
        con = self.con
        if not self.previous_read:
            _register_previous(con, lakehouse)
            self.previous_read = True
        con.execute(
            "CREATE TABLE profile_identifiers AS SELECT profile_id, any_value(_slice) AS _slice, "
            "to_json(map_from_entries(list_sort(list((identifier_type, vals))))) AS identifiers FROM ("
            "SELECT profile_id, identifier_type, list_sort(list(identifier_value)) AS vals FROM id_map "
            "GROUP BY ALL) JOIN profiles USING (profile_id) GROUP BY profile_id ORDER BY _slice")
        con.execute("CREATE TABLE docs (profile_id VARCHAR, content_hash VARCHAR, version BIGINT, changed BOOLEAN, "
                    "field_hashes VARCHAR, changed_at VARCHAR)")
        return int(_scalar(con, "SELECT count(*) FROM prev_state"))

    def landed_sample(self, size: int) -> LandedSample:
        """``size`` snapshots and aliases at random."""
        sample = self.con.sql(f"SELECT profile_id, content_hash FROM prev_state USING SAMPLE {size} ROWS").fetchall()
        aliases = self.con.sql("SELECT identifier_type, identifier_value, profile_id FROM prev_ids "
                               f"USING SAMPLE {size} ROWS").fetchall()
        return LandedSample(dict(sample), aliases)

    def previous_sample(self, lakehouse: Lakehouse, size: int) -> LandedSample:
        """Tables ``prev_state`` and ``prev_ids`` read and sampled (kept for :meth:`load_previous`: what the build
        landed last cannot change while this one runs, or a deletion job made it start again)."""
        if not self.previous_read:
            _register_previous(self.con, lakehouse)
            self.previous_read = True
        return self.landed_sample(size)

    def render_slice(self, spec: ContextSpec, index: int, slices: int, built_at: datetime) -> None:
        """Tables ``slice_docs`` (a new content is a new version; an unchanged one keeps its version, and lands
        only when everything lands again), ``slice_fields`` (when each field last changed: recomputed for the
        changed profiles only, carried for the others) and ``slice_all``; its hashes added to ``docs``."""
        con = self.con
        con.execute(
            "CREATE TEMP TABLE slice_docs AS SELECT *, CASE WHEN changed THEN coalesce(prev_version, 0) + 1 "
            "ELSE prev_version END AS version FROM (SELECT d.profile_id, d.content_hash, d.content, "
            "s.version AS prev_version, s.content_hash IS DISTINCT FROM d.content_hash AS changed, "
            "s.profile_id IS NOT NULL AS known, s.field_hashes AS prev_hashes, "
            "s.changed_at AS prev_changed_at "
            f"FROM ({_snapshot_sql(spec, (index, slices))}) d LEFT JOIN prev_state s USING (profile_id))")
        con.execute(f"CREATE TEMP TABLE slice_fields AS {_field_changes_sql(built_at)}")
        con.execute("CREATE TEMP TABLE slice_all AS SELECT d.*, CASE WHEN f.profile_id IS NULL THEN "
                    "d.prev_hashes ELSE f.field_hashes END AS field_hashes, CASE WHEN f.profile_id IS NULL "
                    "THEN d.prev_changed_at ELSE f.changed_at END AS changed_at "
                    "FROM slice_docs d LEFT JOIN slice_fields f USING (profile_id)")
        con.execute("INSERT INTO docs SELECT profile_id, content_hash, version, changed, field_hashes, "
                    "changed_at FROM slice_all")

    def slice_documents(self, max_bytes: int, built_at: datetime, data_as_of: datetime | None,
                        everything: bool) -> Iterator[pa.RecordBatch]:
        """Batches of 5,000 documents of ``slice_all``."""
        yield from self.con.sql(
            f"SELECT profile_id, version, content_hash, doc, strlen(doc) > {max_bytes} AS over, "
            f"changed, changed_at FROM (SELECT *, {_doc_sql(built_at, data_as_of)} AS doc "
            f"FROM slice_all WHERE changed OR {'TRUE' if everything else 'FALSE'})").to_arrow_reader(5000)

    def drop_slice(self) -> None:
        """Drop the slice's tables."""
        for table in ("slice_all", "slice_fields", "slice_docs"):
            self.con.execute(f"DROP TABLE {table}")

    def changed_profiles(self) -> int:
        """Changed rows of ``docs``."""
        return int(_scalar(self.con, "SELECT count(*) FROM docs WHERE changed"))

    def _rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        for batch in self.con.sql(sql).to_arrow_reader(50_000):
            yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

    def moved_aliases(self, everything: bool) -> Iterator[tuple[str, str, str]]:
        """``id_map`` rows not in ``prev_ids`` as they are (or every one)."""
        return self._rows(
            "SELECT m.identifier_type, m.identifier_value, m.profile_id FROM id_map m LEFT JOIN prev_ids p "
            "ON p.identifier_type = m.identifier_type AND p.identifier_value = m.identifier_value "
            f"WHERE p.profile_id IS DISTINCT FROM m.profile_id OR {'TRUE' if everything else 'FALSE'}")

    def orphan_aliases(self) -> Iterator[tuple[str, str]]:
        """``prev_ids`` rows not in ``id_map``."""
        return self._rows(
            "SELECT p.identifier_type, p.identifier_value FROM prev_ids p ANTI JOIN id_map m "
            "ON p.identifier_type = m.identifier_type AND p.identifier_value = m.identifier_value")

    def merged_profiles(self) -> Iterator[str]:
        """Profiles of ``prev_ids`` not in ``id_map``."""
        return (r[0] for r in self._rows(
            "SELECT DISTINCT profile_id FROM prev_ids WHERE profile_id NOT IN (SELECT profile_id FROM id_map) "
            "ORDER BY 1"))

    def profile_state(self, built_at: datetime) -> pa.Table:
        """``docs`` with each profile's build time: this build's when it changed, else the previous one; and the
        previous state of the profiles not rendered (an incremental build's untouched ones) that still exist."""
        return self.con.sql(
            f"SELECT d.profile_id, d.version, d.content_hash, CASE WHEN d.changed THEN {lit(built_at)} "
            "ELSE s.built_at END AS built_at, d.field_hashes, d.changed_at FROM docs d "
            "LEFT JOIN prev_state s USING (profile_id) UNION ALL "
            "SELECT profile_id, version, content_hash, built_at, field_hashes, changed_at FROM prev_state "
            "WHERE profile_id NOT IN (SELECT profile_id FROM docs) "
            "AND profile_id IN (SELECT profile_id FROM id_map)"
        ).to_arrow_table()

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return con.sql(sql).fetchall()[0][0]


def _event_columns(spec: ContextSpec) -> list[str]:
    text = json.dumps(spec.model_dump(mode="json"))
    columns = list(BUILD_EVENT_COLUMNS)
    if "context." in text or "externalIds." in text or spec.consent:
        columns.append("context")
    return columns


def _event_chunks(lakehouse: Lakehouse, columns: list[str],
                  events: EventsToRead) -> tuple[pa.Schema, Iterator[pa.Table]]:
    """The events table's columns as Arrow tables of about ``EVENTS_PER_LOAD`` rows, whole data files each,
    read one chunk ahead in a thread (pyiceberg's own batch reader reads every file at once); ``events`` says
    which snapshot, and whether only the data files appended since an earlier one."""
    import pyarrow as pa

    if not lakehouse.exists("events") or events.snapshot is None:
        schema = lakehouse.arrow_schema("events")
        return pa.schema([schema.field(c) for c in columns]), iter(())
    from concurrent.futures import ThreadPoolExecutor

    from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow

    table = lakehouse.catalog.load_table((lakehouse.namespace, "events"))
    scan = table.scan(selected_fields=tuple(columns), snapshot_id=events.snapshot)
    projected = scan.projection()
    target = schema_to_pyarrow(projected)
    reader = ArrowScan(scan.table_metadata, scan.io, projected, scan.row_filter, scan.case_sensitive)
    read_before = ({task.file.file_path for task in table.scan(snapshot_id=events.since).plan_files()}
                   if events.since is not None else set())
    groups: list[list[Any]] = [[]]
    rows = 0
    for task in scan.plan_files():
        if task.file.file_path in read_before:
            continue
        if rows >= EVENTS_PER_LOAD:
            groups.append([])
            rows = 0
        groups[-1].append(task)
        rows += task.file.record_count

    def read(tasks: list[Any]) -> pa.Table:
        return pa.Table.from_batches([b.cast(target) for b in reader.to_record_batches(tasks)], target)

    def chunks() -> Iterator[pa.Table]:
        with ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(read, groups[0])
            for tasks in groups[1:]:
                chunk = ahead.result()
                ahead = pool.submit(read, tasks)
                yield chunk
                del chunk
            yield ahead.result()

    return target, chunks()


def _register_events(con: duckdb.DuckDBPyConnection, lakehouse: Lakehouse, spec: ContextSpec,
                     events: EventsToRead) -> EventsRead:
    """Table ``events_unique``: the events (projected to the columns the spec needs) without duplicate
    ``message_id`` (:func:`sql_text.first_copy_order`: the first received copy wins), plus ``ev``, a BIGINT key
    the build joins on, and ``time_flag`` (:func:`_flag_times`). Returns how many, the conflicting
    messageIds, the flagged times and the newest ``received_at``.

    The events are loaded a chunk of files at a time, each chunk compressed right away (checkpoint of
    the compressed in-memory database): neither an Arrow copy of all the events nor the whole
    uncompressed table is ever held.
    """
    import numpy as np
    import pyarrow as pa

    schema, chunks = _event_chunks(lakehouse, _event_columns(spec), events)
    con.register("events_chunk", pa.Table.from_pylist([], schema=schema.append(pa.field("ev", pa.int64()))))
    con.execute("CREATE TABLE events_unique AS SELECT *, NULL::VARCHAR AS time_flag FROM events_chunk")
    con.unregister("events_chunk")
    total = 0
    for chunk in chunks:
        chunk = chunk.append_column("ev", pa.array(np.arange(total, total + chunk.num_rows, dtype=np.int64)))
        total += chunk.num_rows
        con.register("events_chunk", chunk)
        con.execute("INSERT INTO events_unique SELECT *, NULL FROM events_chunk")
        con.unregister("events_chunk")
        del chunk
        con.execute("CHECKPOINT")
    pa.default_memory_pool().release_unused()
    # Duplicates: candidates by a hash of message_id (a small aggregate), then exact per candidate.
    con.execute("CREATE TEMP TABLE dup_hashes AS SELECT hash(message_id) AS h FROM events_unique "
                "GROUP BY ALL HAVING count(*) > 1")
    conflicting = 0
    if _scalar(con, "SELECT count(*) FROM dup_hashes"):
        con.execute(f"CREATE TEMP TABLE dup_copies AS SELECT ev, message_id, received_at, "
                    f"{event_content_sql()} AS content FROM events_unique "
                    "WHERE hash(message_id) IN (SELECT h FROM dup_hashes)")
        conflicting = int(_scalar(
            con, "SELECT count(*) FROM (SELECT message_id FROM dup_copies GROUP BY message_id "
                 "HAVING count(DISTINCT content) > 1)"))
        con.execute("DELETE FROM events_unique WHERE ev IN (SELECT ev FROM dup_copies QUALIFY row_number() OVER "
                    f"(PARTITION BY message_id ORDER BY {first_copy_order('content')}) > 1)")
        con.execute("DROP TABLE dup_copies")
        if conflicting:
            logger.warning("messageIds sent with different contents: the first received copy is kept",
                           extra={"conflicting_message_ids": conflicting})
    con.execute("DROP TABLE dup_hashes")
    count = int(_scalar(con, "SELECT count(*) FROM events_unique"))
    flagged = _flag_times(con, spec)
    max_received = _scalar(con, "SELECT max(received_at) FROM events_unique")
    return EventsRead(count, conflicting, flagged, max_received.astimezone(UTC) if max_received else None)


def _flag_times(con: duckdb.DuckDBPyConnection, spec: ContextSpec) -> dict[str, int]:
    """The event-time rule (``spec.event_times``): an event dated more than ``future_margin`` after it was
    received (``future``), or before ``earliest`` (``before_earliest``), gets that ``time_flag`` and its
    ``received_at`` as its time, so a wrong clock moves no window, first or last time, or score. The stored event
    keeps what was sent. Returns the flagged events per reason (those there are)."""
    times = spec.event_times
    future = f"timestamp > received_at + INTERVAL {duration_seconds(times.future_margin)} SECOND"
    old = f"timestamp < TIMESTAMPTZ {lit(times.earliest.isoformat() + ' 00:00:00+00')}"
    counts = con.sql(f"SELECT count(*) FILTER (WHERE {future}), count(*) FILTER (WHERE {old}) "
                     "FROM events_unique").fetchall()[0]
    flagged = {reason: int(n) for reason, n in zip(("future", "before_earliest"), counts, strict=True) if n}
    if flagged:
        con.execute(f"UPDATE events_unique SET time_flag = CASE WHEN {future} THEN 'future' "
                    f"ELSE 'before_earliest' END, timestamp = received_at WHERE {future} OR {old}")
        logger.warning("events with an untrusted time: their received time is used", extra=flagged)
    return flagged


def _register_records(con: duckdb.DuckDBPyConnection, lakehouse: Lakehouse, spec: ContextSpec) -> None:
    from customer_context.assemble.records import read_record_table

    for name, table in spec.record_tables.items():
        data = read_record_table(lakehouse, name, table)  # with the spec's columns, even before a load evolves it
        con.register(f"{name}_arrow", data)
        con.execute(f"CREATE TABLE {ident(name)} AS SELECT * FROM {ident(name + '_arrow')}")
        con.unregister(f"{name}_arrow")


def _identity_inputs(con: duckdb.DuckDBPyConnection, spec: ContextSpec, guard: Suppressions | None = None,
                     kept: str | None = None) -> tuple[pa.Table, pa.Table, int]:
    """Nodes and deduplicated star edges, from events and record rows (without what ``guard`` says a
    deletion suppressed); and how many suppressed identifiers were left out. ``kept``: a table of earlier events'
    ``ids`` whose user ids an alias's previousId may name too."""
    types = spec.identifiers.types
    # one row per event with an identifier: the event's identifiers sorted, the most important first
    con.execute(f"CREATE TABLE event_ids AS SELECT ev, timestamp, type, ids FROM (SELECT ev, timestamp, type, "
                f"{compiler.event_identifiers_sql(spec)} AS ids FROM events_unique) WHERE len(ids) > 0")
    con.execute("CHECKPOINT")
    # star edges: each event's most important identifier to every other one on it
    edge_sql = [
        "SELECT a.t AS a_type, a.v AS a_value, x.t AS b_type, x.v AS b_value, timestamp AS first_seen, "
        "'event:' || type AS source FROM (SELECT ids[1] AS a, unnest(ids[2:]) AS x, timestamp, type FROM event_ids) "
        "WHERE NOT (x.t = a.t AND x.v = a.v)"
    ]
    node_sql = ["SELECT x.t AS type, x.v AS value, timestamp AS first_seen FROM "
                "(SELECT unnest(ids) AS x, timestamp FROM event_ids)"]
    # alias: previousId → userId; previousId is a user id when one is known by that value, else a device id
    user_rule, anon_rule = types["user_id"], types["anonymous_id"]
    prev = compiler.normalize_sql("previous_id", anon_rule)
    user = compiler.normalize_sql("user_id", user_rule)
    earlier = f" UNION ALL SELECT unnest(ids) AS x FROM {ident(kept)}" if kept else ""
    con.execute(
        f"CREATE TABLE alias_edges AS SELECT CASE WHEN {prev} IN (SELECT x.v FROM (SELECT unnest(ids) AS x "
        f"FROM event_ids{earlier}) WHERE x.t = 'user_id') THEN 'user_id' ELSE 'anonymous_id' END AS a_type, "
        f"{prev} AS a_value, 'user_id' AS b_type, {user} AS b_value, timestamp AS first_seen, 'event:alias' AS source "
        f"FROM events_unique WHERE type = 'alias' AND {prev} IS NOT NULL AND {user} IS NOT NULL")
    edge_sql.append("SELECT * FROM alias_edges")
    node_sql.append("SELECT a_type, a_value, first_seen FROM alias_edges")
    node_sql.append("SELECT b_type, b_value, first_seen FROM alias_edges")
    for name, table in spec.record_tables.items():
        if not table.identifiers:
            continue
        rid = f"{name}__ids"
        con.execute(f"CREATE TABLE {ident(rid)} AS {compiler.record_identifier_sql(spec, name, table)}")
        edge_sql.append(
            f"SELECT a.t, a.v, e.id_type, e.id_value, e.updated_at, {lit('record:' + name)} "
            f"FROM {ident(rid)} e JOIN (SELECT row_key, arg_min(id_type, (priority, id_type, id_value)) AS t, "
            f"arg_min(id_value, (priority, id_type, id_value)) AS v FROM {ident(rid)} GROUP BY row_key) a "
            f"USING (row_key) WHERE NOT (e.id_type = a.t AND e.id_value = a.v)")
        node_sql.append(f"SELECT id_type, id_value, updated_at FROM {ident(rid)}")
    suppressed = _drop_suppressed(con, spec, guard) if guard is not None and guard.deleted else 0
    edges = con.sql(
        "SELECT a_type, a_value, b_type, b_value, min(first_seen) AS first_seen, arg_min(source, first_seen) AS source "
        f"FROM ({' UNION ALL '.join(edge_sql)}) WHERE first_seen IS NOT NULL GROUP BY a_type, a_value, b_type, b_value"
    ).to_arrow_table()
    nodes = con.sql(
        f"SELECT type, value, min(first_seen) AS first_seen FROM ({' UNION ALL '.join(node_sql)}) "
        "WHERE first_seen IS NOT NULL GROUP BY type, value"
    ).to_arrow_table()
    return nodes, edges, suppressed


def _drop_suppressed(con: duckdb.DuckDBPyConnection, spec: ContextSpec, guard: Suppressions) -> int:
    """Leave out what deletions suppressed, as the deletion job decides what is a customer's: a row whose
    most important identifier is suppressed is nobody's (no identifier of it joins anything, nobody is
    served it); in other rows a suppressed identifier is ignored. Returns how many identifiers were."""
    record_ids = [ident(f"{n}__ids") for n, t in spec.record_tables.items() if t.identifiers]
    seen = con.sql(" UNION ".join([
        "SELECT DISTINCT x.t AS t, x.v AS v FROM (SELECT unnest(ids) AS x FROM event_ids)",
        "SELECT a_type, a_value FROM alias_edges", "SELECT b_type, b_value FROM alias_edges",
        *(f"SELECT id_type, id_value FROM {rid}" for rid in record_ids)])).fetchall()
    gone = sorted(f"{t}\x00{v}" for t, v in guard.suppressed(seen))
    if not gone:
        return 0
    params = {"gone": gone}
    key = "x.t || chr(0) || x.v"
    con.execute("DELETE FROM event_ids WHERE list_contains($gone, ids[1].t || chr(0) || ids[1].v)", params)
    con.execute(f"UPDATE event_ids SET ids = list_filter(ids, lambda x: NOT list_contains($gone, {key})) "
                f"WHERE len(list_filter(ids, lambda x: list_contains($gone, {key}))) > 0", params)
    con.execute("DELETE FROM alias_edges WHERE list_contains($gone, a_type || chr(0) || a_value) "
                "OR list_contains($gone, b_type || chr(0) || b_value)", params)
    for rid in record_ids:
        con.execute(f"DELETE FROM {rid} WHERE row_key IN (SELECT row_key FROM {rid} GROUP BY row_key HAVING "
                    "list_contains($gone, arg_min(id_type || chr(0) || id_value, (priority, id_type, id_value))))",
                    params)
        con.execute(f"DELETE FROM {rid} WHERE list_contains($gone, id_type || chr(0) || id_value)", params)
    return len(gone)


def _register_previous(con: duckdb.DuckDBPyConnection, lakehouse: Lakehouse) -> None:
    """prev_state (profile_state) and prev_ids (identity_graph) of the last build, possibly empty.

    A profile is in prev_state once, at its highest version, whatever the table holds (a state written
    before a ``sql`` trait was checked for one row per profile held many rows per profile)."""
    for view, table, columns, keep in (
        ("prev_state", "profile_state", "profile_id, version, content_hash, built_at, field_hashes, changed_at",
         "QUALIFY row_number() OVER (PARTITION BY profile_id ORDER BY version DESC, built_at DESC) = 1"),
        ("prev_ids", "identity_graph", "identifier_type, identifier_value, profile_id", ""),
    ):
        wanted = columns.split(", ")
        if lakehouse.exists(table):
            # a table made before a column was added reads it as NULL (the commit evolves the table)
            present = [c for c in wanted if c in lakehouse.columns(table)]
            columns = ", ".join(c if c in present else f"CAST(NULL AS VARCHAR) AS {c}" for c in wanted)
            con.register(f"{view}_arrow", lakehouse.scan(table, selected_fields=tuple(present)))
        else:
            import pyarrow as pa

            schema = lakehouse.arrow_schema(table)
            con.register(f"{view}_arrow", pa.Table.from_pylist(
                [], schema=pa.schema([schema.field(c) for c in wanted])))
        con.execute(f"CREATE TABLE {view} AS SELECT {columns} FROM {view}_arrow {keep}")
        con.unregister(f"{view}_arrow")


def _slice_sql(slices: int, column: str = "profile_id") -> str:
    """The slice of a profile (0 … slices - 1): profiles are rendered and landed a slice at a time."""
    return f"hash({column}) % {slices}" if slices > 1 else "0"


def _profile_events(con: duckdb.DuckDBPyConnection, spec: ContextSpec, slices: int) -> None:
    """events_profiled / <table>_profiled: every row with the profile of its most important identifier.

    The events are copied once more, with their profile and its slice, each slice's rows in a table of
    their own (a scan of one slice reads only them), compressed as they go: ``events_sliced`` (a table,
    or the union of the slices' tables), and ``events_profiled``, it without the slice column.
    """
    # each event's profile: its most important identifier's that has one (the rule deletion uses too)
    attribution.attribute(con, "event_ids", "ev", "id_map", "event_profile")
    con.execute("DROP TABLE event_ids")
    consent, consent_join = "", ""
    if spec.consent:
        # each event's consent per category (NULL: it says nothing), from the context the SDKs send
        cols = ", ".join(f"{compiler.consent_sql(c.ids)} AS {ident('consent_' + n)}" for n, c in spec.consent.items())
        con.execute(f"CREATE TABLE event_consent AS SELECT ev, {cols} FROM events_unique "
                    "WHERE context LIKE '%onsent%'")
        consent, consent_join = ", c.* EXCLUDE (ev)", " LEFT JOIN event_consent c USING (ev)"
    con.execute("CREATE TEMP TABLE event_slice AS SELECT ev, profile_id, _slice FROM event_profile "
                "JOIN profiles USING (profile_id)")
    con.execute("DROP TABLE event_profile")
    select = (f"SELECT p._slice, p.profile_id, e.* EXCLUDE (ev){consent} FROM events_unique e JOIN event_slice p "
              f"USING (ev){consent_join}")
    if slices == 1:
        con.execute(f"CREATE TABLE events_sliced AS {select}")
    else:
        # One table per slice, filled in one pass over the events (a range of ``ev`` at a time: the rows are
        # stored in ``ev`` order, so each range reads only its row groups). Joining all the events once per
        # slice instead would read and decompress every event ``slices`` times. ``events_sliced`` is their
        # union; a filter on ``_slice`` reads only that slice's table.
        con.execute(f"CREATE TEMP TABLE events_chunk AS {select} LIMIT 0")
        for i in range(slices):
            con.execute(f"CREATE TABLE events_s{i} AS SELECT * EXCLUDE (_slice) FROM events_chunk")
        last = _scalar(con, "SELECT max(ev) FROM events_unique")
        for lo in range(0, (last or 0) + 1, EVENTS_PER_LOAD):
            con.execute(f"CREATE OR REPLACE TEMP TABLE events_chunk AS {select} "
                        f"WHERE e.ev >= {lo} AND e.ev < {lo + EVENTS_PER_LOAD}")
            for i in range(slices):
                con.execute(f"INSERT INTO events_s{i} SELECT * EXCLUDE (_slice) FROM events_chunk WHERE _slice = {i}")
            con.execute("CHECKPOINT")
        con.execute("DROP TABLE events_chunk")
        con.execute("CREATE VIEW events_sliced AS " + " UNION ALL ".join(
            f"SELECT CAST({i} AS INTEGER) AS _slice, * FROM events_s{i}" for i in range(slices)))
    for done_with in ("event_slice", "events_unique") + (("event_consent",) if spec.consent else ()):
        con.execute(f"DROP TABLE {done_with}")
    con.execute("CHECKPOINT")
    con.execute("CREATE VIEW events_profiled AS SELECT * EXCLUDE (_slice) FROM events_sliced")
    if spec.consent:
        latest = ", ".join(f"arg_max({ident('consent_' + n)}, timestamp) FILTER (WHERE {ident('consent_' + n)} "
                           f"IS NOT NULL) AS {ident('consent_' + n)}" for n in spec.consent)
        con.execute(f"CREATE TABLE profile_consent AS SELECT profile_id, {latest} FROM events_profiled "
                    "GROUP BY profile_id")
    for name, table in spec.record_tables.items():
        key = " || '|' || ".join(f"CAST({ident(k)} AS VARCHAR)" for k in table.primary_key)
        if table.identifiers:
            con.execute(f"CREATE TEMP TABLE _row_ids AS {attribution.record_ids_sql(name + '__ids')}")
            attribution.attribute(con, "_row_ids", "row_key", "id_map", "_row_owner")
            con.execute(
                f"CREATE TABLE {ident(name + '_profiled')} AS SELECT p.profile_id, r.* FROM {ident(name)} r "
                f"JOIN _row_owner p ON p.row_key = {key}")
            con.execute("DROP TABLE _row_owner")
            con.execute("DROP TABLE _row_ids")
        else:
            con.execute(f"CREATE TABLE {ident(name + '_profiled')} AS SELECT NULL::VARCHAR AS profile_id, * "
                        f"FROM {ident(name)} WHERE FALSE")


def _compute_traits(con: duckdb.DuckDBPyConnection, spec: ContextSpec, as_of: datetime) -> TraitCounts:
    """Create table ``traits`` (profile_id + one column per trait); returns the values traits met and could
    not read, per trait."""
    counted_values = TraitCounts()
    queries = compiler.compile_traits(spec)
    as_of_sql = lit(as_of)
    parts = []
    for i, (source, sql) in enumerate(queries.grouped.items()):
        con.execute(f"CREATE TABLE traits_g{i} AS {sql.replace('$as_of', as_of_sql)}")
        parts.append(f"traits_g{i}")
        counted = queries.counts.get(source, ())
        if counted:
            sums = con.sql(f"SELECT {', '.join(f'sum({ident(c)})' for c, _, _ in counted)} FROM traits_g{i}"
                           ).fetchall()[0]
            for (_, trait, what), n in zip(counted, sums, strict=True):
                if n:
                    (counted_values.invalid if what == "invalid" else counted_values.unconverted)[trait] = int(n)
    from customer_context.errors import ConfigError

    for i, (name, sql) in enumerate(queries.separate.items()):
        try:
            con.execute(f"CREATE TABLE traits_s{i} AS SELECT profile_id, value AS {ident(name)} FROM ("
                        f"{sql.replace('$as_of', as_of_sql)})")
        except Exception as exc:
            raise ConfigError(f"traits.{name}: the SQL failed: {exc}") from None
        # one value per profile, or every profile's document would repeat (checked before anything is written)
        many = con.sql(f"SELECT profile_id, count(*) FROM traits_s{i} WHERE profile_id IS NOT NULL "
                       "GROUP BY profile_id HAVING count(*) > 1 LIMIT 1").fetchall()
        if many:
            raise ConfigError(f"traits.{name}: the SQL returned {many[0][1]:,} rows for one profile "
                              f"({many[0][0]}); a trait has one value per profile: group by profile_id")
        parts.append(f"traits_s{i}")
    select = ["p.profile_id"]
    for name in spec.traits:
        column = f"{ident(name)}"
        if name in queries.zero_default:
            select.append(f"coalesce({column}, {TRAIT_KINDS[spec.traits[name].kind].zero}) AS {column}")
        else:
            select.append(column)
    joins = " ".join(f"LEFT JOIN {t} USING (profile_id)" for t in parts)
    con.execute(f"CREATE TABLE traits AS SELECT {', '.join(select)}, p._slice FROM profiles p {joins} "
                "ORDER BY p._slice")
    return counted_values


def _shown(column: str, kind: str) -> str:
    """A record column as shown in snapshots (timestamps as ISO-8601 UTC)."""
    return compiler.iso_time(ident(column)) if kind == "timestamp" else ident(column)


def _snapshot_sql(spec: ContextSpec, bucket: tuple[int, int] | None = None) -> str:
    """SQL rendering every profile's content (``profile_id, content_hash, content``): the document
    without its build times (:func:`_doc_sql` adds them).

    ``bucket = (i, n)`` limits it to the profiles of slice i of n (:func:`_slice_sql`), every
    per-profile source filtered the same way, so a large build renders in n bounded slices.
    """
    i, n = bucket or (0, 1)
    pred = f"{_slice_sql(n)} = {i}" if n > 1 else "TRUE"
    sliced = f"_slice = {i}" if n > 1 else "TRUE"
    horizon = spec.scores.horizon
    def granted(category: str) -> str:
        return compiler.consent_granted_sql(spec, category, f"pc.{ident('consent_' + category)}")

    def gated(category: str | None, expr: str) -> str:
        return f"CASE WHEN {granted(category)} THEN {expr} END" if category else expr

    trait_fields = ", ".join(f"{lit(name)}, {gated(trait.consent, f't.{ident(name)}')}"
                             for name, trait in spec.traits.items()) or "'none', NULL"
    recent = spec.snapshot.recent_events
    types = ", ".join(lit(t) for t in recent.types) or "''"
    record_tables = [n for n, t in spec.record_tables.items() if not t.interactions]
    interaction_tables = [(n, t) for n, t in spec.record_tables.items() if t.interactions]
    ctes = [
        f"recent AS (SELECT profile_id, max_by({{'type': type, 'event': event, 'name': name, "
        f"'timestamp': strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%gZ'), 'page_path': page_path, "
        f"'properties': left(properties, {recent.max_chars})}}, (timestamp, message_id), {max(recent.limit, 1)}) "
        "AS events "
        f"FROM events_sliced WHERE type IN ({types}) AND {sliced} GROUP BY profile_id)",
    ]
    record_parts = []
    for name in record_tables:
        table = spec.record_tables[name]
        cols = ", ".join(f"{lit(c)}: {_shown(c, kind)}" for c, kind in table.columns.items())
        order = ", ".join(ident(c) for c in (table.updated_at, *table.primary_key))
        ctes.append(f"rec_{name} AS (SELECT profile_id, max_by({{{cols}}}, ({order})) AS row "
                    f"FROM {ident(name + '_profiled')} WHERE {pred} GROUP BY profile_id)")
        record_parts.append((name, f"rec_{name}"))
    inter_parts = []
    for name, table in interaction_tables:
        assert table.interactions
        cols = ", ".join(
            f"{lit(c)}: " + (f"left({ident(c)}, {table.interactions.max_chars})"
                             if c == table.interactions.text_column else _shown(c, kind))
            for c, kind in table.columns.items() if c not in table.identifiers.values())
        order = ", ".join(ident(c) for c in (table.updated_at, *table.primary_key))
        ctes.append(f"int_{name} AS (SELECT profile_id, max_by({{'table': {lit(name)}, {cols}}}, "
                    f"({order}), {table.interactions.keep}) AS items "
                    f"FROM {ident(name + '_profiled')} WHERE {pred} GROUP BY profile_id)")
        inter_parts.append(f"int_{name}")
    records_obj = ("json_object(" + ", ".join(f"{lit(n)}, {alias}.row" for n, alias in record_parts) + ")"
                   if record_parts else "json_object()")
    inter_list = ("list_concat(" + ", ".join(f"coalesce({a}.items, [])" for a in inter_parts) + ")"
                  if len(inter_parts) > 1 else (f"coalesce({inter_parts[0]}.items, [])" if inter_parts else "[]"))
    sections = {
        "profile": "json_object('identifiers', ids.identifiers" + (
            ", 'consent', json_object(" + ", ".join(f"{lit(n)}, {granted(n)}" for n in spec.consent) + "))"
            if spec.consent else ")"),
        "scores": f"json_object('churn_risk', s.churn_risk, 'p_alive', s.p_alive, 'expected_orders_{horizon}', "
                  f"s.expected_orders, 'ltv_{horizon}', s.ltv, 'repeat_purchases', s.repeat_purchases)",
        "traits": f"json_object({trait_fields})",
        "records": records_obj,
        "interactions": f"to_json({inter_list})",
        "recent_events": f"to_json(coalesce(recent.events, {'[]' if recent.limit else '[]'}))",
    }
    content = ", ".join(f"{lit(sec.name)}, {gated(sec.consent, sections[sec.name])}" for sec in spec.snapshot.sections)
    joins = " ".join(f"LEFT JOIN {alias} USING (profile_id)" for _, alias in record_parts)
    joins += " " + " ".join(f"LEFT JOIN {a} USING (profile_id)" for a in inter_parts)
    return (
        f"WITH {', '.join(ctes)}, content AS (SELECT p.profile_id, json_object('profile_id', p.profile_id, "
        f"{content}) AS content FROM (SELECT profile_id FROM profiles WHERE {sliced}) p "
        f"LEFT JOIN (SELECT profile_id, identifiers FROM profile_identifiers WHERE {sliced}) ids USING (profile_id) "
        f"LEFT JOIN (SELECT * FROM traits WHERE {sliced}) t USING (profile_id) "
        f"LEFT JOIN (SELECT * FROM scores WHERE {sliced}) s USING (profile_id) "
        f"LEFT JOIN recent USING (profile_id) {joins}"
        f"{' LEFT JOIN profile_consent pc USING (profile_id)' if spec.consent else ''}) "
        f"SELECT profile_id, md5(content) AS content_hash, content FROM content"
    )


def _field_changes_sql(built_at: datetime) -> str:
    """Per profile of ``slice_docs`` whose content changed (or whose state predates field tracking):
    ``field_hashes`` and ``changed_at``, JSON objects keyed by field path (``traits.plan``, ``records.crm`` …;
    list sections whole, as :func:`customer_context.serve.replay.changed_fields` compares them).

    A field keeps its previous time when its value's hash is the previous one, and gets this build's time
    otherwise (a new profile: every field). A field it had no hash of counts as ``null`` before, as the
    history's comparison has it (so a field that was always ``null`` never changed: its time is ``null``). A
    profile whose previous state has no hashes (written before fields were tracked) gets ``null`` times: when
    those fields changed is unknown here (the history knows).
    """
    import hashlib

    null_hash = hashlib.md5(b"null", usedforsecurity=False).hexdigest()[:FIELD_HASH_CHARS]
    by_field = ", ".join(lit(s) for s in FIELD_SECTIONS)
    skip = ", ".join(lit(k) for k in BOOKKEEPING_KEYS)
    return (
        "WITH need AS (SELECT profile_id, content, known, prev_hashes, prev_changed_at FROM slice_docs "
        "WHERE changed OR (known AND prev_hashes IS NULL)), "
        "parts AS (SELECT n.profile_id, j.key AS section, j.value AS value FROM need n, json_each(n.content) j "
        f"WHERE j.key NOT IN ({skip})), "
        "fields AS (SELECT p.profile_id, p.section || '.' || f.key AS path, f.value AS value "
        f"FROM parts p, json_each(p.value) f WHERE p.section IN ({by_field}) AND json_type(p.value) = 'OBJECT' "
        "UNION ALL SELECT profile_id, section AS path, value FROM parts "
        f"WHERE NOT (section IN ({by_field}) AND json_type(value) IN ('OBJECT', 'NULL'))), "
        "prev_h AS (SELECT n.profile_id, j.key AS path, j.value ->> '$' AS h FROM need n, json_each(n.prev_hashes) j), "
        "prev_t AS (SELECT n.profile_id, j.key AS path, j.value ->> '$' AS at "
        "FROM need n, json_each(n.prev_changed_at) j), "
        f"timed AS (SELECT f.profile_id, f.path, left(md5(CAST(f.value AS VARCHAR)), {FIELD_HASH_CHARS}) AS h, "
        f"CASE WHEN coalesce(ph.h, {lit(null_hash)}) = left(md5(CAST(f.value AS VARCHAR)), {FIELD_HASH_CHARS}) "
        "THEN pt.at "
        f"WHEN n.known AND n.prev_hashes IS NULL THEN NULL ELSE {lit(built_at.isoformat())} END AS at "
        "FROM fields f JOIN need n USING (profile_id) LEFT JOIN prev_h ph USING (profile_id, path) "
        "LEFT JOIN prev_t pt USING (profile_id, path)) "
        "SELECT n.profile_id, "
        "to_json(map_from_entries(coalesce(list((t.path, t.h) ORDER BY t.path) FILTER (WHERE t.path IS NOT NULL), "
        "[]))) AS field_hashes, "
        "to_json(map_from_entries(coalesce(list((t.path, t.at) ORDER BY t.path) FILTER (WHERE t.path IS NOT NULL), "
        "[]))) AS changed_at "
        "FROM need n LEFT JOIN timed t USING (profile_id) GROUP BY n.profile_id"
    )


def _doc_sql(built_at: datetime, data_as_of: datetime | None) -> str:
    """The served document: ``content`` with the build times appended, as ``json_merge_patch(content,
    {built_at, data_as_of})`` would write it (no ``data_as_of`` when unknown), without parsing it again."""
    times = {"built_at": built_at.isoformat(), "data_as_of": data_as_of.isoformat() if data_as_of else None}
    tail = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in times.items() if v is not None) + "}"
    return f"concat(left(content, -1), {lit(tail)})"
