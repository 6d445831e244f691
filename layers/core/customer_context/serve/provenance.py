"""Provenance per field (fetch with ``verbose=true``): where each value of an answer came from.

Worked out from the spec and the snapshot fetch has already read — no extra read on the fetch path:

* ``profile.identifiers`` — the build's identity graph (its edges: the replay ``identity`` route);
* ``profile.consent`` — the latest consent the customer's events carried, per category;
* ``traits.<name>`` — the trait's definition (kind, table, property, window, filter or SQL);
* ``scores.<name>`` — the score models (BG/NBD and Gamma-Gamma) over the purchase event;
* ``records.<table>`` — the record table and the row's key (and its ``updated_at``);
* ``interactions[i]`` — the record table and key of each item;
* ``recent_events[i]`` — the event (type, name, time), ``live`` when received after the build.

Each field also says when its value ``last_changed``: the build that last changed it, worked out by the
builds from the snapshot history (each build compares every changed profile's field values with the previous
build's) and landed with the snapshot item (its ``changed_at``), so fetch reads nothing more. It is the
``last_changed`` of the replay API's ``GET …/history``, which works it out again from the whole history;
``null`` when unknown (a snapshot landed before fields were tracked, until the field next changes). A list
section (``interactions``, ``recent_events``) changes as a whole; an event received after the build
(``live``) last changed when it was received.
"""

from __future__ import annotations

import json
from typing import Any

from customer_context.ports import JsonObject
from customer_context.spec import ContextSpec
from customer_context.trait_kinds import TRAIT_KINDS


def _trait(spec: ContextSpec, name: str) -> dict[str, Any]:
    trait = spec.traits.get(name)
    if trait is None:
        return {"from": "trait", "trait": name}
    definition = trait.model_dump(mode="json", by_alias=True, exclude_none=True,
                                  exclude={"description"} if TRAIT_KINDS[trait.kind].uses_limit
                                  else {"description", "limit"})
    return {"from": "trait", "trait": name, "definition": definition}


def _record(spec: ContextSpec, table: str, row: Any) -> dict[str, Any]:
    declared = spec.record_tables.get(table)
    out: dict[str, Any] = {"from": "record", "table": table}
    if declared is not None and isinstance(row, dict):
        out["key"] = {k: row.get(k) for k in declared.primary_key}
        out["updated_at"] = row.get(declared.updated_at)
    return out


def field_provenance(spec: ContextSpec, context: JsonObject, snapshot: JsonObject | None) -> JsonObject:
    """``{"built_at", "data_as_of", "fields": {path: origin}}`` for the fields of an answer's ``context``."""
    fields: dict[str, Any] = {}
    scores = spec.scores
    times = json.loads(snapshot["changed_at"]) if snapshot and snapshot.get("changed_at") else {}
    for section, data in context.items():
        if section == "profile" and isinstance(data, dict):
            for name in data:
                fields[f"profile.{name}"] = (
                    {"from": "identity", "detail": "the build's identity graph: identifiers joined by events, aliases "
                                                   "and record identifiers"} if name == "identifiers" else
                    {"from": "events", "detail": "the latest consent the customer's events carried",
                     "categories": sorted(spec.consent)} if name == "consent" else {"from": "profile"})
        elif section == "traits" and isinstance(data, dict):
            fields.update({f"traits.{name}": _trait(spec, name) for name in data})
        elif section == "scores" and isinstance(data, dict):
            fields.update({f"scores.{name}": {
                "from": "score", "model": "BG/NBD (repeat purchases) and Gamma-Gamma (spend)",
                "purchase_event": scores.purchase_event, "revenue_property": scores.revenue_property,
                "horizon": scores.horizon} for name in data})
        elif section == "records" and isinstance(data, dict):
            fields.update({f"records.{table}": _record(spec, table, row) for table, row in data.items()})
        elif section == "interactions" and isinstance(data, list):
            fields.update({f"interactions[{i}]": _record(spec, str(item.get("table")), item)
                           for i, item in enumerate(data) if isinstance(item, dict)})
        elif section == "recent_events" and isinstance(data, list):
            fields.update({f"recent_events[{i}]": {
                "from": "live event" if event.get("source") == "live" else "event", "type": event.get("type"),
                "event": event.get("event") or event.get("name"),
                "at": event.get("timestamp") or event.get("received_at"),
                **({"last_changed": event.get("received_at")} if event.get("source") == "live" else {})}
                for i, event in enumerate(data) if isinstance(event, dict)})
    for path, origin in fields.items():
        whole = path.split("[", 1)[0]  # a list section's items change with the section
        origin.setdefault("last_changed", times.get(whole))
    return {"built_at": snapshot.get("built_at") if snapshot else None,
            "data_as_of": snapshot.get("data_as_of") if snapshot else None, "fields": fields}
