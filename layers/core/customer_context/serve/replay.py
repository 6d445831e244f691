"""Replay: what the AI could know about one customer, and when — from the lakehouse, under budgets.

Joins what no single table says: ``context_snapshots`` (every version a build landed), the
``serving_audit`` (who was served which fields, from which version) and the identity graph
(``identity_graph``, ``identity_rejected_edges``). Runs in the analytics function (query_context), never
on the fetch path.

* :func:`history` — the customer's versions (version, built_at, data_as_of) and the fields each one
  changed from the one before (only fields the consumer may read are named);
* :func:`replay` — the snapshot as at a time T (the newest version built at or before T) or by version,
  answered by the fetch code itself (:meth:`ContextService.assemble` and :meth:`ContextService.render`
  with the clock set to T): JSON or prompt text, the consumer's scope applied, as fetch answered then.
  The live tail (events received after that build, kept in the serving store for a day) is not part
  of the lakehouse history: ``recent_events`` holds the snapshot's events only;
* :func:`audit_trail` — every audit record about the customer joined to the version it served (an
  admin key, or one made with ``--audit``);
* :func:`identity` — the identity graph around the customer: identifiers as nodes, edges labelled by
  how they joined (``event:identify``, ``event:alias``, ``record:<table>`` …) and the refused edges
  touching the customer with their reason.

The customer is resolved from any identifier as fetch resolves it (the serving store's aliases).
Every read plans its Iceberg files first and is refused above the named queries' scan budget
(``CUSTOMER_CONTEXT_QUERY_MAX_SCAN_BYTES``); lists are cut at their row budget
(``CUSTOMER_CONTEXT_QUERY_MAX_ROWS``, newest kept) and the whole call is stopped at their time budget.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from customer_context.errors import BudgetExceeded, Forbidden, InvalidRequest, NotFound
from customer_context.ports import BOOKKEEPING_KEYS, FIELD_SECTIONS, JsonObject
from customer_context.serve.consumers import Consumer
from customer_context.serve.fetch import PROFILE_ID, ContextService, FetchResult, _parse_time, select
from customer_context.serve.named_queries import QueryBudget
from customer_context.stores import row_filters

if TYPE_CHECKING:
    from customer_context.ports import Lakehouse

_EDGE = re.compile(r"^edge (?P<source>\S+) with (?P<type>[^:]+):(?P<value>.*?) at (?P<at>\d{4}-\d\d-\d\dT\S+?)"
                   r"(?:, via (?P<via_type>[^:]+):(?P<via_value>.*))?$")


class _Clock:
    """The call's time budget."""

    def __init__(self, budget: QueryBudget) -> None:
        self.budget = budget
        self.deadline = time.monotonic() + budget.max_seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"time budget: reading {what} took longer than {self.budget.max_seconds:g} s "
                                 "(raise CUSTOMER_CONTEXT_QUERY_MAX_SECONDS)")


