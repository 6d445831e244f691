"""Regulations, shaped like RudderStack's data regulation requests: ``suppress`` a customer (collect
silently drops their future events) or ``suppress_with_delete`` (also remove them from every copy).

Identifiers given are expanded to the whole stitched profile (every identifier its snapshot lists),
so a request naming an email also covers the customer's devices and user id.

The deletion job (:mod:`customer_context.govern.deletion`) removes the customer's rows — those the
build attributes to her — from every table, scrubs her values out of other customers' rows, purges the
history and the manifests that still hold them, cleans the spool and the record drops in S3, and deletes
her DynamoDB snapshot, alias and live-tail items (scrubbing other customers' served snapshots that name
her). It holds the landing fence while it works (:mod:`customer_context.govern.fence`). Status moves
pending → running → done | failed with counts per table.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from customer_context.errors import InvalidRequest, NotFound
from customer_context.govern.suppression import suppression_hash
from customer_context.observability import logger
from customer_context.ports import JsonObject, JsonValue
from customer_context.spec import ContextSpec

if TYPE_CHECKING:
    from customer_context.pii import PiiPolicy
    from customer_context.ports import BlobStore, ContextStore, IdentifierLookup, RegulationStore, ServingStore
    from customer_context.stores.iceberg import Lakehouse as IcebergLakehouse  # commits through its retry loop

# RudderStack's `users` keys → our identifier types (other keys are taken as type names)
USER_KEYS = {"userId": "user_id", "anonymousId": "anonymous_id", "email": "email", "phone": "phone"}
REGULATION_TYPES = ("suppress", "suppress_with_delete")


def parse_request(body: JsonValue, spec: ContextSpec) -> tuple[str, list[tuple[str, str]]]:
    """``{"regulationType": …, "users": [{"userId": …, "email": …}, …]}`` (or ``identifiers``:
    ``[{"type", "value"}]``) → the type and the identifiers.

    Raises:
        InvalidRequest: naming the field and the reason.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object")
    kind = body.get("regulationType")
    if kind not in REGULATION_TYPES:
        raise InvalidRequest(f"regulationType: expected one of {', '.join(REGULATION_TYPES)}, got {kind!r}")
    identifiers: list[tuple[str, str]] = []
    users = body.get("users", [])
    if not isinstance(users, list):
        raise InvalidRequest("users: expected an array of objects")
    for n, user in enumerate(users):
        if not isinstance(user, dict) or not user:
            raise InvalidRequest(f"users[{n}]: expected an object of identifiers")
        for key, value in user.items():
            id_type = USER_KEYS.get(key, key)
            if id_type not in spec.identifiers.types or not isinstance(value, str) or not value.strip():
                raise InvalidRequest(f"users[{n}].{key}: expected a non-empty string of a known identifier type "
                                     f"({', '.join(USER_KEYS)} or {', '.join(spec.identifiers.types)})")
            identifiers.append((id_type, value))
    for n, item in enumerate(body.get("identifiers") or []):
        known = (*spec.identifiers.types, "profile_id")
        if not isinstance(item, dict) or item.get("type") not in known or not isinstance(item.get("value"), str):
            raise InvalidRequest(f"identifiers[{n}]: expected {{type, value}} with a known type")
        identifiers.append((item["type"], item["value"]))
    if not identifiers:
        raise InvalidRequest("users: at least one identifier is required")
    if len(identifiers) > 1000:
        raise InvalidRequest("users: at most 1000 identifiers per regulation")
    return kind, identifiers


def expand(store: ServingStore, service: IdentifierLookup, identifiers: Iterable[tuple[str, str]]
           ) -> tuple[set[str], set[tuple[str, str]]]:
    """The profiles of the identifiers and every identifier of those profiles (lookup-normalised)."""
    profiles: set[str] = set()
    found: set[tuple[str, str]] = set()
    for id_type, value in identifiers:
        identifier = service.identifier(id_type, value)  # normalised, PII-hashed like lookups
        if identifier[0] != "profile_id":
            found.add(identifier)
        pid = identifier[1] if identifier[0] == "profile_id" else store.resolve(*identifier)
        if pid:
            profiles.add(str(pid))
    for pid in profiles:
        item = store.get_snapshot(pid)
        if item:
            for id_type, values in (json.loads(item["doc"]).get("profile", {}).get("identifiers") or {}).items():
                found.update((id_type, v) for v in (values if isinstance(values, list) else [values]))
    return profiles, found


def new_regulation(store: RegulationStore, kind: str, identifiers: list[tuple[str, str]], consumer: str
                   ) -> JsonObject:
    """Record a regulation (status ``pending``) and return it."""
    regulation = {"id": "reg_" + uuid.uuid4().hex[:20], "regulationType": kind, "status": "pending",
                  "requested_by": consumer, "created_at": datetime.now(UTC).isoformat(),
                  "identifiers": [{"type": t, "value": v} for t, v in identifiers], "counts": {}}
    store.put_regulation(regulation)
    return regulation


