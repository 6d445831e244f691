"""build_context: the lakehouse → one context snapshot per customer → the serving store.

Stages (each timed in the report, progress logged):

0. **plan**: what happened since the last build (:mod:`customer_context.assemble.changes`): that build
   recorded, with its committed state, the snapshot of each source table it read, the hashes of the spec
   and of the code, and its clock. When every source table holds the same rows (nothing committed, or a
   compaction that rewrote files without changing rows), the spec, the code and the clock are the same, the
   build's own state is as it left it, no deletion job ran or suppression was filed and the serving store
   still holds what it landed, the build does no work: the documents a build would land now are those
   already landed. When the only change is events appended at the same clock, the build is incremental: it
   reads the new events' data files and ``build_rows`` (its own copy of the events it attributed), resolves
   the new identifiers against the last graph and computes only the profiles new events touch (docs/spec.md,
   "Incremental builds"); what it finds it cannot decide (the clock moved, a new copy of a kept messageId
   received first, the score threshold) makes it build in full. Otherwise it runs in full, logging why
   (``full=True`` forces that). The report's ``plan`` says which and why.
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

The stages are the functions below (``_read`` … ``_commit``), each with explicit inputs and a typed result;
they compute through a :class:`~customer_context.assemble.engine.BuildEngine` (the engine that owns the build's
working data, its connection and its SQL dialect: :class:`~customer_context.assemble.duckdb_engine.DuckDBEngine`)
and write to the serving store through a :class:`~customer_context.assemble.lander.Lander`.

A dry run (``commit=False``) lands into the store it is given (the CLI gives an in-memory one) and
commits nothing to the lakehouse: the next real build sees exactly what it would have seen.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from customer_context.assemble import changes
from customer_context.assemble import identity as identity_resolution
from customer_context.assemble.duckdb_engine import DuckDBEngine
from customer_context.assemble.engine import BuildEngine, EventsRead, EventsToRead, Suppressions, TraitCounts
from customer_context.assemble.lander import SECTION_DROP_ORDER, Lander, fit_to_budget
from customer_context.observability import logger
from customer_context.ports import JsonObject
from customer_context.spec import ContextSpec, duration_seconds
from customer_context.stores.context_store import ContextStore

__all__ = ["SECTION_DROP_ORDER", "BuildReport", "build_context", "fit_to_budget"]

# Documents are rendered and landed in slices of profiles, one per this many events, to bound a build's memory.
EVENTS_PER_SLICE = 1_000_000
# Landed snapshots and aliases a build reads back from the store to check it still holds what was landed.
LANDING_SAMPLE = 32
# The profile_state snapshot property naming the landing generation of the build that committed it.
LANDING_GENERATION = "landing-generation"
# The profile_state snapshot property holding what the build that committed it read and was built with
# (the source tables' snapshots, the spec's and the code's hashes, its clock): the next build's plan.
BUILD_INPUTS = "build-inputs"
# Tables of the build's own state its next run reads (besides profile_state): as its commit left them, or
# the plan cannot trust them.
STATE_TABLES = ("identity_graph", "score_models", "build_rows")
# Builds that start again because a deletion job finished while they read (govern/fence.py).
BUILD_ATTEMPTS = 3
# Landed documents are written to the history's Parquet files in row groups and files of about these sizes.
HISTORY_ROW_GROUP_BYTES = 64 << 20
HISTORY_FILE_BYTES = 1 << 30

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

    from customer_context.stores.iceberg import Lakehouse


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
    # what the plan decided: "full" or "nothing_new", why, and what happened to each table since the last build
    plan: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> JsonObject:
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


class _DataFiles:
    """Rows of one table written as Parquet data files while a build runs (a few MB in memory at a time), added to
    the table in one commit later (:meth:`commit`) or deleted (:meth:`abandon`)."""

    def __init__(self, lakehouse: Lakehouse, name: str, dictionary: list[str] | bool) -> None:
        self.lakehouse, self.name, self.dictionary = lakehouse, name, dictionary
        self.schema = lakehouse.arrow_schema(name)
        self.paths: list[str] = []
        self.committed = False
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._file_bytes = 0
        self._writer: Any = None
        self._stream: Any = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Rows with :attr:`schema`."""
        if not batch.num_rows:
            return
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
            table = self.lakehouse.table(self.name)
            path = table.location_provider().new_data_location(f"{uuid.uuid4()}-build.parquet")
            self.paths.append(path)
            self._stream = table.io.new_output(path).create(overwrite=True)
            # statistics on every column, as the table's manifests take their bounds from them
            self._writer = pq.ParquetWriter(self._stream, self.schema, compression="zstd",
                                            use_dictionary=self.dictionary)
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
        if not self.paths:
            return
        io = self.lakehouse.table(self.name).io
        for path in self.paths:
            with contextlib.suppress(Exception):
                io.delete(path)

    def commit(self, replace: bool = False) -> None:
        """Add the files to the table in one commit (a conflicting commit is retried); ``replace``: instead of the
        rows it holds."""
        paths = list(self.paths)
        if not paths and not replace:
            return

        def add(table: Table) -> None:
            if not replace:
                table.add_files(paths, check_duplicate_files=False)
                return
            from pyiceberg.expressions import AlwaysTrue

            snapshot = table.current_snapshot()
            held = snapshot.summary.get("total-records") if snapshot and snapshot.summary else None
            with table.transaction() as tx:
                if held != "0" and snapshot is not None:
                    tx.delete(AlwaysTrue())
                if paths:
                    tx.add_files(paths, check_duplicate_files=False)

        self.lakehouse._commit(self.name, add)
        self.committed = True


