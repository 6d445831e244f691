"""The serving path stays lean: collect imports neither pyarrow, duckdb nor pyiceberg (cold start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HEAVY = ("pyarrow", "duckdb", "pyiceberg", "sqlalchemy", "pydantic_settings")


def heavy_imports_of(app: Path) -> list[str]:
    """Heavy top-level packages loaded by importing ``app`` in a fresh interpreter."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('app', r'{app}')\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "POWERTOOLS_TRACE_DISABLED": "true"})
    return json.loads(out.stdout)


def test_collect_handler_imports_no_analytics_package() -> None:
    assert heavy_imports_of(REPO / "functions" / "collect" / "app.py") == []


def test_the_check_catches_a_heavy_import(tmp_path: Path) -> None:
    # Given a handler that imports the lakehouse store at module level
    app = tmp_path / "app.py"
    app.write_text("import customer_context.stores.iceberg\nimport customer_context.stores.tables\n")
    # Then the check reports it
    assert "pyiceberg" in heavy_imports_of(app)
