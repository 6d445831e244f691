"""`spec check` finds what a build would trip over before anything runs, and a `sql` trait that returns
several rows per profile stops the build before any state is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.assemble.check import check_spec
from customer_context.errors import ConfigError
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

BASE = DEFAULT_SPEC.read_text()
CLI = [sys.executable, "-m", "customer_context_devtools.cli"]


def _trait(yaml: str) -> str:
    """The shipped spec with one more trait (indented under `traits:`)."""
    return BASE.replace("traits:\n", "traits:\n" + yaml, 1)


def test_the_shipped_spec_passes() -> None:
    found = check_spec(parse_spec(BASE))
    assert found.ok and found.errors == [] and found.warnings == []


@pytest.mark.parametrize(("text", "expected"), [
    # a property path without its root: read as a column that does not exist
    (BASE.replace("    property: properties.revenue\n", "    property: revenue\n", 1),
     "traits.revenue_90d: 'revenue': expected properties.<key>"),
    (_trait("  typo:\n    description: d\n    kind: sql\n    sql: SELEC profile_id, 1 AS value FROM events_profiled\n"),
     "traits.typo: the SQL failed: Parser Error"),
    (_trait("  typo:\n    description: d\n    kind: sql\n"
            "    sql: SELECT profile_id, nope AS value FROM events_profiled GROUP BY 1\n"),
     'traits.typo: the SQL failed: Binder Error: Referenced column "nope" not found'),
    (BASE.replace("queries:\n", "queries:\n  broken:\n    description: d\n    sql: SELECT nope FROM events\n", 1),
     "queries.broken: named query 'broken' in the context spec failed: Binder Error"),
])
def test_mistakes_a_build_would_hit_are_found_without_data(text: str, expected: str) -> None:
    found = check_spec(parse_spec(text))
    assert not found.ok and any(expected in e for e in found.errors), found.errors


def test_a_property_no_tracking_plan_declares_is_a_warning() -> None:
    plan = ("tracking_plans:\n  web:\n    events:\n      Order Completed:\n        properties:\n"
            "          type: object\n          properties: {revenue: {type: number}, currency: {type: string}}\n")
    text = _trait("  typo_total:\n    description: d\n    kind: sum\n    property: properties.revnue\n"
                  "    where: {event: Order Completed}\n") + plan
    found = check_spec(parse_spec(text))
    assert found.ok
    assert any("traits.typo_total: reads properties.revnue, which no tracking plan declares" in w
               for w in found.warnings), found.warnings


def test_a_sql_trait_with_several_rows_per_profile_stops_the_build_before_any_state(lakehouse: Any) -> None:
    write_events(lakehouse, [ev("track", 2, userId="u1", event="Viewed"), ev("track", 1, userId="u1", event="Viewed"),
                             ev("track", 1, userId="u2", event="Viewed")])
    store = MemoryContextStore()
    build_context(lakehouse, store, parse_spec(BASE), as_of=AS_OF)
    state_before = lakehouse.scan("profile_state").num_rows
    items_before = dict(store.items)
    # Given a sql trait without GROUP BY: one row per event, not per profile
    spec = parse_spec(_trait("  every_event:\n    description: d\n    kind: sql\n"
                             "    sql: SELECT profile_id, event AS value FROM events_profiled\n"))
    # When a build runs, it stops naming the trait …
    with pytest.raises(ConfigError, match="traits.every_event: the SQL returned 2 rows for one profile"):
        build_context(lakehouse, store, spec, as_of=AS_OF)
    # … and nothing was written: the state and the served items are as before
    assert lakehouse.scan("profile_state").num_rows == state_before == 2
    assert store.items == items_before


def test_build_and_load_refuse_a_spec_a_build_would_fail_on(tmp_path: Path, lakehouse: Any) -> None:
    write_events(lakehouse, [ev("track", 1, userId="u1", event="Viewed")])
    spec = tmp_path / "context.yaml"
    spec.write_text(_trait("  typo:\n    description: d\n    kind: sql\n    sql: SELEC 1\n"))
    data_dir = str(tmp_path / "data")
    for args in (["build", "--dry-run", "--spec", str(spec), "--data-dir", data_dir],
                 ["load", str(tmp_path / "x.csv"), "--table", "crm_contacts", "--spec", str(spec),
                  "--data-dir", data_dir],
                 ["check", str(spec)]):
        done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "traits.typo: the SQL failed" in done.stderr and "Traceback" not in done.stderr
