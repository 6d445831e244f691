"""The events columns are defined once (customer_context/models/events.py); the rest is derived from it."""

import pytest
from customer_context.assemble.compiler import SpecCompileError, event_value
from customer_context.models.events import BUILD_EVENT_COLUMNS, EVENT_CONTENT, EVENTS, NAMEABLE_EVENT_COLUMNS
from customer_context.sql_text import event_content_sql, ident
from customer_context.stores.tables import TABLES


def test_the_iceberg_schema_is_the_column_table_in_order():
    fields = TABLES["events"].schema.fields
    assert [(f.field_id, f.name, f.required) for f in fields] == [
        (i, c.name, c.required) for i, c in enumerate(EVENTS, 1)]
    assert {f.name for f in fields if str(f.field_type).startswith("timestamp")} == {
        c.name for c in EVENTS if c.timestamp}


@pytest.mark.parametrize("column", [c.name for c in EVENTS])
def test_a_trait_names_exactly_the_nameable_columns(column):
    if column in NAMEABLE_EVENT_COLUMNS:
        assert event_value(column) == ident(column)
    else:
        with pytest.raises(SpecCompileError):
            event_value(column)


def test_the_build_reads_the_content_key_and_times():
    assert set(EVENT_CONTENT) <= set(BUILD_EVENT_COLUMNS)
    assert {"message_id", "timestamp", "received_at"} <= set(BUILD_EVENT_COLUMNS)
    assert all(f"'{c}': {ident(c)}" in event_content_sql() for c in EVENT_CONTENT)