class _History(_DataFiles):
    """The landed documents as data files of ``context_snapshots``, added in one commit after landing."""

    def __init__(self, lakehouse: Lakehouse, built_at: datetime, data_as_of: datetime | None) -> None:
        # dictionaries only where they help (ids, hashes and documents are all distinct)
        super().__init__(lakehouse, "context_snapshots", ["version", "built_at", "data_as_of"])
        self.built_at, self.data_as_of = built_at, data_as_of

    def documents(self, batch: pa.RecordBatch, docs: list[str] | None = None) -> None:
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
        self.write(pa.RecordBatch.from_arrays(
            [c.cast(f.type) for c, f in zip(columns, self.schema, strict=True)], schema=self.schema))


class _KeptRows(_DataFiles):
    """The events the build attributed, as data files of ``build_rows`` (committed with the build's state): what
    the next incremental build reads instead of all the events."""

    def __init__(self, lakehouse: Lakehouse) -> None:
        super().__init__(lakehouse, "build_rows", ["type", "event", "time_flag"])

    def keep(self, rows: pa.RecordBatchReader) -> None:
        """Write ``rows`` (the engine's, by column name)."""
        import pyarrow as pa

        for batch in rows:
            columns = [batch.column(f.name).cast(f.type) if f.name in batch.schema.names
                       else pa.nulls(batch.num_rows, f.type) for f in self.schema]
            self.write(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.close()


def _floor(when: datetime, resolution: str) -> datetime:
    step = duration_seconds(resolution)
    if not step:
        return when
    epoch = int(when.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, tz=UTC)


def _previous_identity(lakehouse: Lakehouse) -> pa.Table | None:
    """The last build's identity graph as Arrow (resolve reads it column-wise; no per-row objects), with each
    identifier's first sighting (null in a graph written before it was kept)."""
    if not lakehouse.exists("identity_graph"):
        return None
    columns = ("identifier_type", "identifier_value", "profile_id", "joined_via", "profile_first_seen")
    graph = lakehouse.scan("identity_graph", selected_fields=(
        *columns, *(("first_seen",) if "first_seen" in lakehouse.columns("identity_graph") else ())))
    if "first_seen" not in graph.column_names:
        import pyarrow as pa

        graph = graph.append_column("first_seen", pa.nulls(graph.num_rows, pa.timestamp("us", "UTC")))
    return graph


class _Fallback(Exception):
    """An incremental build found it cannot be one (the message says why): the build runs in full instead."""


@functools.cache
def code_hash() -> str:
    """A hash of the package's source files (what is deployed): a build of other code recomputes everything."""
    import hashlib
    from pathlib import Path

    import customer_context

    root = Path(customer_context.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def spec_hash(spec: ContextSpec) -> str:
    """A hash of the spec's every setting."""
    import hashlib

    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def suppressions_hash(deleted: Iterable[str]) -> str:
    """A hash of the identifiers deletions suppressed (their keyed hashes): a build drops them from its inputs."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(deleted)).encode()).hexdigest()[:16]


def _source_tables(spec: ContextSpec) -> list[str]:
    """The tables a build reads its data from."""
    return ["events", *spec.record_tables]


@dataclass
class Plan:
    """What the build does and why: ``nothing_new`` (no work: the last build's documents are what a build now
    would land) or ``full``; and what happened to each table since the last build."""

    mode: str
    reasons: list[str]
    tables: dict[str, changes.TableChange]
    observed: dict[str, changes.Observed]  # the source tables as found before the read: what this build consumes
    spec_hash: str
    suppressions: str
    previous: dict[str, Any] | None

    def line(self) -> str:
        """The plan's log line."""
        if self.mode == "nothing_new":
            return f"incremental build: nothing new since the last build ({'; '.join(self.reasons)})"
        if self.mode == "incremental":
            return f"incremental build: {'; '.join(self.reasons)}"
        return f"full build: {'; '.join(self.reasons)}"

    def events_to_read(self) -> EventsToRead:
        """The events the read stage reads: the snapshot found before reading, all of it or (incremental) the
        data files appended since the last build's."""
        since = None
        if self.mode == "incremental":
            assert self.previous is not None
            since = self.previous["tables"]["events"]["snapshot"]
        return EventsToRead(self.observed["events"].snapshot, since)

    def to_dict(self) -> JsonObject:
        """JSON-ready (the report's ``plan``)."""
        return {"mode": self.mode, "reasons": list(self.reasons),
                "tables": {name: change.to_dict() for name, change in self.tables.items()}}


def _previous_inputs(lakehouse: Lakehouse) -> dict[str, Any] | None:
    """What the last committed build recorded (:data:`BUILD_INPUTS`), if its state is the current one."""
    if not lakehouse.exists("profile_state"):
        return None
    snapshot = lakehouse.table("profile_state").current_snapshot()
    summary = snapshot.summary if snapshot is not None else None
    properties = summary.additional_properties if summary is not None else {}
    text = properties.get(BUILD_INPUTS)
    try:
        inputs = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(inputs, dict) or not isinstance(inputs.get("tables"), dict):
        return None
    return {**inputs, "generation": properties.get(LANDING_GENERATION)}


def _current(lakehouse: Lakehouse, name: str) -> Table | None:
    """The table as its catalog holds it now (``None``: it does not exist)."""
    return lakehouse.table(name) if lakehouse.exists(name) else None


def _table_change(table: Table | None, name: str, previous: dict[str, Any] | None) -> changes.TableChange:
    recorded = changes.Observed.from_dict(previous["tables"].get(name)) if previous else None
    return changes.classify(table, recorded)


def _describe(name: str, change: changes.TableChange) -> str:
    if change.change is changes.Change.APPEND_ONLY:
        rows = "1 row" if change.added_rows == 1 else f"{change.added_rows:,} rows"
        return f"{name} gained {rows}"
    return f"{name}: {change.reason}"


def _plan(engine: BuildEngine, lakehouse: Lakehouse, store: ContextStore, spec: ContextSpec, built_at: datetime,
          as_of: datetime | None, *, full: bool, reland: bool, commit: bool, suppressions: str,
          fallback: str | None = None) -> Plan:
    """Whether the build has any work to do: none when the source tables hold the rows the last build read (or
    the same rows rewritten), the spec, the code and the clock are the last build's, its state is as it left it
    and the serving store still holds what it landed. When the only change is events appended, an incremental
    build (the read stage may still find it cannot be one: ``fallback`` then says why). Otherwise a full build,
    with every reason found."""
    sources = _source_tables(spec)
    found = {name: _current(lakehouse, name) for name in (*sources, *STATE_TABLES)}  # each loaded once
    observed = {name: changes.observe(found[name]) for name in sources}
    previous = _previous_inputs(lakehouse)
    tables = {name: _table_change(table, name, previous) for name, table in found.items()}
    digest = spec_hash(spec)
    plan = Plan("full", [], tables, observed, digest, suppressions, previous)
    reasons = plan.reasons
    if full:
        reasons.append("--full")
    if reland:
        reasons.append("asked to land everything again (reland)")
    if not commit:
        reasons.append("a dry run builds everything")
    if fallback:
        reasons.append(fallback)
    if previous is None:
        reasons.append("no earlier build recorded what it read")
        return plan
    if previous.get("spec") != digest:
        reasons.append("the spec changed")
    if previous.get("code") != code_hash():
        reasons.append("the code changed since the last build")
    events = tables["events"]
    appended = events.change is changes.Change.APPEND_ONLY
    reasons += [_describe(name, change) for name, change in tables.items()
                if not change.unchanged_rows and not (name == "events" and appended)]
    if not (events.unchanged_rows or appended):
        return plan
    if appended and reasons:
        reasons.insert(0, _describe("events", events))
        return plan
    # the clock the read would give: the newest event is the one the last build saw (appended events may move
    # it: the read stage tells)
    data_as_of = previous.get("data_as_of")
    clock = as_of or _floor(datetime.fromisoformat(data_as_of) if data_as_of else built_at,
                            spec.snapshot.clock_resolution)
    if clock.isoformat() != previous.get("clock"):
        reasons.append(f"the clock moved from {previous.get('clock')} to {clock.isoformat()}")
    if store.deletion_generation() != previous.get("deletion_generation"):
        reasons.append("a deletion job finished since the last build")
    if suppressions != previous.get("suppressions"):
        reasons.append("identifiers were suppressed since the last build")
    if spec.scores.enabled and not reasons:
        models = _previous_models(lakehouse, built_at, spec.scores.refit_every)
        if models.latest is not None and not models.fresh:
            reasons.append("the score models are due for a refit")
        elif appended and previous.get("scored") and (models.latest is None or "bgnbd" not in models.latest):
            reasons.append("the score parameters in use are gone")
    if appended and not reasons and previous.get("events") and \
            (previous["tables"].get("build_rows") or {}).get("snapshot") is None:
        reasons.append("the last build kept no rows to build on")
    if not reasons:
        lost = _store_lost(engine, lakehouse, store, previous.get("generation"))
        if lost:
            reasons.append(lost)
    if appended:
        reasons.insert(0, _describe("events", events))
        if len(reasons) == 1:
            plan.mode = "incremental"
    elif not reasons:
        plan.mode = "nothing_new"
        moved = [f"{n} {c.reason}" for n, c in tables.items() if c.change is changes.Change.REWRITE_SAME_ROWS]
        reasons.append(f"as of {clock.isoformat()}" + (f"; {', '.join(moved)}" if moved else ""))
    return plan


def _store_lost(engine: BuildEngine, lakehouse: Lakehouse, store: ContextStore, generation: str | None) -> str | None:
    """Why the serving store may not hold what the last build landed (its marker, a sample), or ``None``."""
    marker = store.get_landing_marker()
    if marker != generation:
        return ("the serving store has no landing marker (emptied, recreated or restarted)" if marker is None
                else "the serving store's landing marker is not the last build's (restored, or a landing interrupted)")
    sample = engine.previous_sample(lakehouse, LANDING_SAMPLE)
    missing = store.missing(sample.snapshots, sample.aliases)
    return f"the serving store lost items: {missing}" if missing else None


def _inputs(plan: Plan, lakehouse: Lakehouse, report: BuildReport, clock: datetime, deletion_generation: int) -> str:
    """:data:`BUILD_INPUTS` of a build that commits now: the source tables as it found them before reading (a
    commit made meanwhile is read again next time), its state tables as its commit left them."""
    tables = {name: observed.to_dict() for name, observed in plan.observed.items()}
    for name in STATE_TABLES:
        tables[name] = changes.observe(_current(lakehouse, name)).to_dict()
    scores = report.scores
    return json.dumps({"tables": tables, "spec": plan.spec_hash, "code": code_hash(), "clock": clock.isoformat(),
                       "data_as_of": report.data_as_of, "deletion_generation": deletion_generation,
                       "suppressions": plan.suppressions,
                       "events": report.events, "profiles": report.profiles, "identifiers": report.identifiers,
                       # scores evaluated (not skipped), and (at least) how many buyers and repeat buyers fitted
                       "scored": "bgnbd" in scores and "skipped" not in scores,
                       "buyers": int(scores.get("buyers") or 0),
                       "repeat_buyers": int(scores.get("repeat_buyers") or 0)},
                      separators=(",", ":"))


# The stages, in order. Each takes what it needs and returns what the next ones use.


@dataclass(frozen=True)
class ReadResult:
    """The read stage's result: the events read, and the clock windows and scores are relative to."""

    events: EventsRead
    clock: datetime


def _read(engine: BuildEngine, lakehouse: Lakehouse, spec: ContextSpec, built_at: datetime,
          as_of: datetime | None, plan: Plan) -> ReadResult:
    """Events and record tables into the engine. An incremental build reads the events appended since the last
    build and what earlier builds kept (``build_rows``); its clock must be the last build's."""
    events = engine.load_events(lakehouse, spec, plan.events_to_read())
    engine.load_records(lakehouse, spec)
    if plan.mode == "incremental":
        assert plan.previous is not None
        copies = engine.load_kept_rows(lakehouse, spec)
        if copies.earlier:
            raise _Fallback(f"{copies.earlier:,} new events are copies, received first, of messageIds the last "
                            "build kept")
        seen = plan.previous.get("data_as_of")
        times = [t for t in (datetime.fromisoformat(seen) if seen else None, events.data_as_of) if t]
        newest = max(times) if times else None
        events = EventsRead(int(plan.previous.get("events") or 0) + events.events - copies.dropped,
                            events.conflicting_message_ids + copies.conflicting, events.flagged_times, newest)
        clock = as_of or _floor(newest or built_at, spec.snapshot.clock_resolution)
        if clock.isoformat() != plan.previous.get("clock"):
            raise _Fallback(f"the new events moved the clock from {plan.previous.get('clock')} to "
                            f"{clock.isoformat()} (values that change as time passes are recomputed in full)")
        return ReadResult(events, clock)
    # Windows and scores are relative to the data's clock (rounded down to the spec's resolution),
    # not the wall clock: a rebuild with no new data yields the same content, hence lands nothing.
    return ReadResult(events, as_of or _floor(events.data_as_of or built_at, spec.snapshot.clock_resolution))


@dataclass(frozen=True)
class IdentityResult:
    """The identity stage's result: the resolved graph (identifier → profile) and the edges refused, as the
    commit writes them, and the profiles' count and slices."""

    graph: pa.Table
    rejected: pa.Table
    identifiers: int
    profiles: int
    slices: int
    rejected_edges: int
    merged_profiles: int
    suppressed_identifiers: int
    touched: int  # the profiles computed: every one, or (incremental) those holding a new event's identifier


def _identity(engine: BuildEngine, lakehouse: Lakehouse, spec: ContextSpec, guard: Suppressions, events: int,
              built_at: datetime, incremental: bool = False,
              keep: Callable[[pa.RecordBatchReader], None] | None = None) -> IdentityResult:
    """Resolve identities (:mod:`customer_context.assemble.identity`) on the engine's identifiers and give every
    row its profile.

    An incremental build resolves the new events' identifiers and edges (and the record rows', unchanged: their
    edges change nothing again) against the last build's graph, each of its identifiers a node seen when it was
    first seen: the edges a build over all events would apply again join nothing new and are refused again (a
    profile only grows), so the graph is the one it would give. Only the profiles holding a new event's identifier
    are then computed (``touched``); the refused edges are the last build's plus the new ones."""
    import pyarrow as pa
    import pyarrow.compute as pc

    inputs = engine.identity_inputs(spec, guard)
    previous = _previous_identity(lakehouse)
    nodes = inputs.nodes
    if incremental:
        assert previous is not None
        if previous["first_seen"].null_count:
            raise _Fallback("the identity graph was written before identifiers' first sightings were kept")
        known = pa.table({"type": previous["identifier_type"], "value": previous["identifier_value"],
                          "first_seen": previous["first_seen"]})
        nodes = pa.concat_tables([nodes, known.cast(nodes.schema)]) if nodes.num_rows else known
    config = identity_resolution.IdentityConfig(
        rules={name: identity_resolution.IdentifierRule(name, rule.priority, rule.limit)
               for name, rule in spec.identifiers.types.items()},
        blocked_values=tuple(spec.identifiers.blocked_values),
        max_identifiers_per_profile=spec.identifiers.max_identifiers_per_profile,
    )
    result = identity_resolution.resolve(
        identity_resolution.nodes_from_arrow(nodes), identity_resolution.edges_from_arrow(inputs.edges),
        config, previous)
    suppressed = inputs.suppressed
    del inputs, nodes, previous
    graph = identity_resolution.result_to_arrow(result)
    slices = max(1, -(-events // EVENTS_PER_SLICE))
    profiles = engine.assign_profiles(graph, slices)
    # kept as Arrow until the commit; the result's Python objects are let go
    edges_refused = result.rejected_edges
    rejected = pa.Table.from_pydict({
        **{k: [getattr(e, k) for e, _ in edges_refused] for k in ("a_type", "a_value", "b_type", "b_value",
                                                                  "first_seen", "source")},
        "reason": [r for _, r in edges_refused], "built_at": [built_at] * len(edges_refused),
    }, schema=lakehouse.arrow_schema("identity_rejected_edges"))
    merged = len(result.merged)
    del edges_refused
    del result
    touched = profiles
    if incremental:
        touched = engine.narrow_to_affected()
        if lakehouse.exists("identity_rejected_edges"):
            before = lakehouse.scan("identity_rejected_edges").cast(rejected.schema)

            def pairs(t: pa.Table) -> pa.Array:
                a, b = (pc.binary_join_element_wise(t[f"{end}_type"].cast(pa.string()),
                                                    t[f"{end}_value"].cast(pa.string()), "\x00") for end in "ab")
                return pc.binary_join_element_wise(pc.min_element_wise(a, b), pc.max_element_wise(a, b), "\x01")

            # a pair refused before and seen again keeps its first refusal
            rejected = pa.concat_tables([before, rejected.filter(pc.invert(pc.is_in(pairs(rejected),
                                                                                     value_set=pairs(before))))])
    engine.attribute_rows(spec, slices, keep)
    return IdentityResult(graph, rejected, graph.num_rows, profiles, slices, rejected.num_rows, merged, suppressed,
                          touched)


def _traits(engine: BuildEngine, spec: ContextSpec, clock: datetime) -> TraitCounts:
    """Every trait (:mod:`customer_context.assemble.compiler`); returns the values traits could not read."""
    counts = engine.compute_traits(spec, clock)
    if counts.invalid or counts.unconverted:
        logger.warning("trait values left out: not numbers under the numeric rule, or in a currency the trait's "
                       "unit cannot be converted from", extra={"invalid_values": counts.invalid,
                                                               "unconverted_values": counts.unconverted})
    return counts


def _scores(engine: BuildEngine, lakehouse: Lakehouse, spec: ContextSpec, clock: datetime, built_at: datetime,
            full: bool, previous: dict[str, Any] | None = None, touched: int = 0) -> dict[str, Any]:
    """BG/NBD and Gamma-Gamma (:mod:`customer_context.assemble.scores`); returns the report's ``scores``. An
    incremental build (``previous``: what the last build recorded) scores the ``touched`` profiles with the
    parameters in use (the plan made sure they are fresh)."""
    models = _previous_models(lakehouse, built_at, spec.scores.refit_every)
    if full:
        models.fresh = False  # refitted now; older parameters stay the fallback if the fit fails
    if previous is None:
        return _compute_scores(engine, spec, clock, models)
    if not spec.scores.enabled:
        engine.store_scores(None)
        return {"skipped": "scores.enabled is false"}
    # scores only when a full build would score too: its buyers are the untouched profiles' (as the last build
    # counted them) and the touched ones' now, so at least (most) the last count less (plus) the touched
    # profiles (that are buyers now)
    before, repeat_before = (int(previous.get(k) or 0) for k in ("buyers", "repeat_buyers"))
    least = spec.scores.min_customers
    if not previous.get("scored"):
        summary = engine.purchase_summary(spec, clock).columns
        buyers = before + len(summary["profile_id"])
        repeat = repeat_before + int((summary["frequency"] > 0).sum())
        if buyers >= least and repeat >= 2:
            raise _Fallback(f"the last build had too few buyers to fit scores; with these events there may be "
                            f"enough (at most {buyers:,} buyers, {repeat:,} repeat buyers)")
        engine.store_scores(None)
        return {"skipped": f"at most {buyers:,} buyers and {repeat:,} repeat buyers: fewer than "
                           f"scores.min_customers ({least}) or no repeat buyers", "buyers": buyers,
                "repeat_buyers": repeat}
    result = _compute_scores(engine, spec, clock, models, rescore=True)
    if "buyers" in result:
        result["rescored"] = result["buyers"]
        result["buyers"] = max(0, before - touched) + result["rescored"]
        result["repeat_buyers"] = max(0, repeat_before - touched) + result["repeat_buyers"]
        if result["buyers"] < least or result["repeat_buyers"] < 2:
            raise _Fallback(f"{touched:,} touched profiles may take the buyers below scores.min_customers "
                            f"(at least {result['buyers']:,} buyers, {result['repeat_buyers']:,} repeat buyers)")
    return result


def _relanded(engine: BuildEngine, lakehouse: Lakehouse, lander: Lander, *, full: bool, reland: bool,
              commit: bool) -> str | None:
    """Read what the last build landed into the engine; returns why everything must land again, if it must."""
    landed = engine.load_previous(lakehouse)
    if full:
        return "a full build"
    if reland:
        return "asked for (reland)"
    if commit:
        return _store_out_of_step(engine, lakehouse, lander, landed)
    return None


def _store_out_of_step(engine: BuildEngine, lakehouse: Lakehouse, lander: Lander, landed: int) -> str | None:
    """Why the store may not hold what the last build landed (so everything must land again), or ``None``."""
    if not landed:
        return None  # nothing landed yet: everything is new anyway
    table = lakehouse.table("profile_state")
    snapshot = table.current_snapshot()
    generation = (snapshot.summary.additional_properties.get(LANDING_GENERATION) if snapshot and snapshot.summary
                  else None)
    marker = lander.marker()
    if generation is not None and marker != generation:
        return ("the serving store has no landing marker (emptied, recreated or restarted)" if marker is None
                else "the serving store's landing marker is not the last build's (restored, or a landing interrupted)")
    sample = engine.landed_sample(LANDING_SAMPLE)
    missing = lander.missing(sample.snapshots, sample.aliases)
    return f"the serving store lost items: {missing}" if missing else None


@dataclass(frozen=True)
class SnapshotsResult:
    """The snapshots stage's result: what was rendered and landed, and the rendering's own time."""

    changed_profiles: int
    items_written: int
    truncated_profiles: int
    seconds: float
    cpu_seconds: float


def _snapshots(engine: BuildEngine, lander: Lander, history: _History | None, spec: ContextSpec, slices: int,
               built_at: datetime, data_as_of: datetime | None, everything: bool) -> SnapshotsResult:
    """Each slice of profiles (by hash) is rendered once into a small table of contents and hashes; only the
    changed ones (or ``everything``) become documents, streamed to the store and to the history's data files.
    What changed is decided in the engine against the previous build's state: only changed documents and moved
    identifiers ever reach Python."""
    import pyarrow.compute as pc

    written = truncated = 0
    rendering = rendering_cpu = 0.0
    try:
        for i in range(slices):
            t0, c0 = time.perf_counter(), time.process_time()
            engine.render_slice(spec, i, slices, built_at)
            rendering += time.perf_counter() - t0
            rendering_cpu += time.process_time() - c0
            for batch in engine.slice_documents(spec.snapshot.max_bytes, built_at, data_as_of, everything):
                landed = lander.documents(batch)
                written += landed.written
                truncated += landed.truncated
                if history is not None:
                    # the history holds each version once: what lands again unchanged is not repeated
                    changed = batch.column(5)
                    if everything and not pc.all(changed).as_py():
                        history.documents(batch.filter(changed),
                                          [d for d, c in zip(landed.docs, changed.to_pylist(), strict=True) if c]
                                          if landed.docs is not None else None)
                    else:
                        history.documents(batch, landed.docs)
            engine.drop_slice()
        if history is not None:
            history.close()
    except BaseException:
        if history is not None:
            history.abandon()
        raise
    return SnapshotsResult(engine.changed_profiles(), written, truncated, rendering, rendering_cpu)


@dataclass(frozen=True)
class LandingResult:
    """The landing stage's result (besides the snapshots): aliases written, items deleted, the generation."""

    aliases: int
    deleted: int
    generation: str


def _landing(engine: BuildEngine, lander: Lander, everything: bool, commit: bool) -> LandingResult:
    """Aliases of new or moved identifiers; orphan aliases and merged-away profiles deleted; the landing marker
    (not in a dry run)."""
    aliases = lander.aliases(engine.moved_aliases(everything))
    deleted = lander.delete_aliases(engine.orphan_aliases())
    deleted += lander.delete_snapshots(engine.merged_profiles())
    if lander.refused:
        quarantined = lander.quarantined()
        logger.warning("items the serving store cannot hold were quarantined",
                       extra={"quarantined": len(quarantined), "first": quarantined[0]})
    generation = uuid.uuid4().hex
    if commit:
        lander.mark(generation)
    return LandingResult(aliases, deleted, generation)


def _commit(engine: BuildEngine, lakehouse: Lakehouse, history: _History, kept: _KeptRows, identity: IdentityResult,
            scores: dict[str, Any], built_at: datetime, generation: str, inputs: Callable[[], str],
            incremental: bool = False) -> None:
    """The Iceberg state, after landing: history, identity graph, refused edges, a refit, profile state. The
    profile state's commit comes last and carries the landing generation and what the build read
    (``inputs()``, called once the other tables are committed): a build that stops before it leaves the last
    build's record, which the state tables it committed no longer match, so the next build runs in full."""
    import pyarrow as pa

    history.commit()
    graph_rows = identity.graph.append_column(
        "built_at", pa.repeat(pa.scalar(built_at, pa.timestamp("us", "UTC")), identity.graph.num_rows))
    lakehouse.add_missing_columns("identity_graph")
    schema = lakehouse.table("identity_graph").schema().as_arrow()
    lakehouse.overwrite("identity_graph", graph_rows.select(schema.names).cast(schema))
    del graph_rows
    lakehouse.overwrite("identity_rejected_edges", identity.rejected)
    # the rows the next incremental build reads: this build's events, instead of or added to the kept ones
    kept.commit(replace=not incremental)
    if scores.get("refitted"):
        model = {k: v for k, v in scores.items() if k in ("bgnbd", "gamma_gamma", "buyers", "repeat_buyers")}
        model["fitted_at"] = built_at.isoformat()
        lakehouse.append("score_models", pa.Table.from_pylist(
            [{"fitted_at": built_at, "model": json.dumps(model)}], schema=lakehouse.arrow_schema("score_models")))
    state = engine.profile_state(built_at)
    # a state table made before fields were tracked gains their columns; rows are written with the table's
    # own field ids (an evolved table's may differ from the declared ones)
    lakehouse.add_missing_columns("profile_state")
    lakehouse.overwrite("profile_state", state.cast(lakehouse.table("profile_state").schema().as_arrow()),
                        {LANDING_GENERATION: generation, BUILD_INPUTS: inputs()})


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



def _compute_scores(engine: BuildEngine, spec: ContextSpec, as_of: datetime,
                    previous: _Models | None = None, rescore: bool = False) -> dict[str, Any]:
    """The engine's table of scores; returns the parameters used (refitted, or reused from ``previous``),
    or why scores were skipped.

    Parameters younger than ``refit_every`` are reused. A fit the data does not allow (an optimiser
    that does not converge, spend with no spread …) keeps the last good parameters when there are any,
    else leaves that model's scores empty; the reason is in the returned dict (the build report) either
    way, and a score a model cannot evaluate for a customer is null, never NaN or infinite.
    """
    import numpy as np
    import pyarrow as pa

    previous = previous or _Models()
    if not spec.scores.enabled:
        engine.store_scores(None)
        return {"skipped": "scores.enabled is false"}
    purchases = engine.purchase_summary(spec, as_of)
    summary, left_out = purchases.columns, purchases.left_out
    if left_out:
        logger.warning("customers left out of the score fits: a purchase with an untrusted time, or a revenue "
                       "that is not a positive number in the base currency", extra=left_out)
    n = len(summary["profile_id"])
    repeaters = int((summary["frequency"] > 0).sum()) if n else 0
    if not rescore and (n < spec.scores.min_customers or repeaters < 2):
        engine.store_scores(None)
        return {"buyers": n, "repeat_buyers": repeaters,
                "skipped": f"{n} buyers, {repeaters} repeat buyers: fewer than scores.min_customers "
                           f"({spec.scores.min_customers}) or no repeat buyers", **({"left_out": left_out}
                                                                                      if left_out else {})}
    from customer_context.assemble import scores as models

    freq = summary["frequency"].astype(float)
    rec, age, money = (summary["recency"].astype(float), summary["T"].astype(float),
                       summary["monetary"].astype(float))
    horizon_days = (duration_seconds(spec.scores.horizon) or 365 * 86400) / 86400
    reuse = previous.fresh and previous.latest is not None and "bgnbd" in previous.latest
    if rescore and not reuse:
        raise _Fallback("the score parameters are not fresh (a full build refits them)")
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
        engine.store_scores(None)
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
    engine.store_scores(pa.table({k: pa.array(v, from_pandas=True) for k, v in columns.items()}))
    return result


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
    engine_type: Callable[[str | None], BuildEngine] = DuckDBEngine,
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
        full: Recompute from scratch: a full build whatever the plan says, score parameters refitted whatever
            their age, and everything landed again (``reland``).
        pii_key: The PII hash key (suppressed identifiers are stored as keyed hashes).
        engine_type: Makes the engine the build computes with, given ``memory_limit``
            (:class:`~customer_context.assemble.engine.BuildEngine`; default: an in-memory DuckDB).

    Returns:
        The report.
    """
    from customer_context.errors import DeletionRaced
    from customer_context.govern.fence import LandingGuard

    fallback: str | None = None
    attempt = 0
    while True:
        guard = LandingGuard(store, pii_key, on_wait=lambda: progress and progress("waiting for a deletion job"))
        try:
            return _build_once(lakehouse, store, spec, guard, as_of=as_of, progress=progress,
                               memory_limit=memory_limit, commit=commit, reland=reland, full=full,
                               engine_type=engine_type, fallback=fallback)
        except _Fallback as exc:
            fallback = str(exc)
            logger.info("the incremental build cannot be one: building in full", extra={"reason": fallback})
            if progress:
                progress(f"building in full: {fallback}")
        except DeletionRaced:
            attempt += 1
            if attempt == BUILD_ATTEMPTS:
                raise
            logger.info("a deletion job finished while the build read the lakehouse: building again")
            if progress:
                progress("a deletion job finished meanwhile: building again")


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
    engine_type: Callable[[str | None], BuildEngine] = DuckDBEngine,
    fallback: str | None = None,
) -> BuildReport:
    """One attempt of :func:`build_context` (raises ``DeletionRaced`` when it must start again, ``_Fallback`` when
    an incremental build finds it cannot be one: ``fallback`` then says why): the stages in order, each timed
    and reported."""
    built_at = datetime.now(UTC)
    report = BuildReport(built_at=built_at.isoformat(), dry_run=not commit)
    engine = engine_type(memory_limit)  # made (its libraries imported) before the stages' clock starts
    stages = _Stages(report, progress)
    kept: _KeptRows | None = None
    try:
        plan = _plan(engine, lakehouse, store, spec, built_at, as_of, full=full, reland=reland, commit=commit,
                     suppressions=suppressions_hash(guard.deleted), fallback=fallback)
        report.plan = plan.to_dict()
        logger.info(plan.line(), extra={"plan": report.plan})
        if plan.mode == "nothing_new":
            assert plan.previous is not None
            previous = plan.previous
            report.data_as_of, report.as_of = previous.get("data_as_of"), previous.get("clock")
            report.events, report.profiles, report.identifiers = (
                int(previous.get(k) or 0) for k in ("events", "profiles", "identifiers"))
            stages.done("plan", plan.line())
            return report
        stages.done("plan", plan.line())
        incremental = plan.mode == "incremental"
        read = _read(engine, lakehouse, spec, built_at, as_of, plan)
        data_as_of = read.events.data_as_of
        report.events = read.events.events
        report.conflicting_message_ids = read.events.conflicting_message_ids
        report.flagged_times = read.events.flagged_times
        report.data_as_of = data_as_of.isoformat() if data_as_of else None
        report.as_of = read.clock.isoformat()
        stages.done("read", f"{report.events:,} events")

        # an incremental build attributes the new events and the kept rows of the profiles they touch
        kept = _KeptRows(lakehouse) if commit else None
        identity = _identity(engine, lakehouse, spec, guard,
                             plan.tables["events"].added_rows if incremental else report.events, built_at, incremental,
                             kept.keep if kept is not None else None)
        if incremental:
            report.plan["touched_profiles"] = identity.touched
        report.suppressed_identifiers = identity.suppressed_identifiers
        report.identifiers = identity.identifiers
        report.profiles = identity.profiles
        report.rejected_edges = identity.rejected_edges
        report.merged_profiles = identity.merged_profiles
        stages.done("identity", f"{report.profiles:,} profiles, {report.identifiers:,} identifiers, "
                                f"{report.rejected_edges:,} edges refused"
                    + (f"; {identity.touched:,} profiles touched by new events" if incremental else ""))

        counts = _traits(engine, spec, read.clock)
        report.invalid_values, report.unconverted_values = counts.invalid, counts.unconverted
        stages.done("traits", f"{len(spec.traits)} traits")
        report.scores = _scores(engine, lakehouse, spec, read.clock, built_at, full,
                                plan.previous if incremental else None, identity.touched)
        stages.done("scores", "skipped: " + report.scores["skipped"] if "skipped" in report.scores else
                    f"fitted on {report.scores['buyers']:,} buyers")

        lander = Lander(store, built_at.isoformat(), report.data_as_of, spec.snapshot.max_bytes)
        report.relanded = _relanded(engine, lakehouse, lander, full=full, reland=reland, commit=commit)
        if report.relanded and incremental:
            raise _Fallback(report.relanded)
        if report.relanded:
            logger.warning("landing every snapshot and alias again", extra={"reason": report.relanded})
        everything = bool(report.relanded)
        if commit:
            guard.enter()  # from here to the commit, no deletion job runs (and none finished since the start)
        history = _History(lakehouse, built_at, data_as_of) if commit else None
        rendered = _snapshots(engine, lander, history, spec, identity.slices, built_at, data_as_of, everything)
        report.changed_profiles = rendered.changed_profiles
        report.items_written += rendered.items_written
        report.truncated_profiles = rendered.truncated_profiles
        stages.record("snapshots", rendered.seconds, rendered.cpu_seconds, f"{report.profiles:,} documents rendered"
                      + (f" in {identity.slices} slices" if identity.slices > 1 else ""))

        landed = _landing(engine, lander, everything, commit)
        report.items_written += landed.aliases
        report.items_deleted += landed.deleted
        report.quarantined = lander.quarantined()
        refused = len(report.quarantined)
        stages.done("landing", f"{report.changed_profiles:,} changed snapshots, {landed.aliases:,} aliases written, "
                               f"{landed.deleted:,} items deleted"
                    + (f", {refused:,} quarantined" if refused else "")
                    + (f"; everything landed again: {report.relanded}" if report.relanded else ""))
        if not commit:
            stages.done("commit", "skipped: dry run")
            return report

        assert history is not None
        assert kept is not None
        _commit(engine, lakehouse, history, kept, identity, report.scores, built_at, landed.generation,
                lambda: _inputs(plan, lakehouse, report, read.clock, guard.generation), incremental)
        stages.done("commit", "identity_graph, profile_state, context_snapshots")
        return report
    finally:
        guard.exit()
        engine.close()
        if kept is not None and not kept.committed:
            kept.abandon()
