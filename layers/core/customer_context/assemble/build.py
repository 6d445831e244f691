"""build_context: the lakehouse → one context snapshot per customer → the serving store.

Stages (each timed in the report, progress logged):

1. **read**: events (projected to the columns the spec needs) and record tables, through pyiceberg
   into Arrow, into an in-memory DuckDB; events deduplicated by ``message_id``;
2. **identity**: identifiers per event and per record row, star edges to each one's most important
   identifier, alias edges; resolved with merge protection and stable ids
   (:mod:`customer_context.assemble.identity`);
3. **traits**: the compiled spec (:mod:`customer_context.assemble.compiler`) over
   ``events_profiled`` and ``<table>_profiled``;
4. **scores**: BG/NBD and Gamma-Gamma fitted on the purchase summaries
   (:mod:`customer_context.assemble.scores`);
5. **snapshots**: one JSON document per profile built in DuckDB, hashed without its build times,
   cut to the size budget (truncation marked);
6. **landing**: only new or changed snapshots are written to the serving store, plus alias items
   for new or moved identifiers; merged-away profiles and orphan aliases are deleted. The Iceberg
   state (history, identity graph, profile state) is committed *after* landing, so a build that
   fails half-way leaves the previous state and a rerun lands what is missing. What the store
   cannot hold (an identifier over DynamoDB's key size) is quarantined and reported, and the rest
   lands: one customer's data never stops a build.

Landing compares with what the lakehouse says was landed last (``profile_state``), so it must know
the store still holds it. Each landing ends with a marker item naming its generation, recorded in
``profile_state``'s snapshot summary too; the next build compares the two and checks a random
sample of landed snapshots and aliases (two batch reads). A store that lost items (a local stack
restarted, a table restored from a backup or recreated) gets every current snapshot and alias
landed again (``relanded`` in the report says why); ``reland=True`` forces it.

A dry run (``commit=False``) lands into the store it is given (the CLI gives an in-memory one) and
commits nothing to the lakehouse: the next real build sees exactly what it would have seen.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from customer_context.assemble import attribution, compiler
from customer_context.assemble.compiler import ident, lit
from customer_context.models.events import BUILD_EVENT_COLUMNS
from customer_context.observability import logger
from customer_context.spec import ContextSpec, duration_seconds
from customer_context.stores.context_store import (
    BOOKKEEPING_KEYS,
    FIELD_SECTIONS,
    ContextStore,
    Refused,
    SnapshotItem,
)
from customer_context.trait_kinds import TRAIT_KINDS

# Documents are rendered and landed in slices of profiles, one per this many events, to bound a build's memory.
EVENTS_PER_SLICE = 1_000_000
# Events are read into DuckDB (and compressed) this many at a time.
EVENTS_PER_LOAD = 1_000_000
# Landed snapshots and aliases a build reads back from the store to check it still holds what was landed.
LANDING_SAMPLE = 32
# The profile_state snapshot property naming the landing generation of the build that committed it.
LANDING_GENERATION = "landing-generation"
# Hex digits of a field value's MD5 kept in profile_state to tell the next build whether the field changed.
FIELD_HASH_CHARS = 16
# Builds that start again because a deletion job finished while they read (govern/fence.py).
BUILD_ATTEMPTS = 3
# Landed documents are written to the history's Parquet files in row groups and files of about these sizes.
HISTORY_ROW_GROUP_BYTES = 64 << 20
HISTORY_FILE_BYTES = 1 << 30

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from customer_context.stores.iceberg import Lakehouse

EVENT_BASE_COLUMNS = BUILD_EVENT_COLUMNS
SECTION_DROP_ORDER = ("recent_events", "interactions", "records", "traits", "scores")


@dataclass
class BuildReport:
    """What a build did."""

    built_at: str
    data_as_of: str | None = None
    as_of: str | None = None
    events: int = 0
    profiles: int = 0
    identifiers: int = 0
    rejected_edges: int = 0
    merged_profiles: int = 0
    changed_profiles: int = 0
    items_written: int = 0
    items_deleted: int = 0
    truncated_profiles: int = 0
    relanded: str | None = None  # why every snapshot and alias was landed again, when it was
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # what the store could not hold, and why
    dry_run: bool = False
    suppressed_identifiers: int = 0
    # values traits met and could not read (README "What happens to bad data"), per trait: failing the numeric
    # rule, or in a currency the trait's unit cannot be converted from
    invalid_values: dict[str, int] = field(default_factory=dict)
    unconverted_values: dict[str, int] = field(default_factory=dict)
    flagged_times: dict[str, int] = field(default_factory=dict)  # events whose time is not trusted, by reason
    conflicting_message_ids: int = 0  # messageIds sent with different contents (the first received copy is kept)
    scores: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


class _Stages:
    def __init__(self, report: BuildReport, progress: Callable[[str], None] | None) -> None:
        self.report = report
        self.progress = progress
        self._t = time.perf_counter()
        self._cpu = time.process_time()

    def done(self, stage: str, detail: str = "") -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self._emit(stage, now - self._t, cpu - self._cpu, detail)
        self._t, self._cpu = now, cpu

    def record(self, stage: str, seconds: float, cpu_seconds: float, detail: str = "") -> None:
        """A stage that ran in pieces between another's: ``seconds`` (``cpu_seconds`` of CPU, all threads)
        in all, not counted in the next one."""
        self._t += seconds
        self._cpu += cpu_seconds
        self._emit(stage, seconds, cpu_seconds, detail)

    def _emit(self, stage: str, seconds: float, cpu_seconds: float, detail: str) -> None:
        # CPU seconds (every thread of the process) tell a stage's cost apart from a busy machine's waits
        self.report.cpu_s[stage] = round(cpu_seconds, 3)
        self.report.timings_s[stage] = round(seconds, 3)
        message = f"{stage}: {detail} ({self.report.timings_s[stage]:.2f}s)" if detail else stage
        logger.info("build stage done", extra={"stage": stage, "seconds": self.report.timings_s[stage]})
        if self.progress:
            self.progress(message)


class _History:
    """The landed documents as data files of ``context_snapshots``: written while they land (a few MB
    in memory at a time), added to the table in one commit after landing (:meth:`commit`)."""

    def __init__(self, lakehouse: Lakehouse, built_at: datetime, data_as_of: datetime | None) -> None:
        self.lakehouse = lakehouse
        self.built_at, self.data_as_of = built_at, data_as_of
        self.schema = lakehouse.arrow_schema("context_snapshots")
        self.paths: list[str] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._file_bytes = 0
        self._writer: Any = None
        self._stream: Any = None

    def write(self, batch: pa.RecordBatch, docs: list[str] | None = None) -> None:
        """Landed documents: ``batch`` has profile_id, version, content_hash, doc (replaced by ``docs``
        when given: some were cut to the budget)."""
        import pyarrow as pa

        n = batch.num_rows
        if not n:
            return
        stamp = pa.timestamp("us", "UTC")
        # the build times repeated without a Python datetime (and its tzinfo calls) per row
        columns = [batch.column(0), batch.column(1), batch.column(2),
                   pa.repeat(pa.scalar(self.built_at, stamp), n), pa.repeat(pa.scalar(self.data_as_of, stamp), n),
                   pa.array(docs, pa.string()) if docs is not None else batch.column(3)]
        batch = pa.RecordBatch.from_arrays(
            [c.cast(f.type) for c, f in zip(columns, self.schema, strict=True)], schema=self.schema)
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= HISTORY_ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        if self._writer is None:
            table = self.lakehouse.table("context_snapshots")
            path = table.location_provider().new_data_location(f"{uuid.uuid4()}-build.parquet")
            self.paths.append(path)
            self._stream = table.io.new_output(path).create(overwrite=True)
            # dictionaries only where they help (ids, hashes and documents are all distinct); statistics on
            # every column, as the table's manifests take their bounds from them
            self._writer = pq.ParquetWriter(self._stream, self.schema, compression="zstd",
                                            use_dictionary=["version", "built_at", "data_as_of"])
        self._writer.write_table(pa.Table.from_batches(self._pending, self.schema))
        self._file_bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        if self._file_bytes >= HISTORY_FILE_BYTES:
            self._finish_file()

    def _finish_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._writer = self._stream = None
            self._file_bytes = 0

    def close(self) -> None:
        """Write what is pending and close the current file."""
        self._flush()
        self._finish_file()

    def abandon(self) -> None:
        """The build failed: close, and delete the files written (best effort; else maintenance does)."""
        import contextlib

        with contextlib.suppress(Exception):
            self._finish_file()
        io = self.lakehouse.table("context_snapshots").io
        for path in self.paths:
            with contextlib.suppress(Exception):
                io.delete(path)

    def commit(self) -> None:
        """Add the files to ``context_snapshots`` in one commit (a conflicting commit is retried)."""
        if self.paths:
            paths = list(self.paths)
            self.lakehouse._commit("context_snapshots",
                                   lambda table: table.add_files(paths, check_duplicate_files=False))


def _floor(when: datetime, resolution: str) -> datetime:
    step = duration_seconds(resolution)
    if not step:
        return when
    epoch = int(when.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, tz=UTC)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return con.sql(sql).fetchall()[0][0]


def _event_columns(spec: ContextSpec) -> list[str]:
    text = json.dumps(spec.model_dump(mode="json"))
    columns = list(EVENT_BASE_COLUMNS)
    if "context." in text or "externalIds." in text or spec.consent:
        columns.append("context")
    return columns


def _event_chunks(lakehouse: Lakehouse, columns: list[str]) -> tuple[pa.Schema, Iterator[pa.Table]]:
    """The events table's columns as Arrow tables of about ``EVENTS_PER_LOAD`` rows, whole data files each,
    read one chunk ahead in a thread (pyiceberg's own batch reader reads every file at once)."""
    import pyarrow as pa

    if not lakehouse.exists("events"):
        schema = lakehouse.arrow_schema("events")
        return pa.schema([schema.field(c) for c in columns]), iter(())
    from concurrent.futures import ThreadPoolExecutor

    from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow

    scan = lakehouse.catalog.load_table((lakehouse.namespace, "events")).scan(selected_fields=tuple(columns))
    projected = scan.projection()
    target = schema_to_pyarrow(projected)
    reader = ArrowScan(scan.table_metadata, scan.io, projected, scan.row_filter, scan.case_sensitive)
    groups: list[list[Any]] = [[]]
    rows = 0
    for task in scan.plan_files():
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
                     report: BuildReport) -> None:
    """Table ``events_unique``: the events (projected to the columns the spec needs) without duplicate
    ``message_id`` (:func:`compiler.first_copy_order`: the first received copy wins), plus ``ev``, a BIGINT key
    the build joins on, and ``time_flag`` (:func:`_flag_times`). Sets the report's ``events``,
    ``conflicting_message_ids`` and ``flagged_times``.

    The events are loaded a chunk of files at a time, each chunk compressed right away (checkpoint of
    the compressed in-memory database): neither an Arrow copy of all the events nor the whole
    uncompressed table is ever held.
    """
    import numpy as np
    import pyarrow as pa

    schema, chunks = _event_chunks(lakehouse, _event_columns(spec))
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
    if _scalar(con, "SELECT count(*) FROM dup_hashes"):
        con.execute(f"CREATE TEMP TABLE dup_copies AS SELECT ev, message_id, received_at, "
                    f"{compiler.event_content_sql()} AS content FROM events_unique "
                    "WHERE hash(message_id) IN (SELECT h FROM dup_hashes)")
        report.conflicting_message_ids = int(_scalar(
            con, "SELECT count(*) FROM (SELECT message_id FROM dup_copies GROUP BY message_id "
                 "HAVING count(DISTINCT content) > 1)"))
        con.execute("DELETE FROM events_unique WHERE ev IN (SELECT ev FROM dup_copies QUALIFY row_number() OVER "
                    f"(PARTITION BY message_id ORDER BY {compiler.first_copy_order('content')}) > 1)")
        con.execute("DROP TABLE dup_copies")
        if report.conflicting_message_ids:
            logger.warning("messageIds sent with different contents: the first received copy is kept",
                           extra={"conflicting_message_ids": report.conflicting_message_ids})
    con.execute("DROP TABLE dup_hashes")
    report.events = int(_scalar(con, "SELECT count(*) FROM events_unique"))
    report.flagged_times = _flag_times(con, spec)


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


