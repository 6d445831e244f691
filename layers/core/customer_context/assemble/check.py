"""Checking a context spec before anything runs: everything a build would trip over, found at once.

Loading the spec (:func:`customer_context.spec.load_spec`) already validates its shape, names and
references. :func:`check_spec` goes on to what only running it would reveal: each trait compiled on its
own (every bad property path listed, not just the first), then a whole dry build on an empty lakehouse
in a temporary folder — the same code path as a real build, so every compiled query and every ``sql``
trait is parsed and bound against the real table schemas — and each named query run once on that
empty lakehouse with placeholder parameters. Property paths the spec reads that no tracking plan
declares are warnings: often a typo, which would otherwise read as a silent null.

Given the real lakehouse, record tables already loaded are compared with the spec's columns too.
``customer-context spec check`` prints the result; ``serve``, ``build`` and ``load`` run it first.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from customer_context.spec import ContextSpec, Trait

if TYPE_CHECKING:
    from customer_context.ports import Lakehouse

# placeholder values of each named-query parameter type, to run a query once on an empty lakehouse
_PLACEHOLDERS = {"string": "x", "integer": 1, "number": 1.0, "boolean": True, "timestamp": "2026-01-01T00:00:00Z",
                 "duration": "1d"}


@dataclass
class SpecCheck:
    """What a check found: errors (a build would fail, or compute something else than meant) and warnings."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors


def _compile_each(spec: ContextSpec, check: SpecCheck) -> None:
    from customer_context.assemble import compiler

    for name, trait in spec.traits.items():
        try:
            compiler.compile_traits(spec.model_copy(update={"traits": {name: trait}}))
        except compiler.SpecCompileError as exc:
            check.errors.append(f"traits.{name}: {exc}")


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _dry_build(spec: ContextSpec, folder: str, check: SpecCheck) -> Any:
    """A build of ``spec`` on an empty lakehouse under ``folder``; returns that lakehouse."""
    from customer_context.assemble.build import build_context
    from customer_context.config import Settings
    from customer_context.stores.context_store import MemoryContextStore
    from customer_context.stores.iceberg import Lakehouse

    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": folder}))
    try:
        build_context(lakehouse, MemoryContextStore(), spec, commit=False)
    except Exception as exc:  # noqa: BLE001 - every failure of the build is what the check reports
        check.errors.append(f"a build would fail: {_first_line(exc)}")
    return lakehouse


def _run_queries(spec: ContextSpec, lakehouse: Lakehouse, check: SpecCheck) -> None:
    from customer_context.serve.named_queries import run_named_query

    for name, query in spec.queries.items():
        params = {p: _PLACEHOLDERS[q.type] for p, q in query.params.items() if q.required}
        try:
            run_named_query(lakehouse, spec, name, "p_spec_check", params, identifiers=[("user_id", "spec-check")])
        except Exception as exc:  # noqa: BLE001 - reported, named
            check.errors.append(f"queries.{name}: {_first_line(exc)}")


def _paths_read(trait: Trait) -> list[str]:
    paths = [trait.property] if trait.property else []
    where = trait.where
    if where is not None and not isinstance(where, dict):
        paths += [f"properties.{key}" for key in where.properties]
    return [p for p in paths if p.startswith(("properties.", "traits."))]


def _undeclared_properties(spec: ContextSpec, check: SpecCheck) -> None:
    """Warn about event properties and identify traits the spec reads that no tracking plan declares."""
    if not spec.tracking_plans:
        return
    declared: dict[str | None, set[str]] = {}  # event name (None: identify traits) → declared keys
    for plan in spec.tracking_plans.values():
        for event, planned in plan.events.items():
            declared.setdefault(event, set()).update((planned.properties or {}).get("properties", {}))
        declared.setdefault(None, set()).update((plan.identify_traits or {}).get("properties", {}))
    for name, trait in spec.traits.items():
        if trait.kind == "sql" or trait.table != "events":
            continue
        events = trait.where.event if trait.where is not None and not isinstance(trait.where, dict) else None
        for path in _paths_read(trait):
            root, key = path.split(".", 1)
            key = key.split(".", 1)[0]
            if root == "traits":
                known = declared.get(None, set())
            else:
                described = [declared[e] for e in events or declared if e is not None and e in declared]
                if not described:
                    continue  # no plan describes these events: nothing to compare with
                known = set().union(*described)
            if key not in known:
                check.warnings.append(f"traits.{name}: reads {path}, which no tracking plan declares "
                                      f"(declared: {', '.join(sorted(known)) or 'none'}) — a typo reads as null")


def check_spec(spec: ContextSpec, lakehouse: Lakehouse | None = None) -> SpecCheck:
    """Everything a build (and a named query) would find wrong with ``spec``, without changing any data.

    Args:
        spec: A loaded spec.
        lakehouse: The real lakehouse, when there is one: record tables already loaded are compared with
            the spec's columns (a change Iceberg cannot apply is an error saying what to do).

    Returns:
        The errors and warnings, each naming the spec path and the reason.
    """
    check = SpecCheck()
    if lakehouse is not None:
        from customer_context.assemble.records import check_record_schemas

        check.errors += check_record_schemas(lakehouse, spec)
    _compile_each(spec, check)
    if check.ok:
        with tempfile.TemporaryDirectory(prefix="customer-context-spec-check-") as folder:
            empty = _dry_build(spec, folder, check)
            if check.ok:
                _run_queries(spec, empty, check)
    _undeclared_properties(spec, check)
    return check
