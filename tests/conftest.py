"""Shared fixtures: settings isolation, a SQLite-catalog lakehouse, moto's server, the local stack."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

# Property tests draw the same examples on every run (a seed derived from each test), so a red run in CI is
# red again on any machine; no example database, so nothing a previous run left behind changes what runs.
# Exploring with fresh random examples is a choice: HYPOTHESIS_PROFILE=random, or --hypothesis-profile=random
# (then --hypothesis-seed=N replays a run; see docs/development.md).
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("random", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def load_event(name: str) -> dict[str, Any]:
    """A sample event from ``events/``."""
    return json.loads((EVENTS / name).read_text())


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Every test starts with no cached settings or stores."""
    from customer_context import wiring

    wiring.reload_from_environment()
    yield
    wiring.reload_from_environment()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """monkeypatch; after changing variables the caller runs `wiring.reload_from_environment()`."""
    return monkeypatch


@pytest.fixture
def lakehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real lakehouse: SqlCatalog on SQLite with a file:// warehouse under tmp_path."""
    from customer_context import wiring

    monkeypatch.setenv("CUSTOMER_CONTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CUSTOMER_CONTEXT_CATALOG_TYPE", "sql")
    wiring.reload_from_environment()
    return wiring.lakehouse()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's server on loopback, for the whole session (real HTTP, like the local stack)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 at moto's server with dummy credentials."""
    from customer_context import wiring

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    wiring.reload_from_environment()
    return moto_url


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[Any]:
    """The embedded local stack on a free port, with write key ``wk_test`` for source ``test``."""
    from customer_context_devtools.local.stack import LocalStack

    stack = LocalStack(tmp_path / "stack", write_keys={"wk_test": "test"}, visibility_timeout=2,
                       max_receive_count=3, batch_window=0.2)
    stack.start()
    yield stack
    stack.stop()