def _identity_inputs(con: duckdb.DuckDBPyConnection, spec: ContextSpec,
                     guard: Any = None) -> tuple[pa.Table, pa.Table, int]:
    """Nodes and deduplicated star edges, from events and record rows (without what ``guard`` says a
    deletion suppressed); and how many suppressed identifiers were left out."""
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
    con.execute(
        f"CREATE TABLE alias_edges AS SELECT CASE WHEN {prev} IN (SELECT x.v FROM (SELECT unnest(ids) AS x "
        "FROM event_ids) WHERE x.t = 'user_id') THEN 'user_id' ELSE 'anonymous_id' END AS a_type, "
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


def _drop_suppressed(con: duckdb.DuckDBPyConnection, spec: ContextSpec, guard: Any) -> int:
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


def _store_out_of_step(con: duckdb.DuckDBPyConnection, lakehouse: Lakehouse, store: ContextStore) -> str | None:
    """Why the store may not hold what the last build landed (so everything must land again), or ``None``."""
    if not _scalar(con, "SELECT count(*) FROM prev_state"):
        return None  # nothing landed yet: everything is new anyway
    table = lakehouse.table("profile_state")
    snapshot = table.current_snapshot()
    landed = snapshot.summary.additional_properties.get(LANDING_GENERATION) if snapshot and snapshot.summary else None
    marker = store.get_landing_marker()
    if landed is not None and marker != landed:
        return ("the serving store has no landing marker (emptied, recreated or restarted)" if marker is None
                else "the serving store's landing marker is not the last build's (restored, or a landing interrupted)")
    sample = con.sql(f"SELECT profile_id, content_hash FROM prev_state USING SAMPLE {LANDING_SAMPLE} ROWS").fetchall()
    aliases = con.sql("SELECT identifier_type, identifier_value, profile_id FROM prev_ids "
                      f"USING SAMPLE {LANDING_SAMPLE} ROWS").fetchall()
    missing = store.missing(dict(sample), aliases)
    return f"the serving store lost items: {missing}" if missing else None


def _previous_identity(lakehouse: Lakehouse) -> pa.Table | None:
    """The last build's identity graph as Arrow (resolve reads it column-wise; no per-row objects)."""
    if not lakehouse.exists("identity_graph"):
        return None
    return lakehouse.scan("identity_graph", selected_fields=(
        "identifier_type", "identifier_value", "profile_id", "joined_via", "profile_first_seen"))


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
    for table in ("event_slice", "events_unique") + (("event_consent",) if spec.consent else ()):
        con.execute(f"DROP TABLE {table}")
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


def _compute_traits(con: duckdb.DuckDBPyConnection, spec: ContextSpec, as_of: datetime,
                    report: BuildReport) -> list[str]:
    """Create table ``traits`` (profile_id + one column per trait); returns the trait names. The values traits
    met and could not read are counted in the report (``invalid_values``, ``unconverted_values``)."""
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
                    (report.invalid_values if what == "invalid" else report.unconverted_values)[trait] = int(n)
    if report.invalid_values or report.unconverted_values:
        logger.warning("trait values left out: not numbers under the numeric rule, or in a currency the trait's "
                       "unit cannot be converted from", extra={"invalid_values": report.invalid_values,
                                                               "unconverted_values": report.unconverted_values})
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
    return list(spec.traits)


@dataclass
class _Models:
    """Score parameters fitted by earlier builds: the latest, whether it is young enough to reuse, and the
    latest good parameters of each model (kept when a refit fails)."""

    latest: dict[str, Any] | None = None
    fresh: bool = False
    bgnbd: dict[str, Any] | None = None
    gamma_gamma: dict[str, Any] | None = None
    fitted_at: dict[str, str] = field(default_factory=dict)


def _previous_models(lakehouse: Lakehouse, now: datetime, refit_every: str) -> _Models:
    """What ``score_models`` holds (see :class:`_Models`)."""
    models = _Models()
    if not lakehouse.exists("score_models"):
        return models
    rows = sorted(lakehouse.scan("score_models").to_pylist(), key=lambda r: r["fitted_at"], reverse=True)
    if not rows:
        return models
    limit = duration_seconds(refit_every)
    models.latest = json.loads(rows[0]["model"])
    models.fresh = limit is None or (now - rows[0]["fitted_at"]).total_seconds() < limit
    for row in rows:
        model = json.loads(row["model"])
        for name, required in (("bgnbd", "r"), ("gamma_gamma", "p")):
            params = model.get(name)
            if getattr(models, name) is None and isinstance(params, dict) and required in params:
                setattr(models, name, params)
                models.fitted_at[name] = model.get("fitted_at") or row["fitted_at"].isoformat()
    return models


def _fit_or_keep(name: str, fit: Callable[[], Any], make: Callable[..., Any], models: _Models,
                 result: dict[str, Any]) -> Any:
    """``fit()``; when the data cannot be fitted, the last good parameters (noted in ``result``), else None
    (the reason in ``result``). A build never stops because a model does not fit."""
    from customer_context.assemble import scores as score_models

    try:
        return fit()
    except (score_models.ScoreFitError, ValueError, FloatingPointError, ArithmeticError) as exc:
        kept = getattr(models, name)
        if kept is not None:
            result[f"{name}_not_refitted"] = f"{exc}; kept the parameters fitted at {models.fitted_at[name]}"
            logger.warning("score model not refitted, previous parameters kept", extra={"model": name,
                                                                                       "reason": str(exc)})
            return make(**kept)
        result[f"{name}_skipped"] = str(exc)
        logger.warning("score model could not be fitted, its scores are left empty", extra={"model": name,
                                                                                           "reason": str(exc)})
        return None


def _compute_scores(con: duckdb.DuckDBPyConnection, spec: ContextSpec, as_of: datetime,
                    previous: _Models | None = None) -> dict[str, Any]:
    """Create table ``scores``; returns the parameters used (refitted, or reused from ``previous``),
    or why scores were skipped.

    Parameters younger than ``refit_every`` are reused. A fit the data does not allow (an optimiser
    that does not converge, spend with no spread …) keeps the last good parameters when there are any,
    else leaves that model's scores empty; the reason is in the returned dict (the build report) either
    way, and a score a model cannot evaluate for a customer is null, never NaN or infinite.
    """
    import numpy as np
    import pyarrow as pa

    previous = previous or _Models()
    empty = "CREATE TABLE scores AS SELECT profile_id, NULL::DOUBLE AS churn_risk, NULL::DOUBLE AS p_alive, " \
            "NULL::DOUBLE AS expected_orders, NULL::DOUBLE AS ltv, NULL::INTEGER AS repeat_purchases, _slice " \
            "FROM profiles ORDER BY _slice"
    if not spec.scores.enabled:
        con.execute(empty)
        return {"skipped": "scores.enabled is false"}
    # Each purchase's revenue under the numeric rule, in the base currency. A customer is fitted only on inputs
    # the models can take: every purchase with a trusted time and a positive revenue. Anyone else is left out of
    # both fits (their own scores null, counted in the report), so one bad customer changes nobody else's scores.
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
        f"greatest(date_diff('second', min(day), {lit(as_of)}) / 86400.0, date_diff('second', min(day), max(day)) "
        "/ 86400.0) AS T, "
        "CAST(CASE WHEN count(*) > 1 THEN (sum(rev) - arg_min(rev, day)) / (count(*) - 1) ELSE 0 END AS DOUBLE) "
        "AS monetary FROM daily GROUP BY profile_id ORDER BY profile_id"  # a fixed order: the fit sums in it
    ).fetchnumpy()
    con.execute("DROP TABLE score_purchases")
    con.execute("DROP TABLE score_buyers")
    if left_out:
        logger.warning("customers left out of the score fits: a purchase with an untrusted time, or a revenue "
                       "that is not a positive number in the base currency", extra=left_out)
    n = len(summary["profile_id"])
    repeaters = int((summary["frequency"] > 0).sum()) if n else 0
    if n < spec.scores.min_customers or repeaters < 2:
        con.execute(empty)
        return {"skipped": f"{n} buyers, {repeaters} repeat buyers: fewer than scores.min_customers "
                           f"({spec.scores.min_customers}) or no repeat buyers", **({"left_out": left_out}
                                                                                      if left_out else {})}
    from customer_context.assemble import scores as models

    freq = summary["frequency"].astype(float)
    rec, age, money = (summary["recency"].astype(float), summary["T"].astype(float),
                       summary["monetary"].astype(float))
    horizon_days = (duration_seconds(spec.scores.horizon) or 365 * 86400) / 86400
    reuse = previous.fresh and previous.latest is not None and "bgnbd" in previous.latest
    result: dict[str, Any] = {"buyers": n, "repeat_buyers": repeaters, "horizon_days": horizon_days,
                              "refitted": False, **({"left_out": left_out} if left_out else {})}
    if reuse:
        assert previous.latest is not None
        bg: Any = models.BGNBDParams(**previous.latest["bgnbd"])
        gg_prev = previous.latest.get("gamma_gamma")
        gg: Any = models.GammaGammaParams(**gg_prev) if isinstance(gg_prev, dict) and "p" in gg_prev else None
        result["fitted_at"] = previous.latest.get("fitted_at")
    else:
        bg = _fit_or_keep("bgnbd", lambda: models.fit_bgnbd(freq, rec, age), models.BGNBDParams, previous, result)
        gg = _fit_or_keep("gamma_gamma", lambda: models.fit_gamma_gamma(freq, money), models.GammaGammaParams,
                          previous, result)
        # a refit is recorded (and reused by the next builds) only when BG/NBD itself was fitted now
        result["refitted"] = bg is not None and "bgnbd_not_refitted" not in result
    if bg is None:
        con.execute(empty)
        return {**result, "skipped": result["bgnbd_skipped"]}
    result["bgnbd"] = dict(bg.__dict__)
    result["gamma_gamma"] = dict(gg.__dict__) if gg is not None else {"skipped": result.get("gamma_gamma_skipped",
                                                                                             "not fitted")}

    def evaluate(what: str, compute: Callable[[], Any]) -> Any:
        """A model's values per customer; NaN where it cannot say, NaN for all if it fails as a whole."""
        try:
            with np.errstate(all="ignore"):
                values = np.asarray(compute(), dtype=float)
            return np.where(np.isfinite(values), values, np.nan)
        except (ValueError, FloatingPointError, ArithmeticError) as exc:
            result[f"{what}_skipped"] = str(exc)
            logger.warning("score not evaluated", extra={"score": what, "reason": str(exc)})
            return np.full(n, np.nan)

    alive = evaluate("p_alive", lambda: models.p_alive(bg, freq, rec, age))
    orders = evaluate("expected_orders", lambda: models.expected_purchases(bg, horizon_days, freq, rec, age))
    ltv = (evaluate("ltv", lambda: models.customer_lifetime_value(bg, gg, freq, rec, age, money, horizon_days))
           if gg is not None else np.full(n, np.nan))
    columns = {
        "profile_id": summary["profile_id"],
        # BG/NBD treats a customer with no repeat purchase as alive by construction (dropout only follows
        # a repeat purchase), so "0 risk" would mislead: their churn risk is left empty.
        "churn_risk": np.where(freq > 0, np.round(1 - alive, 3), np.nan), "p_alive": np.round(alive, 3),
        "expected_orders": np.round(orders, 2), "ltv": np.round(ltv, 2),
        "repeat_purchases": freq.astype("int32"),
    }
    # NaN (no estimate) becomes null
    table = pa.table({k: pa.array(v, from_pandas=True) for k, v in columns.items()})
    con.register("scores_arrow", table)
    con.execute("CREATE TABLE scores AS SELECT p.profile_id, s.churn_risk, s.p_alive, s.expected_orders, s.ltv, "
                "s.repeat_purchases, p._slice FROM profiles p LEFT JOIN scores_arrow s USING (profile_id) "
                "ORDER BY p._slice")
    con.unregister("scores_arrow")
    return result


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