def suppress(store: ContextStore, service: IdentifierLookup, regulation: JsonObject, key: str) -> JsonObject:
    """Suppress every identifier of the regulation's profiles (keyed hashes, :func:`suppression_hash`);
    returns the regulation updated.

    A ``suppress`` regulation is done at once and its record keeps counts, not identifiers; a
    ``suppress_with_delete`` one keeps them until its deletion job is done.

    Raises:
        ConfigError: no PII hash key (suppressions would be guessable).
    """
    profiles, identifiers = expand(store, service, [(i["type"], i["value"]) for i in regulation["identifiers"]])
    delete = regulation["regulationType"] == "suppress_with_delete"
    store.put_suppressions(sorted({suppression_hash(key, t, v) for t, v in identifiers}), regulation["id"], delete)
    # events collect queued before it knew are checked again by ingest (those received before this time)
    suppressed_at = datetime.now(UTC).isoformat()
    store.note_suppression(suppressed_at)
    regulation.update(profiles=sorted(profiles), suppressed=[{"type": t, "value": v} for t, v in sorted(identifiers)],
                      suppressed_at=suppressed_at)
    if not delete:
        regulation.update(status="done", **_counted(regulation))
    store.put_regulation(regulation)
    return regulation


def _counted(regulation: dict[str, Any]) -> dict[str, int]:
    """What the record keeps of a finished regulation's identifiers and profiles: how many."""
    counts = {}
    for name in ("identifiers", "suppressed", "profiles"):
        value = regulation.get(name)
        counts[name] = value if isinstance(value, int) else len(value or [])
    return counts


def _scrub_spool(blobs: BlobStore, prefix: str, cleaner: Any, target: Any) -> tuple[int, int]:
    """Spooled events (claim checks in S3): hers are emptied out of their object (a message still queued
    for it then lands nothing), others' are scrubbed of her values. Returns (events removed, objects
    rewritten)."""
    import pyarrow as pa

    from customer_context import envelope
    from customer_context.collect.ingest import event_to_row, rejection_row

    removed = rewritten = 0
    for key in blobs.keys(prefix):
        body = blobs.get(key)
        try:
            env = envelope.loads(body)
        except Exception:  # noqa: BLE001 - not an envelope: scrubbed as text
            env = None
        if env is None:
            text = body.decode("utf-8", "replace")
            if target.cut(text) != text:
                blobs.put(key, target.cut(text).encode())
                rewritten += 1
            continue
        events: list[str] = []  # serialized items, as envelope.body_of takes them
        rejected: list[str] = []
        changed = False
        for kind, items, to_row in (("events", env.events, event_to_row), ("rejected_events", env.rejected,
                                                                             rejection_row)):
            for item in items:
                mentioned = target.scrub(item)
                try:
                    row = to_row(item)
                except Exception:  # noqa: BLE001 - cannot be a row: nobody's, scrubbed
                    row = None
                hers = False
                if row is not None:
                    schema = cleaner.lakehouse.arrow_schema(kind)
                    decided = cleaner.decide(cleaner.rules[kind], pa.Table.from_pylist([row], schema=schema), True)
                    hers = bool(decided and decided[0][1])
                if hers:
                    removed += 1
                    changed = True
                    continue
                changed |= mentioned != item
                (events if kind == "events" else rejected).append(envelope.dumps(mentioned))
        if changed:
            blobs.put(key, envelope.body_of(events, rejected).encode())
            rewritten += 1
    return removed, rewritten


def _drop_imports(blobs: BlobStore, prefix: str, target: Any) -> int:
    """Record drop files that mention her are deleted: their rows are in the record tables already, where
    the job removed or scrubbed them. Returns how many."""
    import gzip
    import io

    removed = 0
    for key in blobs.keys(prefix):
        data = blobs.get(key)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if data[:4] == b"PAR1":
            import pyarrow.parquet as pq

            text = json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str, ensure_ascii=False)
        else:
            text = data.decode("utf-8", "replace")
        if target.cut(text) != text:
            blobs.delete(key)
            removed += 1
    return removed


