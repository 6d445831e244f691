"""Suppression: what collect (and ingest) do with an event that names a suppressed identifier.

Identifiers are suppressed by their **keyed hash** (HMAC-SHA256 with the PII key over the type and the
lookup form of the value, :func:`suppression_hash`): the table does not keep a forgotten customer in the
clear, and without the key nobody can test a guess against it. Items written before the keyed hash (an
unkeyed SHA-256) are still honoured on read (:func:`legacy_suppression_hash`); new ones are only keyed.

An event is checked on every path the spec reads identifiers from (``userId``, ``anonymousId``,
``traits.<key>`` and its ``context.traits.<key>`` copy, ``context.externalIds`` entries) and on
``previousId`` (as a user id and as a device id: the build reads it as either). Then, as the build
attributes rows:

* an event whose most important identifier (priority, type, value) is suppressed is the suppressed
  customer's: it is acknowledged like the others (so SDKs do not retry) and dropped;
* an ``alias`` naming a suppressed id as ``previousId`` or ``userId`` is dropped (it would join them);
* any other event keeps its place, without the suppressed values (another person's identify carrying
  her email keeps his data and loses her email).

collect checks accepted and rejected events alike (an invalid event of hers never reaches
``rejected_events``). Events collect queued before it knew of a suppression are checked again by
ingest (:meth:`Suppressions.queued_before`): those received before the latest suppression (plus
``QUEUE_MARGIN_SECONDS``), one GetItem per ingest invocation otherwise. Identifiers are read as the
build reads them (:func:`customer_context.assemble.attribution.event_identifiers`).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from customer_context.assemble.attribution import event_identifiers
from customer_context.errors import ConfigError
from customer_context.identifiers import normalize_identifier
from customer_context.ports import JsonValue
from customer_context.spec import ContextSpec

if TYPE_CHECKING:
    from customer_context.ports import EventVerdicts, SuppressionStore

# collect stamps receivedAt when a request arrives and checks suppressions a little later; clocks of two
# containers differ by less than this
QUEUE_MARGIN_SECONDS = 300


def suppression_hash(key: str, id_type: str, value: str) -> str:
    """The keyed hash suppression items are stored by (hex HMAC-SHA256 of type and lookup value).

    Raises:
        ConfigError: no key (an unkeyed hash of an email can be guessed).
    """
    if not key:
        raise ConfigError("CUSTOMER_CONTEXT_PII_HASH_KEY is not set: suppressions are kept as keyed hashes, "
                          "and without a key a forgotten customer's identifiers could be guessed back")
    text = f"{id_type}\x00{value}".encode("utf-8", "surrogatepass")
    return hmac.new(key.encode(), text, hashlib.sha256).hexdigest()


def legacy_suppression_hash(id_type: str, value: str) -> str:
    """The unkeyed SHA-256 suppression items were stored by before the keyed hash (read only)."""
    return hashlib.sha256(f"{id_type}\x00{value}".encode("utf-8", "surrogatepass")).hexdigest()


class Suppressions:
    """Checks events against the suppressed identifiers (one BatchGetItem per request).

    Args:
        store: The context store (suppression items).
        spec: Which event fields hold which identifier types.
        key: The PII hash key (``CUSTOMER_CONTEXT_PII_HASH_KEY``); without one only legacy items are read.
    """

    def __init__(self, store: SuppressionStore, spec: ContextSpec, key: str) -> None:
        self.store = store
        self.spec = spec
        self._key = key

    def _lookup(self, id_type: str, raw: Any) -> str | None:
        """The value as the build reads it: normalised (collect applied the PII policy already, so a
        value at a hashed path is its token)."""
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            return None
        return normalize_identifier(self.spec, id_type, str(raw))

    def _previous(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        raw = event.get("previousId")
        return [(t, v) for t in ("user_id", "anonymous_id") if (v := self._lookup(t, raw))]

    def _blocked(self, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the identifiers are suppressed (keyed and legacy items)."""
        if not wanted:
            return set()
        keyed = {suppression_hash(self._key, t, v): (t, v) for t, v in wanted} if self._key else {}
        legacy = {legacy_suppression_hash(t, v): (t, v) for t, v in wanted}
        hits = self.store.suppressed(set(keyed), set(legacy))
        return {keyed.get(h) or legacy[h] for h in hits}

    def queued_before(self) -> EventVerdicts:
        """For ingest: a function giving, for a message's events, whether each is kept — the verdict of
        :meth:`apply` for events received before the latest suppression (plus the margin), which collect
        may have queued before it knew; ``True`` for the others. Reads the latest suppression once."""
        latest = self.store.last_suppression()
        cutoff = (datetime.fromisoformat(latest) + timedelta(seconds=QUEUE_MARGIN_SECONDS)) if latest else None

        def keep(events: list[Any]) -> list[bool]:
            if cutoff is None:
                return [True] * len(events)
            older = [n for n, e in enumerate(events) if (when := _received(e)) is None or when <= cutoff]
            verdict = [True] * len(events)
            for n, kept in zip(older, self.apply([events[n] for n in older]), strict=True):
                verdict[n] = kept
            return verdict

        return keep

    def apply(self, events: list[JsonValue]) -> list[bool]:
        """For each event: whether it is kept (``False``: the suppressed customer's, drop it). Kept events
        lose the suppressed values they carry (in place)."""
        found = [event_identifiers(self.spec, e) for e in events]
        previous = [self._previous(e) if isinstance(e, dict) else [] for e in events]
        wanted = {(f.id_type, f.value) for fs in found for f in fs} | {p for ps in previous for p in ps}
        blocked = self._blocked(wanted)
        if not blocked:
            return [True] * len(events)
        keep = []
        for event, fs, ps in zip(events, found, previous, strict=True):
            hit = [f for f in fs if (f.id_type, f.value) in blocked]
            alias = isinstance(event, dict) and event.get("type") == "alias"
            if (fs and (fs[0].id_type, fs[0].value) in blocked) or (alias and (hit or set(ps) & blocked)):
                keep.append(False)
                continue
            for f in hit:
                _remove(event, f.path)
            if set(ps) & blocked:
                event.pop("previousId", None)
            keep.append(True)
        return keep


def _received(event: Any) -> datetime | None:
    value = event.get("receivedAt") if isinstance(event, dict) else None
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)


def _remove(event: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove the value at ``path`` (an externalIds entry by its index)."""
    node: Any = event
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    last = path[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = None