def fit_to_budget(doc: str, max_bytes: int, order: tuple[str, ...] = SECTION_DROP_ORDER) -> tuple[str, list[str]]:
    """Cut a snapshot to ``max_bytes``: halve list sections from the least important, then drop
    whole sections; what was cut is listed under ``truncated``. Never drops the profile."""
    if len(doc.encode()) <= max_bytes:
        return doc, []
    data = json.loads(doc)
    cut: list[str] = []

    def size() -> int:
        return len(json.dumps({**data, "truncated": cut}, separators=(",", ":")).encode())

    for section in order:
        value = data.get(section)
        while isinstance(value, list) and value and size() > max_bytes:
            kept = len(value) // 2
            cut.append(f"{section}: kept {kept} of {len(value)}")
            value = value[:kept]
            data[section] = value
        if size() > max_bytes and section in data:
            cut.append(f"{section}: dropped")
            data.pop(section)
        if size() <= max_bytes:
            break
    data["truncated"] = cut
    return json.dumps(data, separators=(",", ":")), cut


def build_context(
    lakehouse: Lakehouse,
    store: ContextStore,
    spec: ContextSpec,
    *,
    as_of: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    memory_limit: str | None = None,
    commit: bool = True,
    reland: bool = False,
    full: bool = False,
    pii_key: str = "",
) -> BuildReport:
    """Run one build. See the module docstring for the stages.

    Identifiers a deletion suppressed never join (``pii_key`` recognises them), and landing holds the
    fence a deletion job takes: a build that read the lakehouse before a deletion finished starts again
    (:mod:`customer_context.govern.fence`).

    Args:
        lakehouse: Source tables and destination of the build's Iceberg state.
        store: The serving store snapshots land in.
        spec: The context spec.
        as_of: The clock windows and scores are relative to; default: the newest event's
            ``received_at`` (so a rebuild with no new data changes nothing), else now.
        progress: Called with one line per finished stage.
        memory_limit: DuckDB memory limit (e.g. ``"4GB"``).
        commit: False for a dry run: nothing is written to the lakehouse (no table is created or
            changed) and the store's landing marker is left alone.
        reland: Land every current snapshot and alias, changed or not.
        full: Recompute from scratch: score parameters refitted whatever their age, and everything landed
            again (``reland``).
        pii_key: The PII hash key (suppressed identifiers are stored as keyed hashes).

    Returns:
        The report.
    """
    from customer_context.errors import DeletionRaced
    from customer_context.govern.fence import LandingGuard

    for attempt in range(BUILD_ATTEMPTS):
        guard = LandingGuard(store, pii_key, on_wait=lambda: progress and progress("waiting for a deletion job"))
        try:
            return _build_once(lakehouse, store, spec, guard, as_of=as_of, progress=progress,
                               memory_limit=memory_limit, commit=commit, reland=reland, full=full)
        except DeletionRaced:
            if attempt == BUILD_ATTEMPTS - 1:
                raise
            logger.info("a deletion job finished while the build read the lakehouse: building again")
            if progress:
                progress("a deletion job finished meanwhile: building again")
    raise AssertionError("unreachable")


