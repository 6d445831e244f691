"""The customer-context CLI: serve prints its URL and key and answers; sql queries the lakehouse;
bad input gives a message, not a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context.cli import main

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "customer_context.cli"]


def test_sql_over_the_lakehouse(local_stack: Any, capsys: pytest.CaptureFixture[str]) -> None:
    batch = [{"type": "track", "event": "Viewed", "userId": "u1", "messageId": f"cli-{i}"} for i in range(3)]
    batch.append({"type": "identify", "anonymousId": "a1", "messageId": "cli-3"})
    requests.post(f"{local_stack.url}/v1/batch", json={"batch": batch}, auth=(local_stack.write_key, ""), timeout=10)
    assert local_stack.wait_for_ingest(60)
    data_dir = str(local_stack.data_dir)
    assert main(["sql", "select type, count(*) n from events_unique group by 1 order by 1", "--json",
                 "--data-dir", data_dir]) == 0
    assert json.loads(capsys.readouterr().out) == [{"type": "identify", "n": 1}, {"type": "track", "n": 3}]
    assert main(["sql", "select count(*) from events", "--data-dir", data_dir]) == 0
    assert "(1 row)" in capsys.readouterr().out


def test_sql_errors_are_messages(local_stack: Any, tmp_path: Path) -> None:
    requests.post(f"{local_stack.url}/v1/track", json={"event": "x", "userId": "u"},
                  auth=(local_stack.write_key, ""), timeout=10)
    assert local_stack.wait_for_ingest(60)
    bad = subprocess.run([*CLI, "sql", "select nope from events", "--data-dir", str(local_stack.data_dir)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert "tables: events" in bad.stderr
    empty = subprocess.run([*CLI, "sql", "select 1", "--data-dir", str(tmp_path / "nothing")],
                           capture_output=True, text=True)
    assert empty.returncode != 0 and "no lakehouse at" in empty.stderr and "Traceback" not in empty.stderr


def test_serve_prints_url_and_key_then_accepts_events(tmp_path: Path) -> None:
    env = dict(os.environ, CUSTOMER_CONTEXT_WRITE_KEYS="wk_cli=cli")
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--data-dir", str(tmp_path / "d")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("customer-context local stack ready at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[-1].strip()
        assert "wk_cli" in proc.stdout.readline()  # type: ignore[union-attr]
        ok = requests.post(f"{url}/v1/track", json={"event": "Signed Up", "userId": "u1"}, auth=("wk_cli", ""),
                           timeout=10)
        assert ok.status_code == 200 and ok.json()["accepted"] == 1
        assert requests.post(f"{url}/v1/track", json={}, auth=("nope", ""), timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_serve_generates_and_keeps_a_key_when_none_is_configured(tmp_path: Path) -> None:
    from customer_context.local.stack import load_write_keys

    first, origin = load_write_keys(tmp_path, environ={})
    again, origin_again = load_write_keys(tmp_path, environ={})
    assert first == again and list(first.values()) == ["local"]
    assert origin.endswith("(generated)") and origin_again.endswith("config.toml")


def test_bad_config_file_is_a_message(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[write_keys\n")
    env = {k: v for k, v in os.environ.items() if k != "CUSTOMER_CONTEXT_WRITE_KEYS"}
    proc = subprocess.run([*CLI, "serve", "--port", "0", "--data-dir", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and "Traceback" not in proc.stderr