def _scrub_served(store: ContextStore, target: Any, profiles: Iterable[str]) -> int:
    """Other customers' served snapshots and live tails that mention her, scrubbed; returns items rewritten."""
    from customer_context.ports import RecentEvent, SnapshotItem, TailOwner

    written = 0
    for pid in sorted(profiles):
        item = store.get_snapshot(pid)
        if item and (doc := target.scrub_json(item["doc"])) != item["doc"]:
            written += store.put_snapshots([SnapshotItem(pid, doc, str(item.get("content_hash", "")),
                                                         int(item.get("version", 0)), str(item.get("built_at", "")),
                                                         item.get("data_as_of"), item.get("changed_at"))])
        # their live tail: under the profile, and under each identifier (events from before it had a profile)
        listed = (json.loads(item["doc"]).get("profile") or {}).get("identifiers") or {} if item else {}
        owners: list[TailOwner] = [pid] + [(t, v) for t, values in listed.items()
                                           for v in (values if isinstance(values, list) else [values])]
        tail = []
        for owner in owners:
            for event in store.recent(owner, None, 10_000):
                text = target.scrub_json(event["event"])
                if text != event["event"]:
                    received_at, _, message_id = str(event["sk"]).partition("#")
                    tail.append(RecentEvent(owner, received_at, message_id, text, int(event["expires_at"])))
        written += store.put_recent(tail) if tail else 0
    return written


def delete_everywhere(lakehouse: IcebergLakehouse, store: ContextStore, spec: ContextSpec, regulation: JsonObject,
                      progress: Callable[[str], None] | None = None, *, pii: PiiPolicy | None = None,
                      blobs: BlobStore | None = None, spool_prefix: str = "spool/",
                      imports_prefix: str = "imports/") -> dict[str, int]:
    """The deletion job's work (:mod:`customer_context.govern.deletion`); returns rows or items per place."""
    from customer_context.govern.deletion import Cleaner, Target

    profiles = set(regulation.get("profiles") or [])
    identifiers = {(i["type"], i["value"]) for i in regulation.get("suppressed") or regulation["identifiers"]}
    raw = {str(i["value"]) for i in regulation.get("identifiers") or [] if isinstance(i, dict)}
    target = Target(spec, profiles, {(t, v) for t, v in identifiers if t != "profile_id"}, raw, pii)
    counts: dict[str, int] = {}

    def step(name: str, n: int) -> None:
        counts[name] = n
        if progress:
            progress(f"{name}: {n}")

    cleaner = Cleaner(lakehouse, spec, target)
    try:
        others = cleaner.clean_lakehouse(step)
        if blobs is not None:
            removed, rewritten = _scrub_spool(blobs, spool_prefix, cleaner, target)
            step("spool_events", removed)
            step("spool_objects_rewritten", rewritten)
            step("imports_deleted", _drop_imports(blobs, imports_prefix, target))
    finally:
        cleaner.close()
    step("dynamodb", store.delete_customer(profiles, identifiers))
    step("dynamodb_scrubbed", _scrub_served(store, target, others))
    return counts


def run_job(lakehouse: IcebergLakehouse, store: ContextStore, spec: ContextSpec, regulation_id: str, *,
            pii: PiiPolicy | None = None, blobs: BlobStore | None = None, spool_prefix: str = "spool/"
            ) -> JsonObject:
    """Run a ``suppress_with_delete`` regulation: running → done (or failed, with the reason).

    The job holds the landing fence while it works and counts itself in the deletion generation before
    giving it back (:mod:`customer_context.govern.fence`): no build lands meanwhile, and a build that
    read the lakehouse before it finished starts again.
    """
    from customer_context.govern.fence import Fence

    regulation = store.get_regulation(regulation_id)
    if regulation is None:
        raise NotFound(f"no regulation {regulation_id!r}")
    regulation.update(status="running", started_at=datetime.now(UTC).isoformat())
    store.put_regulation(regulation)
    started = time.monotonic()

    def waiting() -> None:
        regulation["step"] = "waiting for a build to finish landing"
        store.put_regulation(regulation)

    fence = Fence(store, f"regulation:{regulation_id}", on_wait=waiting)
    try:
        fence.acquire()
        regulation.pop("step", None)

        def progress(line: str) -> None:
            fence.renew()
            logger.info("regulation", extra={"regulation_id": regulation_id, "step": line})

        regulation["counts"] = delete_everywhere(lakehouse, store, spec, regulation, progress, pii=pii, blobs=blobs,
                                                 spool_prefix=spool_prefix)
        # the record of the request must not keep what it deleted: identifiers become a count, before the job
        # counts itself done (builds that read meanwhile start again)
        regulation.update(status="done", **_counted(regulation))
        store.put_regulation(regulation)
        store.bump_deletion_generation()
    except Exception as exc:  # noqa: BLE001 - recorded on the regulation; a retry runs the job again
        logger.exception("regulation failed", extra={"regulation_id": regulation_id})
        regulation.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        fence.release()
    regulation.update(finished_at=datetime.now(UTC).isoformat(), seconds=round(time.monotonic() - started, 2))
    store.put_regulation(regulation)
    return regulation
