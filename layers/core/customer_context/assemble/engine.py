"""The build's engine boundary: what the stages of :func:`customer_context.assemble.build.build_context` ask of
the engine that holds a build's working data and computes over it.

The stages (read → identity → traits → scores → snapshots → landing → commit) decide *what* is computed, in
which order, and what is reported; identity resolution and the score models run in Python on what the engine
hands over (Arrow tables, NumPy arrays). The engine owns *where* the data is and *how* it is computed: its
connection, its working tables and its SQL dialect. :class:`customer_context.assemble.duckdb_engine.DuckDBEngine`
(an in-memory DuckDB, its SQL from :mod:`customer_context.assemble.compiler`) is the one engine today; another
engine (a distributed one) implements :class:`BuildEngine` and is given to the build instead; incremental builds are
the same engine computing fewer profiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from customer_context.spec import ContextSpec
    from customer_context.stores.iceberg import Lakehouse


class Suppressions(Protocol):
    """What deletions suppressed (:class:`customer_context.govern.fence.LandingGuard`)."""

    deleted: set[str]

    def suppressed(self, identifiers: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``identifiers`` (type, value) a deletion suppressed."""
        ...


@dataclass(frozen=True)
class EventsToRead:
    """Which events a build reads: those of the events table's ``snapshot`` (``None``: the table has none), or
    only those in data files appended since snapshot ``since``."""

    snapshot: int | None
    since: int | None = None


@dataclass(frozen=True)
class KnownCopies:
    """New events whose messageId a kept row (``build_rows``) holds: dropped (the kept copy stays), of which with
    a different content, and those received before the kept copy (a full build must decide)."""

    dropped: int
    conflicting: int
    earlier: int


@dataclass(frozen=True)
class EventsRead:
    """The read stage's events: how many (deduplicated), what was noticed, and the data's clock."""

    events: int
    conflicting_message_ids: int  # messageIds sent with different contents (the first received copy is kept)
    flagged_times: dict[str, int]  # events whose time is not trusted, by reason
    data_as_of: datetime | None  # the newest received_at (None: no events)


@dataclass(frozen=True)
class IdentityInputs:
    """Identifiers (nodes) and deduplicated star and alias edges, as Arrow, for identity resolution."""

    nodes: pa.Table
    edges: pa.Table
    suppressed: int  # suppressed identifiers left out


@dataclass(frozen=True)
class TraitCounts:
    """Per trait, the values it met and could not read: failing the numeric rule, or in a currency its unit
    cannot be converted from."""

    invalid: dict[str, int] = field(default_factory=dict)
    unconverted: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PurchaseSummary:
    """Per buyer the score models can be fitted on (a fixed order: the fit sums in it): ``profile_id``,
    ``frequency``, ``recency``, ``T`` and ``monetary`` arrays; and the buyers left out, by reason."""

    columns: dict[str, Any]
    left_out: dict[str, int]


@dataclass(frozen=True)
class LandedSample:
    """A random sample of what the last build landed: snapshots (profile → content hash) and aliases."""

    snapshots: dict[str, str]
    aliases: list[tuple[str, str, str]]


class BuildEngine(Protocol):
    """The engine a build computes with (see the module docstring). Tables named in the docstrings are the
    engine's working data; they live as long as the engine (:meth:`close`)."""

    def load_events(self, lakehouse: Lakehouse, spec: ContextSpec, events: EventsToRead) -> EventsRead:
        """Read the events (the columns the spec needs), deduplicated by ``message_id`` (the first received
        copy wins), times the spec does not trust replaced by their received time."""
        ...

    def load_kept_rows(self, lakehouse: Lakehouse, spec: ContextSpec) -> KnownCopies:
        """Incremental builds: read ``build_rows`` (the events earlier builds attributed, with their identifiers)
        and drop the new events' copies of the messageIds it holds."""
        ...

    def narrow_to_affected(self) -> int:
        """Incremental builds, after :meth:`assign_profiles`: keep only the profiles new events touch, adding the
        kept rows that may be theirs to the events. Returns how many profiles."""
        ...


    def load_records(self, lakehouse: Lakehouse, spec: ContextSpec) -> None:
        """Read the spec's record tables."""
        ...

    def identity_inputs(self, spec: ContextSpec, suppressions: Suppressions | None) -> IdentityInputs:
        """Every event's and record row's identifiers and the edges between them (less what ``suppressions``
        says a deletion suppressed)."""
        ...

    def assign_profiles(self, graph: pa.Table, slices: int) -> int:
        """Take the resolved identity graph (identifier → profile); split the profiles into ``slices``
        slices (rendered and landed one at a time). Returns the number of profiles."""
        ...

    def attribute_rows(self, spec: ContextSpec, slices: int,
                       keep: Callable[[pa.RecordBatchReader], None] | None = None) -> None:
        """Give every event and record row the profile of its most important identifier (and each profile
        its latest consent). First, ``keep`` is given the events read from ``events`` (not the kept ones) with
        their identifiers (``build_rows``' columns)."""
        ...

    def compute_traits(self, spec: ContextSpec, as_of: datetime) -> TraitCounts:
        """Every trait of every profile, windows relative to ``as_of``."""
        ...

    def purchase_summary(self, spec: ContextSpec, as_of: datetime) -> PurchaseSummary:
        """What the score models are fitted on and evaluated for."""
        ...

    def store_scores(self, scores: pa.Table | None) -> None:
        """Every profile's scores: ``scores`` (profile_id, churn_risk, p_alive, expected_orders, ltv,
        repeat_purchases; profiles not in it get nulls), or none at all."""
        ...

    def load_previous(self, lakehouse: Lakehouse) -> int:
        """Read what the last build landed (its profile state and identity graph); returns how many profiles."""
        ...

    def landed_sample(self, size: int) -> LandedSample:
        """A random sample of what the last build landed."""
        ...

    def previous_sample(self, lakehouse: Lakehouse, size: int) -> LandedSample:
        """A random sample of what the last build landed, read from the lakehouse alone (before
        :meth:`load_previous`, which it leaves to be called and may spare a second read)."""
        ...

    def render_slice(self, spec: ContextSpec, index: int, slices: int, built_at: datetime) -> None:
        """Render slice ``index`` of ``slices``: each profile's content, its hash, its version, whether it changed
        since the last build and when each field last changed."""
        ...

    def slice_documents(self, max_bytes: int, built_at: datetime, data_as_of: datetime | None,
                        everything: bool) -> Iterator[pa.RecordBatch]:
        """The rendered slice's documents to land (the changed ones, or ``everything``): batches of
        ``profile_id, version, content_hash, doc, over`` (longer than ``max_bytes``), ``changed, changed_at``."""
        ...

    def drop_slice(self) -> None:
        """Forget the rendered slice (what is kept for the commit stays)."""
        ...

    def changed_profiles(self) -> int:
        """Profiles whose content changed, over every slice rendered."""
        ...

    def moved_aliases(self, everything: bool) -> Iterator[tuple[str, str, str]]:
        """(type, value, profile) of every identifier that is new or moved to another profile (or every one)."""
        ...

    def orphan_aliases(self) -> Iterator[tuple[str, str]]:
        """(type, value) of the identifiers the last build landed that no profile has now."""
        ...

    def merged_profiles(self) -> Iterator[str]:
        """The profiles the last build landed that are gone (merged into others)."""
        ...

    def profile_state(self, built_at: datetime) -> pa.Table:
        """The new ``profile_state`` rows: every profile's version, hash, build time and field hashes."""
        ...

    def close(self) -> None:
        """Let go of the working data."""
        ...
