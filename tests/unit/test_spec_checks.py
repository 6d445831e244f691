"""Spec mistakes are found when the spec is loaded, each with its path or line and the reason: YAML
aliases (expansion bombs) and duplicate keys, reserved names, oversized files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from customer_context.errors import ConfigError
from customer_context.spec import DEFAULT_SPEC, RESERVED_TABLE_NAMES, parse_spec

BASE = DEFAULT_SPEC.read_text()


def _with(extra: str) -> str:
    """The shipped spec with ``extra`` appended under its last top-level mapping (``queries:``)."""
    return BASE + extra


def test_yaml_alias_bombs_are_refused_at_once() -> None:
    bomb = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)])
    started = time.process_time()
    with pytest.raises(ConfigError, match=r"line 2: YAML aliases \(\*name\) are not allowed"):
        parse_spec(bomb)
    assert time.process_time() - started < 5  # not a timed claim: 9**11 nodes would never finish


def test_duplicate_keys_are_named_with_both_lines() -> None:
    text = BASE.replace("  orders_90d:\n", "  orders_90d:\n    description: first\n    kind: count\n  orders_90d:\n", 1)
    with pytest.raises(ConfigError, match=r"line \d+: duplicate key 'orders_90d' \(first at line \d+\)"):
        parse_spec(text)


def test_a_huge_spec_is_refused() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        parse_spec(BASE + "#" * (1 << 20))


@pytest.mark.parametrize("name", ["events", "identity_graph", "traits", "profiles", "crm_profiled", "events_s3"])
def test_record_tables_cannot_take_the_engines_names(name: str) -> None:
    text = BASE.replace("  crm_contacts:\n", f"  {name}:\n", 1).replace("table: crm_contacts", f"table: {name}")
    with pytest.raises(ConfigError, match=rf"record_tables.{name}: the name is taken"):
        parse_spec(text)


def test_a_trait_cannot_be_named_profile_id() -> None:
    text = BASE.replace("  orders_90d:\n", "  profile_id:\n", 1)
    with pytest.raises(ConfigError, match="traits.profile_id: the name is reserved"):
        parse_spec(text)


def test_every_table_the_build_creates_is_reserved() -> None:
    source = (Path(__file__).parents[2] / "layers/core/customer_context/assemble/duckdb_engine.py").read_text()
    created = set(re.findall(r"CREATE (?:OR REPLACE )?(?:TEMP )?(?:TABLE|VIEW) ([a-z_]+)\b(?!\{)", source))
    created |= set(re.findall(r"\(\"(prev_[a-z]+)\", \"[a-z_]+\"", source))  # CREATE TABLE {view} of these
    assert created, "the pattern must find the build's tables"
    could_collide = {name for name in created if re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name)}  # a record table's
    assert could_collide <= RESERVED_TABLE_NAMES, could_collide - RESERVED_TABLE_NAMES


def test_more_traits_than_the_limit_are_refused() -> None:
    from customer_context.spec import MAX_TRAITS

    extra = "".join(f"  t{i}:\n    description: d\n    kind: count\n" for i in range(MAX_TRAITS))
    with pytest.raises(ConfigError, match=rf"traits: {MAX_TRAITS + 20:,} declared; at most {MAX_TRAITS:,}"):
        parse_spec(BASE.replace("traits:\n", "traits:\n" + extra, 1))
