"""schemathesis against our own OpenAPI documents (collect, fetch, regulations) on the local stack, over HTTP.

Cases come from docs/openapi/*.json (the documents `make openapi` writes and a test keeps current): the documents'
examples, then fuzzing with data that fits the schemas and data that breaks them, derandomized from a fixed seed with
a fixed number of examples per operation, so CI sends the same requests each run. (The coverage phase is off: it
sends ~180 requests per operation regardless of the bound.) Every response must be below 500, every 4xx must say
why in JSON, valid data must be accepted and invalid data refused, and responses must match the documented status
codes, content types and schemas; a request without the key must be refused.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import Case, CheckContext

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
SEED = 20261201
MAX_EXAMPLES = 15


def _schema(name: str, *, semantic_400: bool = False) -> Any:
    # A method no route declares is answered by API Gateway's router (404 "Not Found"), not by our code or
    # documents; the local HTTP API does the same. 405 with `Allow` is not something we can deploy.
    checks: dict[str, Any] = {"unsupported_method": {"enabled": False}}
    if semantic_400:
        # An identifier value is normalised by its type (a phone number keeps its digits): one that normalises to
        # nothing is a 400 naming it, and which values do depends on the type, which JSON Schema cannot say for a
        # path or a {type, value} pair. Schema-valid data may therefore get that 400 (with its reason, checked below).
        checks["positive_data_acceptance"] = {"expected-statuses": ["2xx", "304", "400", "401", "403", "404"]}
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": False}},
        "checks": checks,
        "request-timeout": 30,
    })
    return schemathesis.openapi.from_path(DOCS / f"{name}.json", config=config)


COLLECT = _schema("collect")
FETCH = _schema("fetch_context", semantic_400=True)
REGULATE = _schema("regulate", semantic_400=True)
QUERY = _schema("query_context", semantic_400=True)


def error_says_why(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """Every 4xx is JSON with a non-empty ``message`` (what the SDKs and people read; a JSON-RPC error's)."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.content[:200]!r}") from None
    if isinstance(body, dict) and body.get("jsonrpc") == "2.0":  # /mcp answers JSON-RPC errors
        body = body.get("error")
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip(), (
        f"{response.status_code} without a reason: {body!r}")
    return True


def _create_key(data_dir: Path, *args: str) -> str:
    """A consumer key made the way an operator makes one: `customer-context keys create` against the running stack
    (the CLI's own entry point, in this process: a second interpreter would only add its start-up time)."""
    from customer_context_devtools.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["keys", "create", "--data-dir", str(data_dir), *args]) == 0
    return str(json.loads(out.getvalue())["key"])


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Overrides the conftest's per-test reset: one stack serves the whole module, and its handlers' clients
    stay warm between cases (the stack resets the caches when it starts)."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("schemathesis"), write_keys={"wk_fuzz": "fuzz"},
                    batch_window=0.2) as running:
        running.reader_key = _create_key(running.data_dir, "--consumer", "fuzz-reader", "--sections", "*")
        running.admin_key = _create_key(running.data_dir, "--consumer", "fuzz-admin", "--admin")
        # the keys open their APIs (else every case would stop at a documented 401 and prove nothing)
        assert requests.post(f"{running.url}/v1/track", json={"userId": "u", "event": "e"}, auth=("wk_fuzz", ""),
                             timeout=60).status_code == 200
        # … and its ingest ends before any case is generated: the ingest function's first import (pyarrow, numpy)
        # in a stack thread would otherwise race hypothesis, which reads numpy from sys.modules half-imported
        assert running.wait_for_ingest(120)
        assert requests.get(f"{running.url}/v1/tools", headers=_bearer(running.reader_key), timeout=60).ok
        assert requests.get(f"{running.url}/v1/tracking-plans", headers=_bearer(running.admin_key), timeout=60).ok
        yield running


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@COLLECT.parametrize()
def test_collect_api(case: Case, stack: Any, session: requests.Session) -> None:
    basic = "Basic " + base64.b64encode(f"{stack.write_key}:".encode()).decode()
    case.call_and_validate(base_url=stack.url, session=session, headers={"Authorization": basic},
                           additional_checks=[error_says_why])


@FETCH.parametrize()
def test_fetch_api(case: Case, stack: Any, session: requests.Session) -> None:
    case.call_and_validate(base_url=stack.url, session=session, headers=_bearer(stack.reader_key),
                           additional_checks=[error_says_why])


@REGULATE.parametrize()
def test_regulation_api(case: Case, stack: Any, session: requests.Session) -> None:
    case.call_and_validate(base_url=stack.url, session=session, headers=_bearer(stack.admin_key),
                           additional_checks=[error_says_why])


@QUERY.parametrize()
def test_query_and_replay_api(case: Case, stack: Any, session: requests.Session) -> None:
    case.call_and_validate(base_url=stack.url, session=session, headers=_bearer(stack.reader_key),
                           additional_checks=[error_says_why])
