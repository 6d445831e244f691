"""The serving path stays lean: collect imports neither pyarrow, duckdb nor pyiceberg (cold start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_fetch_context_handler_imports_no_analytics_package() -> None:
    assert heavy_imports_of(REPO / "functions" / "fetch_context" / "app.py") == []


def _run_fresh(code: str, **env: str) -> list[Any]:
    """Run ``code`` in a fresh interpreter (no tracing, metrics or logs below ERROR); its last line, as JSON."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": "", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
                              "POWERTOOLS_LOG_LEVEL": "ERROR", **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_fetch_context_serving_requests_imports_no_analytics_package() -> None:
    # Given the fetch handler in a fresh interpreter over an in-memory store with one customer
    code = f"""
import importlib.util, json, sys
sys.path.insert(0, r'{REPO}')
from customer_context import wiring
from customer_context.stores.context_store import MemoryContextStore, SnapshotItem
from customer_context.serve.consumers import consumer_item, hash_key
store = MemoryContextStore()
store.put_consumer(hash_key('ck_sample_consumer_key'), consumer_item('t', ['*'], []))
store.put_snapshots([SnapshotItem('p1', json.dumps({{'profile_id': 'p1', 'traits': {{'orders_90d': 2}},
                                  'scores': {{'churn_risk': 0.1}}}}), 'h', 1, '2026-11-24T12:00:00+00:00', None)])
store.put_aliases([('email', 'ada@example.com', 'p1'), ('user_id', 'u_000001', 'p1')])
wiring.context_store = lambda: store
wiring.write_keys = lambda: None
spec = importlib.util.spec_from_file_location('app', r'{REPO / "functions" / "fetch_context" / "app.py"}')
app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app)
from customer_context_devtools.local.lambda_runtime import LocalLambdaContext
statuses = []
for name in ('fetch_context_get', 'fetch_context_text', 'fetch_context_batch', 'fetch_context_mcp'):
    event = json.load(open(r'{REPO / "events"}/' + name + '.json'))
    statuses.append(app.lambda_handler(event, LocalLambdaContext('fetch_context'))['statusCode'])
print(json.dumps([statuses, sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))]))
"""
    statuses, heavy = _run_fresh(code)
    # When it answers a field lookup, prompt text, a batch and an MCP tools/list
    # Then every request succeeded and nothing heavy was imported
    assert statuses == [200, 200, 200, 200]
    assert heavy == []


def _zip_functions() -> dict[str, Path]:
    """Every zip function of the template (the ones with only the core layer: no room for the analytics
    dependencies) and its handler file."""
    from cfnlint.decode import decode

    template, matches = decode(str(REPO / "template.yaml"))
    assert not matches, matches
    out = {}
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::Serverless::Function" and props.get("PackageType", "Zip") == "Zip":
            module = props["Handler"].rpartition(".")[0]
            out[name] = REPO / props["CodeUri"] / f"{module}.py"
    return out


def test_every_zip_function_of_the_template_imports_no_analytics_package() -> None:
    # Given every function the template deploys as a zip with the core layer
    functions = _zip_functions()
    assert {"CollectFunction", "FetchContextFunction"} <= set(functions)
    # Then none of their handlers imports an analytics package
    assert {name: heavy_imports_of(app) for name, app in functions.items()} == {name: [] for name in functions}


def test_collect_serving_requests_imports_no_analytics_package() -> None:
    # Given the collect handler in a fresh interpreter with a write key and an in-memory queue
    code = f"""
import importlib.util, json, sys
sys.path.insert(0, r'{REPO}')
from customer_context import wiring
from customer_context.stores.queue import MemoryEventQueue
queue = MemoryEventQueue()
wiring.event_queue = lambda: queue
spec = importlib.util.spec_from_file_location('app', r'{REPO / "functions" / "collect" / "app.py"}')
app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app)
from customer_context_devtools.local.lambda_runtime import LocalLambdaContext
statuses = []
for name in ('collect_track', 'collect_batch', 'collect_batch_gzip', 'collect_invalid_json'):
    event = json.load(open(r'{REPO / "events"}/' + name + '.json'))
    statuses.append(app.lambda_handler(event, LocalLambdaContext('collect'))['statusCode'])
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))
print(json.dumps([statuses, len(queue.bodies), heavy]))
"""
    statuses, queued, heavy = _run_fresh(code, CUSTOMER_CONTEXT_WRITE_KEYS="wk_sample=sample")
    # When it accepts a track, a batch, a gzipped batch and refuses a broken body
    # Then the events were queued and nothing heavy was imported
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 400
    assert queued >= 3
    assert heavy == []


def test_fetch_context_loads_openapi_models_only_for_its_documentation() -> None:
    # Given the fetch handler imported in a fresh interpreter
    code = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location('app', r'{REPO / "functions" / "fetch_context" / "app.py"}')
app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app)
models = 'aws_lambda_powertools.event_handler.openapi.models'
at_import = models in sys.modules
from customer_context_devtools.local.lambda_runtime import LocalLambdaContext
event = json.load(open(r'{REPO / "events" / "fetch_context_get.json"}'))
event.update(rawPath='/docs/context', routeKey='$default', queryStringParameters=None, rawQueryString='')
event['requestContext']['http'].update(path='/docs/context')
answer = app.lambda_handler(event, LocalLambdaContext('fetch_context'))
print(json.dumps([at_import, answer['statusCode'], 'swagger' in answer['body'].lower(), models in sys.modules]))
"""
    at_import, status, swagger, after_docs = _run_fresh(code)
    # Then importing it did not load Powertools' OpenAPI models (~35 ms of cold start) …
    assert at_import is False
    # … and its Swagger UI is still served, declared on the first request for it
    assert (status, swagger, after_docs) == (200, True, True)
