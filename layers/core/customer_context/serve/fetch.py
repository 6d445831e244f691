"""fetch_context: any identifier → the customer's context, whole or field by field, JSON or text.

Transport-neutral: the handler turns the API Gateway request into arguments of
:meth:`ContextService.fetch`; nothing here sees Lambda. Reads are a handful of DynamoDB calls:
the identifier's alias (GetItem), the snapshot (GetItem) and, when ``recent_events`` is asked for,
the live tail newer than the snapshot (one Query, two when the identifier is not in a profile yet).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from customer_context import strict_json
from customer_context.errors import Forbidden, InvalidRequest, NotFound
from customer_context.identifiers import normalize_identifier
from customer_context.ports import JsonObject
from customer_context.serve.catalog import LIST_SECTIONS, Catalog, catalog
from customer_context.serve.consumers import Consumer
from customer_context.serve.text import inline, render_text
from customer_context.spec import ContextSpec

if TYPE_CHECKING:
    from customer_context.pii import PiiPolicy
    from customer_context.ports import ServingStore
    from customer_context.serve.audit import AuditLog

PROFILE_ID = "profile_id"
MAX_BATCH = 100
MAX_IDENTIFIER_BYTES = 1024


@dataclass(frozen=True)
class ServeOptions:
    """Serving settings (from :class:`customer_context.config.Settings`)."""

    stale_after_seconds: int = 3600
    cache_max_age: int = 5
    default_max_tokens: int = 1500


@dataclass
class FetchResult:
    """What the handler turns into a response."""

    status: int
    body: dict[str, Any] | str | None
    etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_text(self) -> bool:
        """Whether the body is prompt text."""
        return isinstance(self.body, str)


def _split(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    return [p.strip() for p in items if p.strip()]


@dataclass(frozen=True)
class Selection:
    """Which sections (whole) and fields (dotted paths) a response holds."""

    sections: tuple[str, ...]
    fields: tuple[str, ...]

    @property
    def key(self) -> str:
        """A stable text form (for ETags and caches)."""
        return f"s={','.join(self.sections)};f={','.join(self.fields)}"

    def wants_section(self, section: str) -> bool:
        """Whether anything of ``section`` is selected."""
        return section in self.sections or any(f.split(".", 1)[0] == section for f in self.fields)


def select(cat: Catalog, consumer: Consumer, fields: str | Sequence[str] | None,
           sections: str | Sequence[str] | None) -> Selection:
    """Validate a selection against the spec and the consumer's scope.

    No selection means everything the consumer may read.

    Raises:
        InvalidRequest: an unknown section or field; the message lists the valid ones.
        Forbidden: a section or field outside the consumer's scope, named.
    """
    if not consumer.reads_anything:
        raise Forbidden(f"consumer {consumer.name!r} may read no section or field (an admin key files regulations; "
                        "reading context needs a key made with --sections or --fields)")
    want_sections = _split(sections)
    want_fields = _split(fields)
    for section in want_sections:
        if section not in cat.sections:
            raise InvalidRequest(f"sections: unknown section {section!r}; valid: {', '.join(cat.sections)}",
                                 details=[{"field": "sections", "reason": f"unknown section {section!r}",
                                           "valid": list(cat.sections)}])
        if not consumer.allows_section(section):
            raise Forbidden(f"sections: {section!r} is outside the scope of consumer {consumer.name!r}")
    for path in want_fields:
        if path not in cat.fields and path not in cat.sections:
            valid = [*cat.fields, *(s for s in cat.sections if s in LIST_SECTIONS)]
            raise InvalidRequest(f"fields: unknown field {path!r}; valid: {', '.join(valid)}",
                                 details=[{"field": "fields", "reason": f"unknown field {path!r}", "valid": valid}])
        if not consumer.allows(path):
            raise Forbidden(f"fields: {path!r} is outside the scope of consumer {consumer.name!r}")
    if not want_sections and not want_fields:
        whole = tuple(s for s in cat.sections if consumer.allows_section(s))
        partial = tuple(sorted(f for f in consumer.fields if f.split(".", 1)[0] not in whole and
                               (f in cat.fields or f in cat.sections)))
        return Selection(whole, partial)
    # a field naming a whole section is that section
    whole_sections = tuple(dict.fromkeys([*want_sections, *(f for f in want_fields if f in cat.sections)]))
    return Selection(whole_sections, tuple(dict.fromkeys(f for f in want_fields if f not in cat.sections)))


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _tail_key_after(data_as_of: str | None) -> str | None:
    """The live-tail sort key just past a snapshot's ``data_as_of``: tail keys start with ``receivedAt`` as
    collect writes it (milliseconds, ``Z``), while ``data_as_of`` is an ISO time with an offset; compared
    as text, an event received in the very millisecond of ``data_as_of`` (so in the snapshot) sorted after
    it and was served twice. Everything in that millisecond is the snapshot's."""
    when = _parse_time(data_as_of)
    if when is None:
        return data_as_of
    when = when.astimezone(UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z#\U0010ffff"


def _short_time(text: str | None) -> str:
    """``2026-11-24 20:10Z`` (minutes, UTC) for prompt text; ``never`` when unknown."""
    value = _parse_time(text)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if value else "never"


class ContextService:
    """Serves contexts from the context store.

    Args:
        store: The context store (DynamoDB, or in memory in tests).
        spec: The context spec.
        options: Serving settings.
        clock: Returns "now" (tests pass a fixed one).
    """

    def __init__(self, store: ServingStore, spec: ContextSpec, options: ServeOptions | None = None,
                 clock: Callable[[], datetime] | None = None, pii: PiiPolicy | None = None,
                 audit: AuditLog | None = None) -> None:
        self.store = store
        self.spec = spec
        self.catalog = catalog(spec)
        self.options = options or ServeOptions()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.identifier_types = (*spec.identifiers.types, PROFILE_ID)
        self._pii = pii
        self.audit = audit
        self._selections: dict[tuple[Consumer, str | None, str | None], Selection] = {}
        self._direct_fields: dict[str, frozenset[str]] = {}
        self._paths: dict[Selection, tuple[tuple[str, ...], ...]] = {}

    def _select(self, consumer: Consumer, fields: str | Sequence[str] | None,
                sections: str | Sequence[str] | None) -> Selection:
        """:func:`select`, remembered per consumer and query text (a few hundred at most; a refused selection
        is never remembered, so it is refused with its reason every time)."""
        if not (isinstance(fields, str | None) and isinstance(sections, str | None)):
            return select(self.catalog, consumer, fields, sections)
        key = (consumer, fields, sections)
        hit = self._selections.get(key)
        if hit is None:
            hit = select(self.catalog, consumer, fields, sections)
            if len(self._selections) >= 512:
                self._selections.clear()
            self._selections[key] = hit
        return hit

    # -- resolution ------------------------------------------------------------------------------
    def identifier(self, id_type: str, id_value: str) -> tuple[str, str]:
        """``(type, value)`` as stored and looked up: normalised, and hashed where the PII policy hashes.

        Raises:
            InvalidRequest: an unknown type, a value too long, or empty after normalisation.
        """
        if id_type not in self.identifier_types:
            valid = ", ".join(self.identifier_types)
            raise InvalidRequest(f"identifier_type: unknown type {id_type!r}; valid: {valid}",
                                 details=[{"field": "identifier_type", "reason": f"unknown type {id_type!r}",
                                           "valid": list(self.identifier_types)}])
        if len(id_value.encode()) > MAX_IDENTIFIER_BYTES:  # also DynamoDB's key limit (2 KB) is below
            raise InvalidRequest(f"identifier_value: longer than {MAX_IDENTIFIER_BYTES} bytes",
                                 details=[{"field": "identifier_value", "reason": "too long"}])
        value = (id_value if id_type == PROFILE_ID else self._pii.lookup_value(id_type, id_value) if self._pii
                 else normalize_identifier(self.spec, id_type, id_value))
        if not value:
            raise InvalidRequest("identifier_value: empty after normalisation",
                                 details=[{"field": "identifier_value", "reason": "empty after normalisation"}])
        return id_type, value

    def _not_found(self, id_type: str, id_value: str) -> NotFound:
        return NotFound(f"no customer is known by {id_type} {id_value!r} (as of the last build, and no event "
                        "from it since)")

    # -- the response ------------------------------------------------------------------------------
    def _context(self, doc: dict[str, Any], selection: Selection, consumer: Consumer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for section in selection.sections:
            if section in doc and consumer.allows_section(section):
                out[section] = doc[section]
        for parts in self._field_paths(selection):  # as _get_path, then _set_path (a missing value is None)
            node: Any = doc
            for part in parts:
                if not isinstance(node, dict) or part not in node:
                    node = None
                    break
                node = node[part]
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = node
        return out

    def _field_paths(self, selection: Selection) -> tuple[tuple[str, ...], ...]:
        """The selection's fields outside its whole sections, split at their dots (remembered per selection, as
        :meth:`_select`)."""
        hit = self._paths.get(selection)
        if hit is None:
            hit = tuple(tuple(p.split(".")) for p in selection.fields if p.split(".", 1)[0] not in selection.sections)
            if len(self._paths) >= 512:
                self._paths.clear()
            self._paths[selection] = hit
        return hit

    def _tail(self, pid: str | None, identifier: tuple[str, str] | None, after: str | None) -> list[dict[str, Any]]:
        """Events newer than the snapshot, newest first, deduplicated by message id."""
        limit = self.spec.snapshot.recent_events.limit
        after = _tail_key_after(after)
        items: list[dict[str, Any]] = []
        if pid:
            items += self.store.recent(pid, after, limit)
        if identifier and identifier[0] != PROFILE_ID:
            items += self.store.recent(identifier, after, limit)
        seen: set[str] = set()
        events = []
        for item in sorted(items, key=lambda i: i["sk"], reverse=True):
            received_at, _, message_id = item["sk"].partition("#")
            if message_id in seen:
                continue
            seen.add(message_id)
            event = strict_json.decode(item["event"])[0]
            event["received_at"] = received_at
            event["source"] = "live"
            events.append(event)
        return events[:limit]

    def _freshness(self, snapshot: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        built_at = _parse_time(snapshot.get("built_at")) if snapshot else None
        age = max(0, int((now - built_at).total_seconds())) if built_at else None
        return {
            "built_at": snapshot.get("built_at") if snapshot else None,
            "data_as_of": snapshot.get("data_as_of") if snapshot else None,
            "age_seconds": age,
            "stale": age is None or age > self.options.stale_after_seconds,
            "stale_after_seconds": self.options.stale_after_seconds,
            "served_at": now.isoformat(timespec="seconds"),
        }

    def assemble(self, snapshot: JsonObject | None, pid: str | None, identifier: tuple[str, str],
                 consumer: Consumer, selection: Selection, tail: list[JsonObject] | None) -> JsonObject:
        """The JSON body for one customer (``snapshot`` None: known from live events only)."""
        doc = strict_json.decode(snapshot["doc"])[0] if snapshot else {}
        context = self._context(doc, selection, consumer)
        sources: dict[str, Any] = {"snapshot": sorted(context)} if snapshot else {"snapshot": []}
        gate = next((sec.consent for sec in self.spec.snapshot.sections if sec.name == "recent_events"), None)
        if gate is not None:  # withdrawn consent also holds back events received since the build
            known = (doc.get("profile") or {}).get("consent", {}).get(gate)
            if not (known if known is not None else self.spec.consent[gate].default == "granted"):
                tail = None
        if tail is not None and "recent_events" in selection.sections:
            built = [dict(e, source="snapshot") for e in context.get("recent_events") or []]
            limit = self.spec.snapshot.recent_events.limit
            context["recent_events"] = (tail + built)[:limit]
            sources["recent_events"] = {"live": min(len(tail), limit),
                                        "snapshot": max(0, min(len(built), limit - len(tail)))}
        body: dict[str, Any] = {
            "profile_id": pid,
            "identifier": {"type": identifier[0], "value": identifier[1]},
            "context": context,
            "freshness": self._freshness(snapshot, self.clock()),
            "sources": sources,
        }
        if doc.get("truncated"):
            body["truncated"] = doc["truncated"]
        return body

    def _etag(self, snapshot: dict[str, Any] | None, pid: str | None, selection: Selection, consumer: Consumer,
              tail: list[dict[str, Any]] | None, variant: str) -> str:
        newest = tail[0]["received_at"] if tail else ""
        parts = [pid or "", str(snapshot.get("version", "")) if snapshot else "",
                 str(snapshot.get("content_hash", "")) if snapshot else "",
                 str(snapshot.get("built_at", "")) if snapshot else "", selection.key, consumer.name,
                 str(len(tail or [])), newest, variant]
        return 'W/"' + hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest() + '"'

    def resolve_profile(self, id_type: str, id_value: str) -> str:
        """The profile id of any identifier.

        Raises:
            InvalidRequest: unknown identifier type; NotFound: nobody known by it.
        """
        identifier = self.identifier(id_type, id_value)
        pid = identifier[1] if identifier[0] == PROFILE_ID else self.store.resolve(*identifier)
        if not pid:
            raise self._not_found(*identifier)
        return str(pid)

    # -- entry points ------------------------------------------------------------------------------
    def fetch(self, id_type: str, id_value: str, consumer: Consumer, *, fields: str | Sequence[str] | None = None,
              sections: str | Sequence[str] | None = None, fmt: str = "json", max_tokens: int | None = None,
              if_none_match: str | None = None, via: str = "fetch", verbose: bool = False) -> FetchResult:
        """One customer's context.

        Raises:
            InvalidRequest: unknown identifier type, field, section or format (400).
            Forbidden: a field or section outside the consumer's scope (403).
            NotFound: nobody is known by the identifier (404).
        """
        if fmt not in ("json", "text"):
            raise InvalidRequest(f"format: expected json or text, got {fmt!r}",
                                 details=[{"field": "format", "reason": "expected json or text"}])
        budget = max_tokens or self.options.default_max_tokens
        if budget < 50 or budget > 100_000:
            raise InvalidRequest("max_tokens: expected an integer from 50 to 100000",
                                 details=[{"field": "max_tokens", "reason": "expected an integer from 50 to 100000"}])
        selection = self._select(consumer, fields, sections)
        identifier = self.identifier(id_type, id_value)
        pid = identifier[1] if identifier[0] == PROFILE_ID else self.store.resolve(*identifier)
        snapshot = self.store.get_snapshot(pid) if pid else None
        want_tail = "recent_events" in selection.sections
        tail = self._tail(pid if snapshot else None, identifier, snapshot.get("data_as_of") if snapshot else None) \
            if want_tail else None
        if snapshot is None and not tail:
            self._audit(consumer, via, identifier, None, None, None, 404)
            raise self._not_found(*identifier)
        etag = self._etag(snapshot, pid if snapshot else None, selection, consumer, tail,
                          f"{fmt}:{budget if fmt == 'text' else ''}" + (":verbose" if verbose else ""))
        headers = {"ETag": etag, "Cache-Control": f"private, max-age={self.options.cache_max_age}"}
        tags = [t.strip() for t in if_none_match.split(",")] if if_none_match else []
        if etag in tags or "*" in tags:  # "*": any current representation (RFC 9110 13.1.2)
            self._audit(consumer, via, identifier, pid if snapshot else None, None, snapshot, 304)
            return FetchResult(304, None, etag, headers)
        body = self.assemble(snapshot, pid if snapshot else None, identifier, consumer, selection, tail)
        self._audit(consumer, via, identifier, body["profile_id"], body["context"], snapshot, 200)
        if fmt == "json":
            if verbose:  # where each value came from, from the spec and this snapshot (no extra read)
                from customer_context.serve.provenance import field_provenance

                body["provenance"] = field_provenance(self.spec, body["context"], snapshot)
            return FetchResult(200, body, etag, headers)
        text, omitted, used = self.render(body, budget)
        headers.update({"X-Context-Tokens": str(used), "X-Context-Omitted": str(len(omitted))})
        return FetchResult(200, text, etag, headers)

    def _audit(self, consumer: Consumer, via: str, identifier: tuple[str, str], pid: str | None,
               context: dict[str, Any] | None, snapshot: dict[str, Any] | None, status: int) -> None:
        """Record what was served: section names and field paths, never values."""
        if self.audit is None:
            return
        sections, fields = [], []
        for section, data in (context or {}).items():
            cat_fields = self._direct_fields.get(section)
            if cat_fields is None:
                cat_fields = self._direct_fields[section] = frozenset(f.path for f in self.catalog.fields_of(section))
            if isinstance(data, dict) and cat_fields and set(f"{section}.{k}" for k in data) < cat_fields:
                fields += [f"{section}.{k}" for k in data]
            else:
                sections.append(section)
        version = snapshot.get("version") if snapshot else None
        self.audit.record(consumer=consumer.name, via=via, identifier=identifier, profile_id=pid, sections=sections,
                          fields=fields, snapshot_version=int(version) if version is not None else None,
                          status=status)

    def render(self, body: JsonObject, max_tokens: int) -> tuple[str, list[str], int]:
        """Prompt text of a JSON body under ``max_tokens``."""
        fresh = body["freshness"]
        stale = "STALE: " if fresh["stale"] else ""
        who = inline(body["profile_id"]) if body["profile_id"] else \
            f"{body['identifier']['type']} {inline(body['identifier']['value'])} (no profile yet)"
        header = f"# Customer {who} ({stale}built {_short_time(fresh['built_at'])})"
        return render_text(body["context"], self.catalog, header, max_tokens)

    def fetch_many(self, identifiers: Iterable[dict[str, str]], consumer: Consumer, *,
                   fields: str | Sequence[str] | None = None,
                   sections: str | Sequence[str] | None = None) -> JsonObject:
        """Up to 100 customers in one call: one BatchGetItem for the aliases, one for the snapshots.

        Unknown customers are listed with ``found: false`` rather than failing the whole batch.
        """
        wanted = list(identifiers)
        if not wanted:
            raise InvalidRequest("identifiers: expected 1 to 100 identifiers")
        if len(wanted) > MAX_BATCH:
            raise InvalidRequest(f"identifiers: at most {MAX_BATCH} per call, got {len(wanted)}",
                                 details=[{"field": "identifiers", "reason": f"at most {MAX_BATCH} per call"}])
        selection = select(self.catalog, consumer, fields, sections)
        resolved: list[tuple[str, str]] = []
        for n, item in enumerate(wanted):
            try:
                resolved.append(self.identifier(str(item.get("type", "")), str(item.get("value", ""))))
            except InvalidRequest as exc:
                raise InvalidRequest(f"identifiers[{n}]: {exc.message}") from None
        aliases = self.store.resolve_many({i for i in resolved if i[0] != PROFILE_ID})
        pids = {i: (i[1] if i[0] == PROFILE_ID else aliases.get(i)) for i in resolved}
        snapshots = self.store.get_snapshots({p for p in pids.values() if p})
        results = []
        for identifier in resolved:
            pid = pids[identifier]
            snapshot = snapshots.get(pid) if pid else None
            want_tail = "recent_events" in selection.sections
            tail = self._tail(pid if snapshot else None, identifier,
                              snapshot.get("data_as_of") if snapshot else None) if want_tail else None
            if snapshot is None and not tail:
                self._audit(consumer, "batch", identifier, None, None, None, 404)
                results.append({"identifier": {"type": identifier[0], "value": identifier[1]}, "found": False})
                continue
            body = self.assemble(snapshot, pid if snapshot else None, identifier, consumer, selection, tail)
            self._audit(consumer, "batch", identifier, body["profile_id"], body["context"], snapshot, 200)
            results.append({"found": True, **body})
        return {"results": results, "found": sum(1 for r in results if r["found"]), "requested": len(results)}
