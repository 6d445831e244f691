"""Property test of the build's plan: after any sequence of appends, compactions and clock steps, what a build
with its plan leaves served (no work when nothing changed) equals what a full build lands at the same clock."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from customer_context.assemble.build import build_context
from customer_context.govern.maintain import compact
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.lake import AS_OF, ev, order, write_events
from tests.helpers.served import served

SPEC = parse_spec(DEFAULT_SPEC.read_text())
CLOCKS = (None, AS_OF, AS_OF + timedelta(minutes=30), AS_OF + timedelta(hours=2))

appends = st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["order", "identify", "view"]),
                             st.integers(0, 6)), min_size=1, max_size=4).map(lambda rows: ("append", rows))
builds = st.sampled_from(CLOCKS).map(lambda c: ("build", c))
steps = st.lists(st.one_of(appends, st.just(("compact",)), builds), min_size=2, max_size=6)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(steps)
def test_builds_with_the_plan_serve_what_a_full_build_lands(lakehouse: Any, sequence: list[Any]) -> None:
    # one lakehouse for the whole test: each example starts from its own namespace's empty tables
    lakehouse.namespace = f"plan{next(_examples)}"
    lakehouse._tables.clear()
    lakehouse._namespace_ready = False
    store = MemoryContextStore()
    for step in [*sequence, ("build", None)]:
        if step[0] == "append":
            rows = []
            for user, kind, days in step[1]:
                if kind == "order":
                    rows.append(order(f"u{user}", days + 0.5, 10 + user))
                elif kind == "identify":
                    rows.append(ev("identify", days, userId=f"u{user}", anonymousId=f"a{user % 3}",
                                   traits={"email": f"u{user}@x.io"}))
                else:
                    rows.append(ev("page", days, anonymousId=f"a{user}", name="Home"))
            write_events(lakehouse, rows)
        elif step[0] == "compact":
            compact(lakehouse, "events", min_files=2)
        else:
            # each build runs twice: the rerun has nothing new (its clock is the first's when it is given, or
            # the newest event's; with no event at all, the wall clock's hour, which may just have moved)
            for rerun in (False, True):
                report = build_context(lakehouse, store, SPEC, as_of=step[1])
                if rerun and (step[1] is not None or report.events):
                    assert report.plan["mode"] == "nothing_new", report.plan
                # a full build at the same clock, landing everything into an empty store and committing nothing
                full = MemoryContextStore()
                build_context(lakehouse, full, SPEC, as_of=datetime.fromisoformat(report.as_of), commit=False,
                              reland=True)
                assert served(store) == served(full), (step, report.plan)


_examples = itertools.count()