def _read(lakehouse: Lakehouse, table: str, row_filter: Any, clock: _Clock,
          snapshot_id: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``table`` matching ``row_filter`` (at an earlier snapshot of the table: ``snapshot_id``),
    refused before reading above the scan budget."""
    if not lakehouse.exists(table):
        return []
    scan = lakehouse.table(table).scan(row_filter=row_filter, snapshot_id=snapshot_id)
    planned = sum(task.file.file_size_in_bytes for task in scan.plan_files())
    if planned > clock.budget.max_scan_bytes:
        raise BudgetExceeded(f"scan budget: {table} would read {planned:,} bytes of data files; the limit is "
                             f"{clock.budget.max_scan_bytes:,} (compact it with `customer-context maintain`, or "
                             "raise CUSTOMER_CONTEXT_QUERY_MAX_SCAN_BYTES)")
    rows = scan.to_arrow().to_pylist()
    clock.check(table)
    return rows


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def snapshot_versions(lakehouse: Lakehouse, profile_id: str, budget: QueryBudget | None = None) -> list[JsonObject]:
    """Every version of one profile's snapshot, oldest first, as the serving store held it
    (``profile_id, version, content_hash, built_at, data_as_of, doc``; times as ISO-8601 text)."""

    clock = _Clock(budget or QueryBudget())
    rows = _read(lakehouse, "context_snapshots", row_filters.equal("profile_id", profile_id), clock)
    by_version: dict[int, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["version"], r["built_at"])):
        by_version.setdefault(int(row["version"]), {
            "profile_id": row["profile_id"], "version": int(row["version"]), "content_hash": row["content_hash"],
            "built_at": _iso(row["built_at"]), "data_as_of": _iso(row["data_as_of"]), "doc": row["doc"]})
    return [by_version[v] for v in sorted(by_version)]


def changed_fields(before: JsonObject | None, after: JsonObject) -> list[str]:
    """Dotted paths whose value differs between two snapshot documents: fields of ``profile``, ``traits``,
    ``scores`` and ``records`` one by one, list sections (``interactions``, ``recent_events``) whole;
    build times left out. Everything of ``after`` when there is no ``before``."""
    before = before or {}
    paths: list[str] = []
    for section in dict.fromkeys([*after, *before]):
        if section in BOOKKEEPING_KEYS:
            continue
        old, new = before.get(section), after.get(section)
        if section in FIELD_SECTIONS and isinstance(new, dict | None) and isinstance(old, dict | None):
            old, new = old or {}, new or {}
            paths += [f"{section}.{k}" for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
        elif old != new:
            paths.append(section)
    return paths


def _visible(consumer: Consumer, paths: Sequence[str]) -> list[str]:
    return [p for p in paths if p == "truncated" or consumer.allows(p)]


def _profile(service: ContextService, id_type: str, id_value: str) -> tuple[tuple[str, str], str]:
    identifier = service.identifier(id_type, id_value)
    pid = identifier[1] if identifier[0] == PROFILE_ID else service.store.resolve(*identifier)
    if not pid:
        raise NotFound(f"no customer is known by {id_type} {id_value!r} (as of the last build)")
    return identifier, str(pid)


def _reads(consumer: Consumer) -> None:
    if not consumer.reads_anything:
        raise Forbidden(f"consumer {consumer.name!r} may read no section or field, so no history either")


def history(service: ContextService, lakehouse: Lakehouse, consumer: Consumer, id_type: str, id_value: str,
            budget: QueryBudget | None = None) -> JsonObject:
    """The customer's snapshot versions, newest first, each with the fields it changed and its numeric traits
    and scores (those the consumer may read); per field, the version and time it last changed; the
    descriptions of the fields the consumer may read.

    Raises:
        InvalidRequest, NotFound, Forbidden: as fetch; BudgetExceeded: a budget of the named queries.
    """
    _reads(consumer)
    budget = budget or QueryBudget()
    identifier, pid = _profile(service, id_type, id_value)
    versions = snapshot_versions(lakehouse, pid, budget)
    out, previous, last_changed = [], None, {}
    for row in versions:
        doc = json.loads(row["doc"])
        changed = _visible(consumer, changed_fields(previous, doc))
        for path in changed:
            last_changed[path] = {"version": row["version"], "built_at": row["built_at"]}
        out.append({"version": row["version"], "built_at": row["built_at"], "data_as_of": row["data_as_of"],
                    "content_hash": row["content_hash"], "changed": changed, "values": _numbers(consumer, doc)})
        previous = doc
    out.reverse()
    # the values it returns are served like fetch's: the serving audit records them (names, never values);
    # nothing served (no version: never built, or deleted), nothing recorded
    served: dict[str, dict[str, Any]] = {}
    for version in out:
        for path in version["values"]:
            section, name = path.split(".", 1)
            served.setdefault(section, {})[name] = True
    if versions:
        service._audit(consumer, "history", identifier, pid, served, versions[-1], 200)
    cat = service.catalog
    descriptions = {**{s: d for s, d in cat.section_descriptions.items() if consumer.allows_any_of(s)},
                    **{p: f.description for p, f in cat.fields.items() if consumer.allows(p)}}
    return {"profile_id": pid, "versions": out[: budget.max_rows], "truncated": len(out) > budget.max_rows,
            "last_changed": dict(sorted(last_changed.items())), "descriptions": descriptions}


def _numbers(consumer: Consumer, doc: dict[str, Any]) -> dict[str, float]:
    """The numeric traits and scores of a document the consumer may read (for plots over the history)."""
    return {f"{section}.{name}": value for section in ("traits", "scores")
            for name, value in (doc.get(section) or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool) and consumer.allows(f"{section}.{name}")}


def _pick(versions: list[dict[str, Any]], at: datetime | None, version: int | None, pid: str) -> dict[str, Any]:
    if not versions:
        raise NotFound(f"profile {pid!r} has no snapshot history (never built, or deleted)")
    if version is not None:
        found = next((v for v in versions if v["version"] == version), None)
        if found is None:
            raise NotFound(f"version: profile {pid!r} has no version {version}; it has "
                           f"{', '.join(str(v['version']) for v in versions)}")
        return found
    if at is None:
        return versions[-1]
    earlier = [v for v in versions if (_parse_time(v["built_at"]) or at) <= at]
    if not earlier:
        raise NotFound(f"at: no snapshot of profile {pid!r} was built at or before {at.isoformat()} (the first was "
                       f"built at {versions[0]['built_at']})")
    return earlier[-1]


def parse_at(text: str | None) -> datetime | None:
    """``at=`` as an aware time (ISO-8601; no offset means UTC).

    Raises:
        InvalidRequest: not an ISO-8601 time.
    """
    if not text:
        return None
    value = _parse_time(text)
    if value is None:
        # a '+' written in a URL's query arrives as a space: say so rather than only "not a time"
        plus = re.fullmatch(r"(.+\d) (\d\d:?\d\d)", text)
        hint = (f" (a '+' in a URL query is a space: write {plus[1]}%2B{plus[2]}, or the time in UTC with Z)"
                if plus and _parse_time(f"{plus[1]}+{plus[2]}") else "")
        raise InvalidRequest(f"at: expected an ISO-8601 time such as 2026-11-24T12:00:00Z, got {text!r}{hint}",
                             details=[{"field": "at", "reason": "expected an ISO-8601 time"}])
    return value


def replay(service: ContextService, lakehouse: Lakehouse, consumer: Consumer, id_type: str, id_value: str, *,
           at: datetime | None = None, version: int | None = None, fields: str | Sequence[str] | None = None,
           sections: str | Sequence[str] | None = None, fmt: str = "json", max_tokens: int | None = None,
           budget: QueryBudget | None = None) -> FetchResult:
    """The customer's context as fetch answered it at ``at`` (or from ``version``; neither: the newest).

    The response body is fetch's (``freshness`` computed at ``at``); headers say which version it is
    (``X-Context-Version``, ``X-Context-Built-At``) and, for text, what was left out.

    Raises:
        InvalidRequest, Forbidden, NotFound: as fetch (and a time before the first build: NotFound);
        BudgetExceeded: a budget of the named queries.
    """
    if fmt not in ("json", "text"):
        raise InvalidRequest(f"format: expected json or text, got {fmt!r}",
                             details=[{"field": "format", "reason": "expected json or text"}])
    selection = select(service.catalog, consumer, fields, sections)
    identifier, pid = _profile(service, id_type, id_value)
    row = _pick(snapshot_versions(lakehouse, pid, budget), at, version, pid)
    then = copy.copy(service)
    when = at or service.clock()
    then.clock = lambda: when
    want_tail = "recent_events" in selection.sections
    body = then.assemble(row, pid, identifier, consumer, selection, [] if want_tail else None)
    service._audit(consumer, "replay", identifier, pid, body["context"], row, 200)  # what fetch would record
    headers = {"X-Context-Version": str(row["version"]), "X-Context-Built-At": str(row["built_at"]),
               "Cache-Control": "private, max-age=60"}
    if fmt == "json":
        return FetchResult(200, body, None, headers)
    budget_tokens = max_tokens or service.options.default_max_tokens
    if budget_tokens < 50 or budget_tokens > 100_000:
        raise InvalidRequest("max_tokens: expected an integer from 50 to 100000",
                             details=[{"field": "max_tokens", "reason": "expected an integer from 50 to 100000"}])
    text, omitted, used = then.render(body, budget_tokens)
    headers.update({"X-Context-Tokens": str(used), "X-Context-Omitted": str(len(omitted)),
                    "X-Context-Omitted-Detail": json.dumps(omitted, ensure_ascii=True)})
    return FetchResult(200, text, None, headers)


def may_audit(consumer: Consumer) -> bool:
    """Whether the consumer may read the serving audit: an admin key, or one made with ``--audit``."""
    return consumer.admin or consumer.audit


def audit_trail(service: ContextService, lakehouse: Lakehouse, consumer: Consumer, id_type: str, id_value: str,
                budget: QueryBudget | None = None) -> JsonObject:
    """Who was served what about the customer, newest first, each record joined to the version it served
    (``served``: its ``built_at`` and ``data_as_of``) and the fields returned.

    Raises:
        Forbidden: neither an admin key nor one with the audit scope.
    """
    if not may_audit(consumer):
        raise Forbidden(f"the serving audit needs an admin key or one made with --audit; consumer {consumer.name!r} "
                        "has neither")


    budget = budget or QueryBudget()
    clock = _Clock(budget)
    _, pid = _profile(service, id_type, id_value)
    versions = {v["version"]: v for v in snapshot_versions(lakehouse, pid, budget)}
    rows = _read(lakehouse, "serving_audit", row_filters.equal("profile_id", pid), clock)
    records = []
    for row in sorted(rows, key=lambda r: r["at"], reverse=True):
        served = versions.get(row["snapshot_version"]) if row["snapshot_version"] is not None else None
        records.append({
            "at": _iso(row["at"]), "consumer": row["consumer"], "via": row["via"],
            "identifier_type": row["identifier_type"], "status": row["status"],
            "sections": json.loads(row["sections"] or "[]"), "fields": json.loads(row["fields"] or "[]"),
            "snapshot_version": row["snapshot_version"],
            "served": {"built_at": served["built_at"], "data_as_of": served["data_as_of"]} if served else None,
        })
    return {"profile_id": pid, "records": records[: budget.max_rows], "truncated": len(records) > budget.max_rows}


def parse_joined_via(text: str) -> JsonObject:
    """How an identifier joined its profile, from the identity graph's ``joined_via``: ``{"how": "first" |
    "edge" | "kept", "source", "other": [type, value], "at", "via": [type, value] | None}``."""
    found = _EDGE.match(text or "")
    if found:
        via = [found["via_type"], found["via_value"]] if found["via_type"] else None
        return {"how": "edge", "source": found["source"], "other": [found["type"], found["value"]],
                "at": found["at"], "via": via}
    return {"how": "kept" if (text or "").startswith("kept") else "first", "detail": text}


def identity(service: ContextService, lakehouse: Lakehouse, consumer: Consumer, id_type: str, id_value: str,
             budget: QueryBudget | None = None) -> JsonObject:
    """The customer's identity graph: ``nodes`` (type, value, how it joined), ``edges`` (the two ends and the
    source that joined them: ``event:identify``, ``event:alias``, ``record:<table>`` …) and ``refused`` (edges
    touching the customer that the last build did not apply, with the reason). The far end of a refused edge
    is another customer's identifier: its value is shown to admin and audit keys only.

    Raises:
        Forbidden: the consumer may not read ``profile.identifiers``.
    """
    if not consumer.allows("profile.identifiers"):
        raise Forbidden(f"the identity graph is outside the scope of consumer {consumer.name!r} "
                        "(it needs profile or profile.identifiers)")
    from pyiceberg.expressions import Or

    budget = budget or QueryBudget()
    clock = _Clock(budget)
    identifier, pid = _profile(service, id_type, id_value)
    rows = _read(lakehouse, "identity_graph", row_filters.equal("profile_id", pid), clock)
    mine = {(r["identifier_type"], r["identifier_value"]) for r in rows}
    values = sorted({v for _, v in mine})
    kept = {(r["identifier_type"], r["identifier_value"]) for r in rows if r["joined_via"].startswith("kept")}
    earlier = _earlier_joins(lakehouse, kept, values, clock) if kept else {}
    nodes: list[dict[str, Any]] = []
    edges: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["identifier_type"], r["identifier_value"])):
        me = (row["identifier_type"], row["identifier_value"])
        joined = parse_joined_via(earlier.get(me, row["joined_via"]))
        nodes.append({"type": me[0], "value": me[1], "joined": joined, "joined_via": row["joined_via"]})
        if joined["how"] == "edge":
            end = tuple(joined["via"] or me)
            pair = tuple(sorted([end, tuple(joined["other"])]))
            edges.setdefault(pair, {"a": list(pair[0]), "b": list(pair[1]), "source": joined["source"],
                                    "at": joined["at"]})
    refused = []
    if values:
        reveal = may_audit(consumer)
        either = Or(row_filters.one_of("a_value", values), row_filters.one_of("b_value", values))
        for row in _read(lakehouse, "identity_rejected_edges", either, clock):
            a, b = (row["a_type"], row["a_value"]), (row["b_type"], row["b_value"])
            if a not in mine and b not in mine:
                continue
            inside, outside = (a, b) if a in mine else (b, a)
            refused.append({"a": list(inside), "b": [outside[0], outside[1] if reveal or outside in mine else None],
                            "source": row["source"], "first_seen": _iso(row["first_seen"]),
                            "reason": row["reason"] if reveal else _rule_only(row["reason"])})
    if rows:
        service._audit(consumer, "identity", identifier, pid, {"profile": {"identifiers": True}}, None, 200)
    return {"profile_id": pid, "nodes": nodes, "edges": list(edges.values()), "refused": refused[: budget.max_rows],
            "built_at": _iso(rows[0]["built_at"]) if rows else None}


def _earlier_joins(lakehouse: Lakehouse, kept: set[tuple[str, str]], values: list[str],
                   clock: _Clock) -> dict[tuple[str, str], str]:
    """How identifiers "kept from previous build" first joined: each build rewrites ``identity_graph`` and
    an identifier it keeps says only that, so the table's earlier snapshots are read, newest first, until
    each one's edge is found (snapshots expired by maintenance are gone, and at most half the time budget is
    spent: those stay "kept")."""


    table = lakehouse.table("identity_graph")
    found: dict[tuple[str, str], str] = {}
    current = table.current_snapshot()
    for snap in sorted(table.snapshots(), key=lambda s: s.timestamp_ms, reverse=True):
        # half the time budget at most: past it, the graph is answered with what was found
        if not kept - found.keys() or time.monotonic() > clock.deadline - clock.budget.max_seconds / 2:
            break
        if current is not None and snap.snapshot_id == current.snapshot_id:
            continue
        known = row_filters.one_of("identifier_value", values)
        for row in _read(lakehouse, "identity_graph", known, clock, snap.snapshot_id):
            key = (row["identifier_type"], row["identifier_value"])
            if key in kept and key not in found and not row["joined_via"].startswith("kept"):
                found[key] = row["joined_via"]
    return found


def _rule_only(reason: str) -> str:
    """A refusal reason without the identifiers it lists (another customer's among them): the rule only
    (``user_id limit 1``, ``profile cap 1000``, ``blocked value email``)."""
    return reason.split(":", 1)[0]
