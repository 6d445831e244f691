"""Lander: what a build writes to the serving store, and what the store refused.

The build's snapshot and landing stages (:mod:`customer_context.assemble.build`) hand it the documents, the
moved and orphan aliases and the merged-away profiles the engine found; it cuts documents to the size budget
(:func:`fit_to_budget`), writes them through the store it is given (never constructed here), and keeps what
the store could not hold (an identifier over DynamoDB's key size …) as quarantined, so the rest lands. It
also reads and writes the landing marker the next build checks the store against.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from customer_context.ports import JsonObject
from customer_context.stores.context_store import ContextStore, Refused, SnapshotItem

if TYPE_CHECKING:
    import pyarrow as pa

SECTION_DROP_ORDER = ("recent_events", "interactions", "records", "traits", "scores")


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


@dataclass(frozen=True)
class LandedBatch:
    """One batch of documents landed."""

    written: int  # items the store wrote
    truncated: int  # documents cut to the budget
    docs: list[str] | None  # the documents as landed, when some were cut (else the batch's own)


class Lander:
    """Writes one build's snapshots and aliases into ``store``; ``refused`` collects what it could not hold."""

    def __init__(self, store: ContextStore, built_at: str, data_as_of: str | None, max_bytes: int) -> None:
        self.store = store
        self.built_at, self.data_as_of, self.max_bytes = built_at, data_as_of, max_bytes
        self.refused: list[Refused] = []

    def documents(self, batch: pa.RecordBatch) -> LandedBatch:
        """Land a batch of ``profile_id, version, content_hash, doc, over, changed, changed_at`` (``over``: longer
        than the budget, cut before it lands)."""
        import pyarrow.compute as pc

        pids, versions, hashes, docs = (batch.column(c).to_pylist() for c in range(4))
        times = batch.column(6).to_pylist()
        cut_docs = False
        truncated = 0
        for n in (pc.indices_nonzero(batch.column(4)).to_pylist() if pc.any(batch.column(4)).as_py() else ()):
            docs[n], cut = fit_to_budget(docs[n], self.max_bytes)
            truncated += bool(cut)
            cut_docs = True
        written = self.store.put_snapshots(
            (SnapshotItem(pid, doc, content_hash, version, self.built_at, self.data_as_of, changed_at)
             for pid, version, content_hash, doc, changed_at in zip(pids, versions, hashes, docs, times, strict=True)),
            self.refused)
        return LandedBatch(written, truncated, docs if cut_docs else None)

    def aliases(self, aliases: Iterable[tuple[str, str, str]]) -> int:
        """Land (type, value, profile) aliases; returns the items written."""
        return self.store.put_aliases(aliases, self.refused)

    def delete_aliases(self, identifiers: Iterable[tuple[str, str]]) -> int:
        """Delete the aliases of (type, value) identifiers; returns the items deleted."""
        return self.store.delete_aliases(identifiers)

    def delete_snapshots(self, profile_ids: Iterable[str]) -> int:
        """Delete profiles' snapshots; returns the items deleted."""
        return self.store.delete_snapshots(profile_ids)

    def marker(self) -> str | None:
        """The generation of the last landing the store finished, if it holds one."""
        return self.store.get_landing_marker()

    def mark(self, generation: str) -> None:
        """Record that this landing finished."""
        self.store.put_landing_marker(generation)

    def missing(self, snapshots: dict[str, str], aliases: list[tuple[str, str, str]]) -> str | None:
        """What of a sample of landed snapshots (profile → content hash) and aliases the store lacks, if any."""
        return self.store.missing(snapshots, aliases)

    def quarantined(self) -> list[JsonObject]:
        """What the store refused, JSON-ready."""
        return [r.to_dict() for r in self.refused]
