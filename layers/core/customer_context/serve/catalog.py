"""What a context holds, derived from the spec: its sections and every addressable field.

Used to validate ``fields=`` / ``sections=`` selections and consumer scopes, to describe values in
prompt text, and to enumerate fields in the agents' tool schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from customer_context.spec import ContextSpec

# Sections that are lists: addressable only as a whole.
LIST_SECTIONS = frozenset({"interactions", "recent_events"})


@dataclass(frozen=True)
class FieldInfo:
    """One addressable field of a context."""

    path: str
    section: str
    description: str
    unit: str | None = None


def score_fields(spec: ContextSpec) -> dict[str, str]:
    """The score names a snapshot carries, with their descriptions."""
    h = spec.scores.horizon
    return {
        "churn_risk": "Probability the customer has stopped buying (1 − P(alive), BG/NBD model)",
        "p_alive": "Probability the customer is still an active buyer (BG/NBD model)",
        f"expected_orders_{h}": f"Orders the customer is expected to place in the next {h}",
        f"ltv_{h}": f"Revenue the customer is expected to bring in the next {h} (BG/NBD × Gamma-Gamma)",
        "repeat_purchases": "Repeat purchases observed so far (orders after the first)",
    }


@dataclass(frozen=True)
class Catalog:
    """Sections (in the spec's order: most important first) and fields of a context."""

    sections: tuple[str, ...]
    section_descriptions: Mapping[str, str]
    fields: dict[str, FieldInfo]

    def fields_of(self, section: str) -> list[FieldInfo]:
        """The fields directly under a section (not nested ones)."""
        return [f for f in self.fields.values() if f.section == section and f.path.count(".") == 1]


_CACHE: dict[int, tuple[ContextSpec, Catalog]] = {}


def catalog(spec: ContextSpec) -> Catalog:
    """The catalog of a spec (cached per spec object: specs hold dicts, so they are not hashable)."""
    hit = _CACHE.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    built = _build(spec)
    if len(_CACHE) > 16:
        _CACHE.clear()
    _CACHE[id(spec)] = (spec, built)
    return built


def _build(spec: ContextSpec) -> Catalog:
    sections = tuple(s.name for s in spec.snapshot.sections)
    fields: dict[str, FieldInfo] = {}
    for section in sections:
        if section == "profile":
            fields["profile.identifiers"] = FieldInfo("profile.identifiers", section,
                                                      "Every identifier known for the customer, by type")
            for name, id_type in spec.identifiers.types.items():
                fields[f"profile.identifiers.{name}"] = FieldInfo(f"profile.identifiers.{name}", section,
                                                                  id_type.description or name)
            for name, category in spec.consent.items():
                fields[f"profile.consent.{name}"] = FieldInfo(
                    f"profile.consent.{name}", section, f"Latest consent to {category.description or name}")
        elif section == "scores":
            for name, text in score_fields(spec).items():
                fields[f"scores.{name}"] = FieldInfo(f"scores.{name}", section, text)
        elif section == "traits":
            for name, trait in spec.traits.items():
                fields[f"traits.{name}"] = FieldInfo(f"traits.{name}", section, trait.description, trait.unit)
        elif section == "records":
            for table_name, table in spec.record_tables.items():
                if table.interactions:  # shown under "interactions", not as a latest row
                    continue
                fields[f"records.{table_name}"] = FieldInfo(f"records.{table_name}", section, table.description)
                for column in table.columns:
                    fields[f"records.{table_name}.{column}"] = FieldInfo(
                        f"records.{table_name}.{column}", section, f"{column} of the latest {table_name} row")
    descriptions: dict[str, str] = {s.name: s.description for s in spec.snapshot.sections}
    return Catalog(sections, descriptions, fields)
