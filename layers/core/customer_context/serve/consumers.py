"""Consumer API keys and their scopes: who may read which sections and fields of a context.

A consumer key (``ck_…``, 192 random bits) is shown once when created and stored only as its
SHA-256: the key is random, so a fast unsalted hash is as safe as a slow one and keeps the check
to microseconds. A consumer is allowed whole *sections* (``traits``) and/or single *fields*
(``traits.orders_90d``, ``scores.churn_risk``); ``*`` allows everything. A named query declares what
its answer reveals (``reveals:`` in the spec, default every section): a consumer runs it only if it is
among its queries and its scope covers all of that; a scoped key runs no query unless named. Write
keys (the SDKs' keys) never read context; an admin key (regulations) with no scope reads nothing.

The check runs in the handler (not a Lambda authorizer): field-level scopes need the response
anyway, and one cached GetItem costs less than a second Lambda per request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from customer_context.errors import AuthenticationError, Forbidden, InvalidRequest
from customer_context.ports import JsonObject

if TYPE_CHECKING:
    from customer_context.ports import ConsumerKeys, WriteKeyStore

KEY_PREFIX = "ck_"
_CACHE_SECONDS = 60.0
_NEGATIVE_CACHE_SECONDS = 5.0


def hash_key(key: str) -> str:
    """The stored form of a consumer key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh consumer key."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Consumer:
    """An authenticated consumer and what it may read."""

    name: str
    sections: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()
    queries: frozenset[str] = field(default_factory=lambda: frozenset({"*"}))
    admin: bool = False
    audit: bool = False

    @property
    def everything(self) -> bool:
        """Whether the consumer may read every section."""
        return "*" in self.sections

    def allows_section(self, section: str) -> bool:
        """Whether the whole section is in scope."""
        return self.everything or section in self.sections

    def allows(self, path: str) -> bool:
        """Whether a dotted field path (``traits.orders_90d``) is in scope: its section, the field,
        or one of its parents is allowed."""
        if self.allows_section(path.split(".", 1)[0]):
            return True
        parts = path.split(".")
        return any(".".join(parts[:n]) in self.fields for n in range(1, len(parts) + 1))

    def allows_any_of(self, section: str) -> bool:
        """Whether anything in the section is in scope."""
        return self.allows_section(section) or any(f.split(".", 1)[0] == section for f in self.fields)

    @property
    def reads_anything(self) -> bool:
        """Whether any section or field is in scope (an admin key made for regulations reads nothing)."""
        return bool(self.sections or self.fields)

    def allows_query(self, name: str, reveals: Iterable[str]) -> bool:
        """Whether the consumer may run a named query: it is among its queries, and everything the query
        reveals (sections or field paths, :func:`customer_context.serve.named_queries.query_reveals`) is in
        its scope."""
        return ("*" in self.queries or name in self.queries) and all(self.allows(p) for p in reveals)

    @classmethod
    def from_item(cls, item: JsonObject) -> Consumer:
        """From a stored consumer item (an item without ``queries`` runs them all only if it reads everything)."""
        sections = frozenset(item.get("sections") or ())
        queries = item.get("queries")
        return cls(name=str(item["name"]), sections=sections, fields=frozenset(item.get("fields") or ()),
                   queries=frozenset(queries if queries is not None else default_queries(sections)),
                   admin=bool(item.get("admin", False)), audit=bool(item.get("audit", False)))


def default_queries(sections: Iterable[str]) -> list[str]:
    """The named queries a key may run when its creator named none: all for a key allowed everything,
    none for a scoped one."""
    return ["*"] if "*" in set(sections) else []


def consumer_item(name: str, sections: Iterable[str], fields: Iterable[str],
                  queries: Iterable[str] | None = None, admin: bool = False, audit: bool = False) -> JsonObject:
    """The attributes stored for a consumer key (``admin``: may file regulations; with no sections or
    fields it reads nothing, named queries included; ``audit``: may read the serving audit of the customers
    it reads, as an admin key may)."""
    sections = sorted(set(sections))
    item = {"name": name, "sections": sections, "fields": sorted(set(fields)),
            "queries": sorted(set(queries if queries is not None else default_queries(sections))), "admin": admin,
            "created_at": datetime.now(UTC).isoformat()}
    if audit:
        item["audit"] = True
    return item


def validate_scope(sections: Iterable[str], fields: Iterable[str], known_sections: Iterable[str],
                   known_fields: Iterable[str]) -> None:
    """Refuse a scope naming sections or fields the spec does not have.

    Raises:
        InvalidRequest: names the unknown entry and lists the valid ones.
    """
    known_s = set(known_sections)
    known_f = set(known_fields)
    for section in sections:
        if section != "*" and section not in known_s:
            raise InvalidRequest(f"sections: unknown section {section!r}; valid: {', '.join(sorted(known_s))}")
    for path in fields:
        if path not in known_f and path not in known_s:
            raise InvalidRequest(f"fields: unknown field {path!r}; valid: {', '.join(sorted(known_f))}")


def presented_key(headers: dict[str, str]) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key", "").strip() or None


class ConsumerAuthenticator:
    """Checks consumer keys against the store, caching answers per container.

    Args:
        store: Where consumer items live (the context table).
        write_keys: Knows the SDK write keys, to refuse them with a clear reason.
    """

    def __init__(self, store: ConsumerKeys, write_keys: WriteKeyStore | None = None) -> None:
        self._store = store
        self._write_keys = write_keys
        self._cache: dict[str, tuple[float, Consumer | None]] = {}

    def authenticate(self, headers: dict[str, str]) -> Consumer:
        """The consumer presenting the request's key.

        Raises:
            AuthenticationError: no key, or an unknown one (401).
            Forbidden: a write key, which can only send events (403).
        """
        key = presented_key(headers)
        if key is None:
            raise AuthenticationError("no consumer key: send `Authorization: Bearer <key>` or `x-api-key: <key>`")
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            consumer = cached[1]
        else:
            item = self._store.get_consumer(digest)
            consumer = Consumer.from_item(item) if item else None
            self._cache[digest] = (now + (_CACHE_SECONDS if consumer else _NEGATIVE_CACHE_SECONDS), consumer)
            if len(self._cache) > 10_000:
                self._cache.clear()
        if consumer is None:
            if self._write_keys is not None and self._write_keys.source_for(key) is not None:
                raise Forbidden("this is a write key: it can send events but never read context; "
                                "use a consumer key (`customer-context keys create`)")
            raise AuthenticationError("unknown consumer key")
        return consumer
