"""The customer-context CLI: serve prints its URL and key and answers; sql queries the lakehouse;
bad input gives a message, not a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context_devtools.cli import main

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "customer_context_devtools.cli"]


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
    from customer_context_devtools.local.stack import load_write_keys

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


# --------------------------------------------------------------------------------------------- smoke tests
# Each command as a user runs it: a subprocess of the installed entry point, small sizes.

REPO = Path(__file__).resolve().parents[2]
ENTRY = [str(Path(sys.prefix) / "bin" / "customer-context")]


def _run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _json_out(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document a command printed last (progress lines come first)."""
    out = proc.stdout
    return json.loads(out[out.index("\n{") + 1 if not out.startswith("{") else 0:])


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make demo` with 40 customers: the Makefile target, the `demo` command, the whole chain."""
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    venv = Path(sys.prefix)
    # -o: the virtualenv running this test is the one to use; make must not rebuild it
    proc = subprocess.run(["make", "-C", str(REPO), "-o", f"{venv}/.installed", "demo", f"VENV={venv}",
                           f"DEMO_FLAGS=--customers 40 --data-dir {data_dir}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "✓ accounting: sent" in proc.stdout and "✓ demo finished" in proc.stdout, proc.stdout[-3000:]
    assert "rebuilding with no new data: 0 DynamoDB items written" in proc.stdout
    # and a build after more events reads only them (unless their hour is past the first build's: then in full)
    assert re.search(r"building again after 21 more events: (incremental build \(events gained \d+ rows\)|full "
                     r"build \(.*clock)", proc.stdout), proc.stdout[-3000:]
    assert re.search(r"as the agent does .*: http://127\.0\.0\.1:\d+/explorer#email:[^\s@]+%40", proc.stdout), \
        "the demo prints no explorer link for its customer"
    return data_dir


def test_make_demo_runs_the_whole_chain_at_a_small_size(demo_dir: Path) -> None:
    # the demo's lakehouse holds the events it sent, its records and the built state
    proc = _run("sql", "select count(*) n from identity_graph", "--json", "--data-dir", str(demo_dir))
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["n"] > 40


def test_maintain_on_the_demo_lakehouse(demo_dir: Path) -> None:
    def counts() -> dict[str, int]:
        proc = _run("sql", "select (select count(*) from events) events, (select count(*) from identity_graph) "
                    "graph, (select count(*) from crm_contacts) crm", "--json", "--data-dir", str(demo_dir))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)[0]

    before = counts()
    # When maintain compacts every partition of two files or more in the demo's lakehouse
    proc = _run("maintain", "--min-files", "2", "--data-dir", str(demo_dir))
    # Then it goes over every table, the empty ones included, and compacts the events' partitions
    assert proc.returncode == 0, proc.stderr
    report = _json_out(proc)
    assert {"events", "identity_graph", "identity_rejected_edges", "profile_state", "crm_contacts"} <= set(report)
    assert report["events"]["partitions"] >= 1 and report["events"]["files_after"] < report["events"]["files_before"]
    # And every row is still there
    assert counts() == before


def test_fit_scores_prints_parameters_and_refuses_bad_files(tmp_path: Path) -> None:
    # Given per-customer summaries (BG/NBD's frequency, recency, T and the mean repeat value)
    good = tmp_path / "customers.csv"
    rows = ["frequency,recency,T,monetary_value"]
    for i in range(60):
        x = i % 5
        rows.append(f"{x},{(i % 7) * x * 3},{60 + i},{0 if x == 0 else 20 + (i * 7) % 31}")
    good.write_text("\n".join(rows) + "\n")
    # When fit-scores reads it
    proc = _run("fit-scores", str(good))
    # Then it prints the fitted parameters as JSON
    assert proc.returncode == 0, proc.stderr
    fit = json.loads(proc.stdout)
    assert fit["customers"] == 60 and fit["repeat_customers"] == 48
    assert set(fit["bgnbd"]) == {"r", "alpha", "a", "b"} and set(fit["gamma_gamma"]) == {"p", "q", "v"}
    # And a malformed file is one line naming the row and column, exit status 2
    bad = tmp_path / "bad.csv"
    bad.write_text("frequency,recency,T\n1,2,3\n1,x,3\n")
    proc = _run("fit-scores", str(bad))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "row 2" in proc.stderr
    assert "'recency'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """`customer-context serve` in its own process (builds on demand only); yields (url, read key, data dir)."""
    data_dir = tmp_path / "d"
    env = dict(os.environ, CUSTOMER_CONTEXT_WRITE_KEYS="wk_cli=cli", CUSTOMER_CONTEXT_BUILD_INTERVAL_SECONDS="0")
    proc = subprocess.Popen([*ENTRY, "serve", "--port", "0", "--data-dir", str(data_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert lines[0].startswith("customer-context local stack ready at "), lines
        url = lines[0].rsplit(" ", 1)[-1].strip()
        read_key = lines[2].split(":", 1)[1].split()[0]
        yield url, read_key, data_dir
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _until(check: Any, what: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.2)


def test_load_and_build_land_in_the_running_stack_and_keys_are_managed(served: Any) -> None:
    url, read_key, data_dir = served
    # Given a customer's events sent to the running stack and ingested
    events = [{"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}},
              {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 12.5}}]
    assert requests.post(f"{url}/v1/batch", json={"batch": events}, auth=("wk_cli", ""), timeout=10).status_code == 200

    def ingested() -> bool:
        proc = _run("sql", "select count(*) n from events", "--json", "--data-dir", str(data_dir))
        return proc.returncode == 0 and json.loads(proc.stdout)[0]["n"] == 2

    _until(ingested, "ingest of the 2 events")
    # and a CRM row about them loaded from a file
    crm = data_dir.parent / "crm.csv"
    crm.write_text("contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
                   "C-1,U1@example.com,Una One,vip,Tom,2026-11-01T00:00:00Z\n")
    loaded = _run("load", str(crm), "--table", "crm_contacts", "--data-dir", str(data_dir))
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["loaded"] == 1
    headers = {"authorization": f"Bearer {read_key}"}
    before = requests.get(f"{url}/v1/context/user_id/u1", headers=headers, timeout=10).json()
    assert "traits" not in before.get("context", {}), "nothing is built yet: only the live tail answers"
    # When `customer-context build` runs in another process, finding the stack through stack.json
    built = _run("build", "--data-dir", str(data_dir))
    # Then it lands the customer's snapshot in that stack's DynamoDB, served at once
    assert built.returncode == 0, built.stderr
    assert _json_out(built)["changed_profiles"] == 1
    after = requests.get(f"{url}/v1/context/user_id/u1", headers=headers, timeout=10).json()
    assert after["context"]["traits"]["orders_90d"] == 1
    assert after["context"]["records"]["crm_contacts"]["contact_id"] == "C-1"

    # When a scoped key is created for the running stack, it reads what its scope allows
    created = _run("keys", "create", "--consumer", "smoke-bot", "--fields", "traits.orders_90d",
                   "--data-dir", str(data_dir))
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    scoped = requests.get(f"{url}/v1/context/user_id/u1", headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert scoped.status_code == 200 and scoped.json()["context"] == {"traits": {"orders_90d": 1}}
    # And only a key made with --audit (or an admin key) reads the serving audit
    auditor = _run("keys", "create", "--consumer", "auditor", "--sections", "*", "--audit", "--data-dir", str(data_dir))
    audit_key = json.loads(auditor.stdout)["key"]
    trail = requests.get(f"{url}/v1/context/user_id/u1/audit", headers={"authorization": f"Bearer {audit_key}"},
                         timeout=30)
    assert trail.status_code == 200 and trail.json()["profile_id"], trail.text
    refused = requests.get(f"{url}/v1/context/user_id/u1/audit", headers={"authorization": f"Bearer {key}"},
                           timeout=30)
    assert refused.status_code == 403 and "--audit" in refused.json()["message"]
    # And `keys list` shows it (by its SHA-256, never the key), `keys revoke` removes it everywhere
    listed = [json.loads(line) for line in _run("keys", "list", "--data-dir", str(data_dir)).stdout.splitlines()]
    mine = [k for k in listed if k["consumer"] == "smoke-bot"]
    assert len(mine) == 1 and mine[0]["fields"] == ["traits.orders_90d"] and key not in json.dumps(listed)
    assert not mine[0]["audit"] and [k["audit"] for k in listed if k["consumer"] == "auditor"] == [True]
    revoked = _run("keys", "revoke", "--key", key, "--data-dir", str(data_dir))
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked"] == mine[0]["key_sha256"]
    listed = [json.loads(line) for line in _run("keys", "list", "--data-dir", str(data_dir)).stdout.splitlines()]
    assert "smoke-bot" not in {k["consumer"] for k in listed}
    from customer_context_devtools.local.stack import load_consumers

    assert mine[0]["key_sha256"] not in load_consumers(data_dir)  # the next `serve` does not load it either
