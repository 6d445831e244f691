"""Regulations, shaped like RudderStack's data regulation requests: ``suppress`` a customer (collect
silently drops their future events) or ``suppress_with_delete`` (also remove them from every copy).

Identifiers given are expanded to the whole stitched profile (every identifier its snapshot lists),
so a request naming an email also covers the customer's devices and user id.

The deletion job removes the customer's rows from ``events``, ``rejected_events`` (by the raw event
text), every record table, ``identity_graph``, ``identity_rejected_edges``, ``context_snapshots``,
``profile_state`` and ``serving_audit`` (pyiceberg row deletes), then expires the snapshots that
still reference the old files and deletes those files, so the data is physically gone; then the
DynamoDB snapshot, alias and live-tail items. Status moves pending → running → done | failed with
counts per table.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from customer_context.errors import InvalidRequest, NotFound
from customer_context.govern.suppression import suppression_hash
from customer_context.observability import logger
from customer_context.spec import ContextSpec

# RudderStack's `users` keys → our identifier types (other keys are taken as type names)
USER_KEYS = {"userId": "user_id", "anonymousId": "anonymous_id", "email": "email", "phone": "phone"}
REGULATION_TYPES = ("suppress", "suppress_with_delete")


def parse_request(body: Any, spec: ContextSpec) -> tuple[str, list[tuple[str, str]]]:
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


def expand(store: Any, service: Any, identifiers: Iterable[tuple[str, str]]) -> tuple[set[str], set[tuple[str, str]]]:
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


def new_regulation(store: Any, kind: str, identifiers: list[tuple[str, str]], consumer: str) -> dict[str, Any]:
    """Record a regulation (status ``pending``) and return it."""
    regulation = {"id": "reg_" + uuid.uuid4().hex[:20], "regulationType": kind, "status": "pending",
                  "requested_by": consumer, "created_at": datetime.now(UTC).isoformat(),
                  "identifiers": [{"type": t, "value": v} for t, v in identifiers], "counts": {}}
    store.put_regulation(regulation)
    return regulation


def suppress(store: Any, service: Any, regulation: dict[str, Any], key: str) -> dict[str, Any]:
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
    regulation.update(profiles=sorted(profiles), suppressed=[{"type": t, "value": v} for t, v in sorted(identifiers)],
                      suppressed_at=datetime.now(UTC).isoformat())
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


def _in(column: str, values: set[str]) -> Any:
    from pyiceberg.expressions import In

    return In(column, values)


def _or(terms: list[Any]) -> Any:
    from pyiceberg.expressions import Or

    expr: Any = terms[0]
    for term in terms[1:]:
        expr = Or(expr, term)
    return expr


def _delete_rows(lakehouse: Any, name: str, expr: Any) -> int:
    """Delete matching rows (one delete per OR-ed term: pyiceberg keeps a row whose filter is NULL, and
    ``a OR b`` is NULL when one side is NULL and the other false … or true, in its evaluation)."""
    from pyiceberg.expressions import Or

    if not lakehouse.exists(name):
        return 0
    terms: list[Any] = []

    def flatten(e: Any) -> None:
        if isinstance(e, Or):
            flatten(e.left)
            flatten(e.right)
        else:
            terms.append(e)

    flatten(expr)
    deleted = 0
    for term in terms:
        table = lakehouse.table(name)
        first = table.schema().fields[0].name
        matching = table.scan(row_filter=term, selected_fields=(first,)).to_arrow().num_rows
        if matching:
            lakehouse._commit(name, lambda t, term=term: t.delete(delete_filter=term))
            deleted += matching
    return deleted


def referenced_files(table: Any, live_only: bool = True) -> set[str]:
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


def purge_history(lakehouse: Any, name: str) -> int:
    """Expire every snapshot but the current one and delete the data files only they referenced.

    Only files known to the table's history are deleted (never files of an in-flight commit).
    """
    table = lakehouse.table(name)
    current = table.current_snapshot()
    if current is None:
        return 0
    before = referenced_files(table, live_only=False)
    old = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != current.snapshot_id]
    if old:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    table = lakehouse.table(name)
    kept = referenced_files(table, live_only=True)
    removed = 0
    for path in sorted(before - kept):
        try:
            table.io.delete(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def delete_everywhere(lakehouse: Any, store: Any, spec: ContextSpec, regulation: dict[str, Any],
                      progress: Any = None) -> dict[str, int]:
    """The deletion job; returns rows or items removed per place."""
    profiles = set(regulation.get("profiles") or [])
    identifiers = {(i["type"], i["value"]) for i in regulation.get("suppressed") or regulation["identifiers"]}
    by_type: dict[str, set[str]] = {}
    for id_type, value in identifiers:
        by_type.setdefault(id_type, set()).add(value)
    values = {v for _, v in identifiers}
    counts: dict[str, int] = {}

    def step(name: str, n: int) -> None:
        counts[name] = n
        if progress:
            progress(f"{name}: {n} removed")

    event_terms = [_in(col, by_type[t]) for t, col in (("user_id", "user_id"), ("anonymous_id", "anonymous_id"))
                   if by_type.get(t)]
    step("events", _delete_rows(lakehouse, "events", _or(event_terms)) if event_terms else 0)
    # rejected events are raw text: find the rows that mention an identifier, delete them by id
    if lakehouse.exists("rejected_events") and values:
        rows = lakehouse.scan("rejected_events", selected_fields=("rejection_id", "raw")).to_pylist()
        needles = [json.dumps(v) for v in values]
        ids = {r["rejection_id"] for r in rows if any(n in (r["raw"] or "") for n in needles)}
        step("rejected_events", _delete_rows(lakehouse, "rejected_events", _in("rejection_id", ids)) if ids else 0)
    if lakehouse.exists("rejected_records") and values:
        needles = [json.dumps(v) for v in values]
        rows = lakehouse.scan("rejected_records", selected_fields=("source_key", "row_number", "raw")).to_pylist()
        doomed = [r for r in rows if any(n in (r["raw"] or "") for n in needles)]
        if doomed:
            from pyiceberg.expressions import And, EqualTo

            expr = _or([And(EqualTo("source_key", r["source_key"]), EqualTo("row_number", r["row_number"]))
                        for r in doomed])
            step("rejected_records", _delete_rows(lakehouse, "rejected_records", expr))
    for name, table in spec.record_tables.items():
        terms = [_in(col, by_type[t]) for t, col in table.identifiers.items() if by_type.get(t)]
        step(name, _delete_rows(lakehouse, name, _or(terms)) if terms else 0)
    if profiles:
        for name in ("identity_graph", "context_snapshots", "profile_state"):
            step(name, _delete_rows(lakehouse, name, _in("profile_id", profiles)))
        step("serving_audit", _delete_rows(lakehouse, "serving_audit",
                                           _or([_in("profile_id", profiles), _in("identifier_value", values)])))
    if values:
        step("identity_rejected_edges", _delete_rows(lakehouse, "identity_rejected_edges",
                                                     _or([_in("a_value", values), _in("b_value", values)])))
    # rows deleted above are gone from the current snapshots; older snapshots of every table (overwritten
    # tables included) may still reference files holding them: expire them and delete those files
    step("files_purged", sum(purge_history(lakehouse, name) for name in lakehouse.table_names()))
    step("dynamodb", store.delete_customer(profiles, identifiers))
    return counts


def run_job(lakehouse: Any, store: Any, spec: ContextSpec, regulation_id: str) -> dict[str, Any]:
    """Run a ``suppress_with_delete`` regulation: running → done (or failed, with the reason)."""
    regulation = store.get_regulation(regulation_id)
    if regulation is None:
        raise NotFound(f"no regulation {regulation_id!r}")
    regulation.update(status="running", started_at=datetime.now(UTC).isoformat())
    store.put_regulation(regulation)
    started = time.monotonic()
    try:
        regulation["counts"] = delete_everywhere(lakehouse, store, spec, regulation,
                                                 progress=lambda line: logger.info("regulation", extra={
                                                     "regulation_id": regulation_id, "step": line}))
        regulation["status"] = "done"
        # the record of the request must not keep what it deleted: identifiers become a count
        regulation.update(_counted(regulation))
    except Exception as exc:  # noqa: BLE001 - recorded on the regulation; a retry runs the job again
        logger.exception("regulation failed", extra={"regulation_id": regulation_id})
        regulation.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    regulation.update(finished_at=datetime.now(UTC).isoformat(), seconds=round(time.monotonic() - started, 2))
    store.put_regulation(regulation)
    return regulation
