"""The live tail: the last events of each customer, kept in DynamoDB by collect for seconds-fresh
context before the next build.

collect hands every accepted event of the types the snapshot shows (``snapshot.recent_events.types``)
to :meth:`RecentTail.record`, which files it as the build will attribute it
(:mod:`customer_context.assemble.attribution`): under the profile of its most important identifier
(one BatchGetItem on the aliases per request). When that identifier is in no profile yet — a new user
signing in on a device someone else used first — the event is not that someone's: it is filed under
each of its identifiers that no profile holds, so a customer seen for the first time seconds ago can
be fetched by them, and the next build decides where it goes.
Items expire through DynamoDB's TTL (``recent_events_ttl_seconds``) and each is bounded in size
(``properties`` cut to ``snapshot.recent_events.max_chars``); fetch reads at most
``snapshot.recent_events.limit`` of them, only those received after the snapshot's ``data_as_of``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from customer_context.assemble.attribution import event_identifiers
from customer_context.ports import JsonObject, RecentEvent, ServingStore, TailOwner
from customer_context.spec import ContextSpec


def compact(event: JsonObject, max_chars: int) -> JsonObject:
    """The event as snapshots show recent events."""
    props = event.get("properties")
    page = (event.get("context") or {}).get("page") if isinstance(event.get("context"), dict) else None
    path = (props or {}).get("path") if isinstance(props, dict) else None
    if path is None and isinstance(page, dict):
        path = page.get("path")
    return {
        "type": event.get("type"),
        "event": event.get("event"),
        "name": event.get("name"),
        "timestamp": event.get("timestamp"),
        "page_path": path,
        "properties": json.dumps(props, separators=(",", ":"), ensure_ascii=False)[:max_chars]
        if props is not None else None,
    }


class RecentTail:
    """Records recent events for fetch.

    Args:
        store: The context store.
        spec: The context spec (which event types, how many, how long).
        ttl_seconds: How long an item lives (DynamoDB TTL); 0 disables the tail.
    """

    def __init__(self, store: ServingStore, spec: ContextSpec, ttl_seconds: int) -> None:
        self.store = store
        self.spec = spec
        self.ttl_seconds = ttl_seconds

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded."""
        return self.ttl_seconds > 0 and self.spec.snapshot.recent_events.limit > 0

    def record(self, events: Iterable[JsonObject]) -> int:
        """File accepted (stamped) events; returns the items written."""
        if not self.enabled:
            return 0
        config = self.spec.snapshot.recent_events
        kept: list[tuple[dict[str, Any], list[tuple[str, str]]]] = []
        for event in events:
            if event.get("type") not in config.types:
                continue
            ids = [(f.id_type, f.value) for f in event_identifiers(self.spec, event)]
            if ids:
                kept.append((event, list(dict.fromkeys(ids))))
        if not kept:
            return 0
        profiles = self.store.resolve_many({i for _, ids in kept for i in ids})
        expires = int(time.time()) + self.ttl_seconds
        items = []
        for event, ids in kept:
            # the most important identifier decides, as in the build; not yet in a profile: its unknown ones
            owner = profiles.get(ids[0])
            owners: list[TailOwner] = [owner] if owner else [i for i in ids if i not in profiles]
            text = json.dumps(compact(event, config.max_chars), separators=(",", ":"), ensure_ascii=False)
            for tail in owners:
                items.append(RecentEvent(tail, str(event["receivedAt"]), str(event["messageId"]), text, expires))
        return int(self.store.put_recent(items))
