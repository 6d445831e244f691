"""Opening a new SQL catalog while another function creates it (seen on the local stack: a 500 from a reader)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_catalog_created_by_another_writer_meanwhile_still_opens(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse
    from pyiceberg.catalog.sql import SqlCatalog
    from sqlalchemy.exc import OperationalError

    created = SqlCatalog.create_tables
    calls: list[int] = []

    def lose_the_race(self: SqlCatalog) -> None:
        # Given another writer creates the catalog's tables between our check and our CREATE TABLE
        calls.append(1)
        created(self)
        if len(calls) == 1:
            raise OperationalError("CREATE TABLE iceberg_tables", {}, Exception("table iceberg_tables already exists"))

    monkeypatch.setattr(SqlCatalog, "create_tables", lose_the_race)
    settings = Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(tmp_path), "CUSTOMER_CONTEXT_CATALOG_TYPE": "sql"})
    # When this function opens the lakehouse / Then it opens the catalog the other one made
    lakehouse = Lakehouse.from_settings(settings)
    assert lakehouse.catalog.list_namespaces() == []
    assert calls == [1]
