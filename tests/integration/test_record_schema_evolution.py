"""A spec that adds, drops or retypes a record column after a load: Iceberg schema evolution keeps
load and build working; a change it cannot apply is listed by ``check_record_schemas`` with what to do,
and refused by load and build with that reason (never a traceback)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from customer_context.assemble.build import build_context
from customer_context.assemble.records import check_record_schemas, load_file
from customer_context.errors import ConfigError
from customer_context.spec import DEFAULT_SPEC, ContextSpec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF

BASE = yaml.safe_load(DEFAULT_SPEC.read_text())
CRM = "contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
RETYPED = ("record_tables.crm_contacts.columns.lifecycle_stage: the loaded table holds it as string, and Iceberg "
           "cannot change string to boolean in place; keep string, or remove the column from the spec and load a "
           "file into the table (its stored values are dropped), then declare it as boolean and reload the files "
           "that fill it")


def spec_changed(change: Callable[[dict[str, Any]], None]) -> ContextSpec:
    data = copy.deepcopy(BASE)
    change(data)
    return ContextSpec.model_validate(data)


def add_seats(data: dict[str, Any]) -> None:
    data["record_tables"]["crm_contacts"]["columns"]["seats"] = "integer"
    data["traits"]["crm_seats"] = {"description": "Seats in the CRM", "kind": "last_value",
                                   "table": "crm_contacts", "property": "seats"}


def drop_account_manager(data: dict[str, Any]) -> None:
    del data["record_tables"]["crm_contacts"]["columns"]["account_manager"]
    del data["traits"]["account_manager"]


def retype_stage(data: dict[str, Any]) -> None:
    data["record_tables"]["crm_contacts"]["columns"]["lifecycle_stage"] = "boolean"
    del data["traits"]["crm_stage"]


def traits_of(store: MemoryContextStore, contact: str) -> dict[str, Any]:
    return json.loads(store.get_snapshot(store.resolve("crm_id", contact))["doc"])["traits"]  # type: ignore[arg-type,index]


@pytest.fixture
def loaded(lakehouse: Any) -> Any:
    """A lakehouse with one CRM contact loaded under the shipped spec."""
    spec = ContextSpec.model_validate(BASE)
    assert load_file(lakehouse, spec, "imports/crm_contacts/a.csv",
                     (CRM + "C1,ann@x.com,Ann,vip,Tom,2026-11-01T00:00:00Z\n").encode()).loaded == 1
    return lakehouse


def test_a_build_reads_a_column_added_to_the_spec_after_the_load(loaded: Any) -> None:
    # Given a spec that adds an integer column and a trait over it
    spec = spec_changed(add_seats)
    # When the build runs before any file has the column
    store = MemoryContextStore()
    build_context(loaded, store, spec, as_of=AS_OF)
    # Then it builds, the stored row having no value yet, and the table itself is left as it was
    assert traits_of(store, "C1")["crm_seats"] is None
    assert "seats" not in loaded.scan("crm_contacts").column_names
    assert check_record_schemas(loaded, spec) == []


def test_a_load_fills_a_column_added_to_the_spec_and_the_build_uses_it(loaded: Any) -> None:
    # Given a spec that adds an integer column
    spec = spec_changed(add_seats)
    # When a file with the column is loaded
    report = load_file(loaded, spec, "imports/crm_contacts/b.csv", (
        b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at,seats\n"
        b"C2,bob@x.com,Bob,lead,,2026-11-01T00:00:00Z,12\n"))
    # Then the table took the column, the old row keeps its values, and the build reads it
    assert (report.loaded, report.refused) == (1, None)
    rows = {r["contact_id"]: r for r in loaded.scan("crm_contacts").to_pylist()}
    assert (rows["C1"]["full_name"], rows["C1"]["seats"], rows["C2"]["seats"]) == ("Ann", None, 12)
    store = MemoryContextStore()
    build_context(loaded, store, spec, as_of=AS_OF)
    assert traits_of(store, "C2")["crm_seats"] == 12


def test_a_column_dropped_from_the_spec_is_dropped_from_the_table(loaded: Any) -> None:
    # Given a spec without account_manager
    spec = spec_changed(drop_account_manager)
    # When a file without it is loaded, and the build runs
    report = load_file(loaded, spec, "imports/crm_contacts/b.csv", (
        b"contact_id,email,full_name,lifecycle_stage,updated_at\nC2,bob@x.com,Bob,lead,2026-11-01T00:00:00Z\n"
    ))
    store = MemoryContextStore()
    build_context(loaded, store, spec, as_of=AS_OF)
    # Then both work and the table no longer has the column
    assert (report.loaded, report.refused) == (1, None)
    assert "account_manager" not in loaded.scan("crm_contacts").column_names
    assert traits_of(store, "C2")["crm_stage"] == "lead"


def test_a_retyped_column_is_refused_with_what_to_do_and_the_remedy_works(loaded: Any) -> None:
    # Given a spec that turns lifecycle_stage from string into boolean
    spec = spec_changed(retype_stage)
    # When a file is loaded: it is refused with what to do (kept in rejected_records), not a traceback
    report = load_file(loaded, spec, "imports/crm_contacts/b.csv", (
        CRM + "C2,bob@x.com,Bob,true,,2026-11-01T00:00:00Z\n").encode())
    assert report.refused == RETYPED
    assert [r["reason"] for r in loaded.scan("rejected_records").to_pylist()] == [RETYPED]
    # and the build stops with that reason, the spec check lists it
    with pytest.raises(ConfigError, match="cannot change string to boolean"):
        build_context(loaded, MemoryContextStore(), spec, as_of=AS_OF)
    assert check_record_schemas(loaded, spec) == [RETYPED]
    # When the column is removed and a file loaded, then the column is declared again as boolean
    without = spec_changed(lambda data: (retype_stage(data),
                                         data["record_tables"]["crm_contacts"]["columns"].pop("lifecycle_stage")))
    assert load_file(loaded, without, "imports/crm_contacts/none.csv",
                     b"contact_id,email,full_name,account_manager,updated_at\n").refused is None
    report = load_file(loaded, spec, "imports/crm_contacts/c.csv", (
        CRM + "C1,ann@x.com,Ann,true,Tom,2026-11-02T00:00:00Z\n").encode())
    # Then the files load with the new type, and the build works
    assert (report.loaded, report.refused, check_record_schemas(loaded, spec)) == (1, None, [])
    build_context(loaded, MemoryContextStore(), spec, as_of=AS_OF)
    assert {r["contact_id"]: r["lifecycle_stage"] for r in loaded.scan("crm_contacts").to_pylist()} == {"C1": True}


def test_a_changed_primary_key_and_a_lineage_name_are_listed(loaded: Any) -> None:
    # Given a spec whose CRM table is keyed by email and whose tickets declare a `_loaded_at` column
    def change(data: dict[str, Any]) -> None:
        data["record_tables"]["crm_contacts"]["primary_key"] = ["email"]
        data["record_tables"]["support_tickets"]["columns"]["_loaded_at"] = "timestamp"

    # Then the spec check names both (the tickets table was never loaded)
    assert check_record_schemas(loaded, spec_changed(change)) == [
        "record_tables.crm_contacts.primary_key: ['email'] differs from the loaded table's ['contact_id']; keep "
        "the primary key, or declare a new record table and load the files into it",
        "record_tables.support_tickets.columns._loaded_at: the name is reserved for the lineage column"]
