"""Suppression at collect: events carrying a suppressed identifier are accepted (2xx, so SDKs do not
retry) and dropped before they are queued."""

from __future__ import annotations

from typing import Any

from customer_context.serve.catalog import normalize_identifier
from customer_context.spec import ContextSpec


def _value(event: dict[str, Any], path: str) -> Any:
    node: Any = event
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and path.startswith("traits."):
        return _value(event, "context." + path)
    return node


class Suppressions:
    """Checks a request's events against the suppressed identifiers (one BatchGetItem per request).

    Args:
        store: The context store (suppression items).
        spec: Which event fields hold which identifier types.
    """

    def __init__(self, store: Any, spec: ContextSpec) -> None:
        self.store = store
        self.spec = spec
        self._paths = [(t, p) for t, rule in spec.identifiers.types.items() for p in rule.from_events
                       if not p.startswith("externalIds.")]

    def identifiers(self, event: dict[str, Any]) -> set[tuple[str, str]]:
        """The identifiers an event carries, normalised as lookups are."""
        out = set()
        for id_type, path in self._paths:
            raw = _value(event, path)
            if isinstance(raw, str | int) and not isinstance(raw, bool):
                value = normalize_identifier(self.spec, id_type, str(raw))
                if value:
                    out.add((id_type, value))
        return out

    def keep(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events that carry no suppressed identifier."""
        per_event = [self.identifiers(e) for e in events]
        wanted = set().union(*per_event) if per_event else set()
        if not wanted:
            return events
        blocked = self.store.suppressed(wanted)
        return [e for e, ids in zip(events, per_event, strict=True) if not ids & blocked]