def _build_once(
    lakehouse: Lakehouse,
    store: ContextStore,
    spec: ContextSpec,
    guard: Any,
    *,
    as_of: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    memory_limit: str | None = None,
    commit: bool = True,
    reland: bool = False,
    full: bool = False,
) -> BuildReport:
    """One attempt of :func:`build_context` (raises ``DeletionRaced`` when it must start again)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    from customer_context import identifiers
    from customer_context.assemble import identity

    built_at = datetime.now(UTC)
    report = BuildReport(built_at=built_at.isoformat(), dry_run=not commit)
    stages = _Stages(report, progress)
    con = duckdb.connect()
    identifiers.register(con)  # the Python form of the identifier normalisations SQL cannot say exactly
    # tables are compressed at each checkpoint (a fifth of their plain in-memory size)
    con.execute("ATTACH ':memory:' AS build (COMPRESS)")
    con.execute("USE build")
    if memory_limit:
        con.execute(f"SET memory_limit = {lit(memory_limit)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")  # lets DuckDB stream large results in less memory
    import tempfile

    # an in-memory database spills to disk only where told (Lambda: /tmp, sized by EphemeralStorage)
    con.execute(f"SET temp_directory = {lit(str(Path(tempfile.gettempdir()) / 'customer-context-duckdb'))}")
    try:
        _register_events(con, lakehouse, spec, report)
        _register_records(con, lakehouse, spec)
        max_received = _scalar(con, "SELECT max(received_at) FROM events_unique")
        data_as_of = max_received.astimezone(UTC) if max_received else None
        report.data_as_of = data_as_of.isoformat() if data_as_of else None
        # Windows and scores are relative to the data's clock (rounded down to the spec's resolution),
        # not the wall clock: a rebuild with no new data yields the same content, hence lands nothing.
        clock = as_of or _floor(data_as_of or built_at, spec.snapshot.clock_resolution)
        report.as_of = clock.isoformat()
        stages.done("read", f"{report.events:,} events")

        nodes, edges, report.suppressed_identifiers = _identity_inputs(con, spec, guard)
        config = identity.IdentityConfig(
            rules={name: identity.IdentifierRule(name, rule.priority, rule.limit)
                   for name, rule in spec.identifiers.types.items()},
            blocked_values=tuple(spec.identifiers.blocked_values),
            max_identifiers_per_profile=spec.identifiers.max_identifiers_per_profile,
        )
        result = identity.resolve(identity.nodes_from_arrow(nodes), identity.edges_from_arrow(edges), config,
                                  _previous_identity(lakehouse))
        del nodes, edges
        graph = identity.result_to_arrow(result)
        con.register("id_map", graph)
        slices = max(1, -(-report.events // EVENTS_PER_SLICE))
        # each profile's slice, kept (like traits and scores) in slice order: a slice's rows are read alone
        con.execute(f"CREATE TABLE profiles AS SELECT profile_id, CAST({_slice_sql(slices)} AS INTEGER) AS _slice "
                    "FROM (SELECT DISTINCT profile_id FROM id_map) ORDER BY _slice")
        report.identifiers = graph.num_rows
        report.profiles = int(_scalar(con, "SELECT count(*) FROM profiles"))
        report.rejected_edges = len(result.rejected_edges)
        report.merged_profiles = len(result.merged)
        # kept as Arrow until the commit; the result's Python objects are let go
        edges_refused = result.rejected_edges
        rejected = pa.Table.from_pydict({
            **{k: [getattr(e, k) for e, _ in edges_refused] for k in ("a_type", "a_value", "b_type", "b_value",
                                                                      "first_seen", "source")},
            "reason": [r for _, r in edges_refused], "built_at": [built_at] * len(edges_refused),
        }, schema=lakehouse.arrow_schema("identity_rejected_edges"))
        del edges_refused
        del result
        _profile_events(con, spec, slices)
        stages.done("identity", f"{report.profiles:,} profiles, {report.identifiers:,} identifiers, "
                                f"{report.rejected_edges:,} edges refused")

        _compute_traits(con, spec, clock, report)
        stages.done("traits", f"{len(spec.traits)} traits")
        models = _previous_models(lakehouse, built_at, spec.scores.refit_every)
        if full:
            models.fresh = False  # refitted now; older parameters stay the fallback if the fit fails
        report.scores = _compute_scores(con, spec, clock, models)
        stages.done("scores", "skipped: " + report.scores["skipped"] if "skipped" in report.scores else
                    f"fitted on {report.scores['buyers']:,} buyers")

        # Each slice of profiles (by hash) is rendered once into a small table of contents and hashes; only
        # the changed ones become documents, streamed to the store and to the history's data files. What
        # changed is decided in DuckDB against the previous build's state: only changed documents and
        # moved identifiers ever reach Python.
        _register_previous(con, lakehouse)
        if full:
            report.relanded = "a full build"
        elif reland:
            report.relanded = "asked for (reland)"
        elif commit:
            report.relanded = _store_out_of_step(con, lakehouse, store)
        if report.relanded:
            logger.warning("landing every snapshot and alias again", extra={"reason": report.relanded})
        everything = "TRUE" if report.relanded else "FALSE"
        con.execute(
            "CREATE TABLE profile_identifiers AS SELECT profile_id, any_value(_slice) AS _slice, "
            "to_json(map_from_entries(list_sort(list((identifier_type, vals))))) AS identifiers FROM ("
            "SELECT profile_id, identifier_type, list_sort(list(identifier_value)) AS vals FROM id_map "
            "GROUP BY ALL) JOIN profiles USING (profile_id) GROUP BY profile_id ORDER BY _slice")
        con.execute("CREATE TABLE docs (profile_id VARCHAR, content_hash VARCHAR, version BIGINT, changed BOOLEAN, "
                    "field_hashes VARCHAR, changed_at VARCHAR)")
        if commit:
            guard.enter()  # from here to the commit, no deletion job runs (and none finished since the start)
        history = _History(lakehouse, built_at, data_as_of) if commit else None
        refused: list[Refused] = []
        max_bytes = spec.snapshot.max_bytes
        built_iso = built_at.isoformat()
        rendering = rendering_cpu = 0.0
        try:
            for i in range(slices):
                t0, c0 = time.perf_counter(), time.process_time()
                # a new content is a new version; an unchanged one keeps its version (and lands only when
                # everything lands again)
                con.execute(
                    "CREATE TEMP TABLE slice_docs AS SELECT *, CASE WHEN changed THEN coalesce(prev_version, 0) + 1 "
                    "ELSE prev_version END AS version FROM (SELECT d.profile_id, d.content_hash, d.content, "
                    "s.version AS prev_version, s.content_hash IS DISTINCT FROM d.content_hash AS changed, "
                    "s.profile_id IS NOT NULL AS known, s.field_hashes AS prev_hashes, "
                    "s.changed_at AS prev_changed_at "
                    f"FROM ({_snapshot_sql(spec, (i, slices))}) d LEFT JOIN prev_state s USING (profile_id))")
                # when each field last changed: recomputed for the changed profiles only, carried for the others
                con.execute(f"CREATE TEMP TABLE slice_fields AS {_field_changes_sql(built_at)}")
                con.execute("CREATE TEMP TABLE slice_all AS SELECT d.*, CASE WHEN f.profile_id IS NULL THEN "
                            "d.prev_hashes ELSE f.field_hashes END AS field_hashes, CASE WHEN f.profile_id IS NULL "
                            "THEN d.prev_changed_at ELSE f.changed_at END AS changed_at "
                            "FROM slice_docs d LEFT JOIN slice_fields f USING (profile_id)")
                con.execute("INSERT INTO docs SELECT profile_id, content_hash, version, changed, field_hashes, "
                            "changed_at FROM slice_all")
                rendering += time.perf_counter() - t0
                rendering_cpu += time.process_time() - c0
                reader = con.sql(f"SELECT profile_id, version, content_hash, doc, strlen(doc) > {max_bytes} AS over, "
                                 f"changed, changed_at FROM (SELECT *, {_doc_sql(built_at, data_as_of)} AS doc "
                                 f"FROM slice_all WHERE changed OR {everything})").to_arrow_reader(5000)
                for batch in reader:
                    pids, versions, hashes, docs = (batch.column(c).to_pylist() for c in range(4))
                    times = batch.column(6).to_pylist()
                    cut_docs = False
                    for n in (pc.indices_nonzero(batch.column(4)).to_pylist() if pc.any(batch.column(4)).as_py()
                              else ()):
                        docs[n], cut = fit_to_budget(docs[n], max_bytes)
                        report.truncated_profiles += bool(cut)
                        cut_docs = True
                    report.items_written += store.put_snapshots(
                        (SnapshotItem(pid, doc, content_hash, version, built_iso, report.data_as_of, changed_at)
                         for pid, version, content_hash, doc, changed_at
                         in zip(pids, versions, hashes, docs, times, strict=True)),
                        refused)
                    if history is not None:
                        # the history holds each version once: what lands again unchanged is not repeated
                        changed = batch.column(5)
                        if report.relanded and not pc.all(changed).as_py():
                            history.write(batch.filter(changed),
                                          [d for d, c in zip(docs, changed.to_pylist(), strict=True) if c]
                                          if cut_docs else None)
                        else:
                            history.write(batch, docs if cut_docs else None)
                del reader
                con.execute("DROP TABLE slice_all")
                con.execute("DROP TABLE slice_fields")
                con.execute("DROP TABLE slice_docs")
            if history is not None:
                history.close()
        except BaseException:
            if history is not None:
                history.abandon()
            raise
        report.changed_profiles = int(_scalar(con, "SELECT count(*) FROM docs WHERE changed"))
        stages.record("snapshots", rendering, rendering_cpu, f"{report.profiles:,} documents rendered"
                      + (f" in {slices} slices" if slices > 1 else ""))

        def rows(sql: str) -> Any:
            for batch in con.sql(sql).to_arrow_reader(50_000):
                yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

        aliases = store.put_aliases(rows(
            "SELECT m.identifier_type, m.identifier_value, m.profile_id FROM id_map m LEFT JOIN prev_ids p "
            "ON p.identifier_type = m.identifier_type AND p.identifier_value = m.identifier_value "
            f"WHERE p.profile_id IS DISTINCT FROM m.profile_id OR {everything}"), refused)
        report.items_written += aliases
        deleted = store.delete_aliases(rows(
            "SELECT p.identifier_type, p.identifier_value FROM prev_ids p ANTI JOIN id_map m "
            "ON p.identifier_type = m.identifier_type AND p.identifier_value = m.identifier_value"))
        deleted += store.delete_snapshots(r[0] for r in rows(
            "SELECT DISTINCT profile_id FROM prev_ids WHERE profile_id NOT IN (SELECT profile_id FROM profiles) "
            "ORDER BY 1"))
        report.items_deleted += deleted
        report.quarantined = [r.to_dict() for r in refused]
        if refused:
            logger.warning("items the serving store cannot hold were quarantined",
                           extra={"quarantined": len(refused), "first": report.quarantined[0]})
        generation = uuid.uuid4().hex
        if commit:
            store.put_landing_marker(generation)
        stages.done("landing", f"{report.changed_profiles:,} changed snapshots, {aliases:,} aliases written, "
                               f"{deleted:,} items deleted"
                    + (f", {len(refused):,} quarantined" if refused else "")
                    + (f"; everything landed again: {report.relanded}" if report.relanded else ""))
        if not commit:
            stages.done("commit", "skipped: dry run")
            return report

        assert history is not None
        history.commit()
        graph_rows = graph.append_column("built_at", pa.repeat(pa.scalar(built_at, pa.timestamp("us", "UTC")),
                                                               graph.num_rows))
        lakehouse.overwrite("identity_graph", graph_rows.cast(lakehouse.arrow_schema("identity_graph")))
        del graph_rows
        lakehouse.overwrite("identity_rejected_edges", rejected)
        if report.scores.get("refitted"):
            model = {k: v for k, v in report.scores.items() if k in ("bgnbd", "gamma_gamma", "buyers",
                                                                     "repeat_buyers")}
            model["fitted_at"] = built_at.isoformat()
            lakehouse.append("score_models", pa.Table.from_pylist(
                [{"fitted_at": built_at, "model": json.dumps(model)}], schema=lakehouse.arrow_schema("score_models")))
        state = con.sql(
            f"SELECT d.profile_id, d.version, d.content_hash, CASE WHEN d.changed THEN {lit(built_at)} "
            "ELSE s.built_at END AS built_at, d.field_hashes, d.changed_at FROM docs d "
            "LEFT JOIN prev_state s USING (profile_id)"
        ).to_arrow_table()
        # a state table made before fields were tracked gains their columns; rows are written with the table's
        # own field ids (an evolved table's may differ from the declared ones)
        lakehouse.add_missing_columns("profile_state")
        lakehouse.overwrite("profile_state", state.cast(lakehouse.table("profile_state").schema().as_arrow()),
                            {LANDING_GENERATION: generation})
        stages.done("commit", "identity_graph, profile_state, context_snapshots")
        return report
    finally:
        guard.exit()
        con.close()


