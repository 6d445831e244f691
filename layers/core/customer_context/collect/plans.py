"""Tracking plans: what each source may send, checked by collect before anything is queued.

A plan (``tracking_plans.<source id>`` in context.yaml) gives a JSON Schema per track event's
``properties`` and for identify ``traits``, and whether unplanned events are allowed. Each violation
kind is ``reject`` (the event goes to ``rejected_events`` with the schema error as the reason) or
``flag`` (accepted, the errors kept in ``context.violationErrors``, RudderStack's field for them).

Schemas are compiled to Python once per container with fastjsonschema (light to import, fast to
run: collect is on the SDKs' request path).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from customer_context.ports import JsonObject
from customer_context.spec import ContextSpec, TrackingPlan


@dataclass
class PlanVerdict:
    """What the plan says of one event."""

    reject: str | None = None
    flags: list[dict[str, str]] = field(default_factory=list)


def _validator(schema: dict[str, Any] | None) -> Callable[[Any], Any] | None:
    if schema is None:
        return None
    import fastjsonschema

    return fastjsonschema.compile(schema)  # type: ignore[no-any-return]


@dataclass
class _CompiledPlan:
    plan: TrackingPlan
    events: dict[str, Callable[[Any], Any] | None]
    traits: Callable[[Any], Any] | None

    def action(self, kind: str) -> str:
        return self.plan.on_violation.get(kind, "reject")  # type: ignore[call-overload,no-any-return]


class TrackingPlans:
    """The compiled plans of a spec; counts violations per (source, event, kind)."""

    def __init__(self, spec: ContextSpec) -> None:
        self._plans = {
            source: _CompiledPlan(plan, {name: _validator(e.properties) for name, e in plan.events.items()},
                                  _validator(plan.identify_traits))
            for source, plan in spec.tracking_plans.items()
        }
        self.violations: Counter[tuple[str, str, str]] = Counter()

    def __bool__(self) -> bool:
        return bool(self._plans)

    def check(self, source_id: str, event: JsonObject) -> PlanVerdict:
        """Check one valid event of ``source_id`` (sources without a plan pass)."""
        compiled = self._plans.get(source_id)
        verdict = PlanVerdict()
        if compiled is None:
            return verdict
        kind, name, validate, root = None, "", None, ""
        if event.get("type") == "track":
            name = str(event.get("event"))
            if name not in compiled.events:
                if not compiled.plan.allow_unplanned_events:
                    self._violation(verdict, compiled, source_id, name, "unplanned_event",
                                    f"tracking plan {source_id}: event {name!r} is not in the plan")
                return verdict
            kind, validate, root = "invalid_properties", compiled.events[name], "properties"
        elif event.get("type") == "identify":
            name, kind, validate, root = "identify", "invalid_traits", compiled.traits, "traits"
        if validate is None or kind is None:
            return verdict
        import fastjsonschema

        value = event.get(root)
        if value is None and root == "traits":
            value = (event.get("context") or {}).get("traits") if isinstance(event.get("context"), dict) else None
        try:
            validate({} if value is None else value)
        except fastjsonschema.JsonSchemaValueException as exc:
            message = str(exc.message).replace("data", root, 1)
            self._violation(verdict, compiled, source_id, name, kind,
                            f"tracking plan {source_id}: {'event ' + repr(name) if root == 'properties' else name}: "
                            f"{message}")
        return verdict

    def _violation(self, verdict: PlanVerdict, compiled: _CompiledPlan, source: str, name: str, kind: str,
                   reason: str) -> None:
        self.violations[(source, name, kind)] += 1
        if compiled.action(kind) == "reject":
            verdict.reject = reason
        else:
            verdict.flags.append({"type": kind, "message": reason})
