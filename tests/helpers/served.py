"""What a store serves, comparable across builds: each snapshot as canonical JSON without its build times, and
each alias's profile."""

from __future__ import annotations

import json
from typing import Any

from customer_context.stores.context_store import MemoryContextStore


def served(store: MemoryContextStore, times: tuple[str, ...] = ("built_at",)) -> dict[str, Any]:
    """Snapshots (canonical JSON without the fields ``times``) and aliases, by partition key."""
    out: dict[str, Any] = {}
    for (pk, sk), item in store.items.items():
        if sk == "snapshot":
            doc = {k: v for k, v in json.loads(item["doc"]).items() if k not in times}
            out[pk] = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        elif pk.startswith("id#"):
            out[pk] = item["profile_id"]
    return out
