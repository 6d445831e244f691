"""The local stack keeps what it acknowledged and what governs privacy across a restart and a SIGKILL:
queued events (and spooled ones) land after the restart, served contexts are still served, suppressions
still drop a suppressed customer's events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context.config import Settings
from customer_context.serve.consumers import consumer_item, hash_key
from customer_context.stores.iceberg import Lakehouse

pytestmark = pytest.mark.slow

WRITE_KEY = "wk_persist"


def _landed(data_dir: Path) -> dict[str, dict[str, Any]]:
    lake = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(data_dir)}))
    if "events" not in lake.table_names():
        return {}
    return {r["message_id"]: r for r in lake.scan("events", selected_fields=("message_id", "user_id")).to_pylist()}


def _serve(data_dir: Path, **env: str) -> tuple[subprocess.Popen[str], str]:
    """`customer-context serve` in a child process; returns it and its URL once it says it is ready."""
    child = subprocess.Popen(
        [sys.executable, "-m", "customer_context_devtools.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CUSTOMER_CONTEXT_BUILD_INTERVAL_SECONDS": "0", **env})
    assert child.stdout is not None
    for line in child.stdout:
        if "local stack ready at " in line:
            threading.Thread(target=lambda: [None for _ in child.stdout], daemon=True).start()  # type: ignore[union-attr]
            return child, line.rsplit(" ", 1)[-1].strip()
    raise AssertionError(f"serve exited ({child.wait()}) before it was ready")


def _admin(data_dir: Path) -> str:
    """An admin key, in the data dir's config.toml (the stack loads it at start)."""
    from customer_context_devtools.local.stack import save_consumer

    save_consumer(data_dir, hash_key("ck_admin_persist"), consumer_item("dpo", [], [], admin=True))
    return "ck_admin_persist"


def test_a_sigkill_during_a_burst_loses_no_acknowledged_event_and_no_suppression(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "config.toml").write_text(f'[write_keys]\n"{WRITE_KEY}" = "web"\n')
    admin = _admin(data_dir)
    # Given a stack whose ingest cannot reach the lakehouse (its catalog points nowhere), so every event it
    # acknowledges is still only in the queue (or the spool) when it dies
    child, url = _serve(data_dir, CUSTOMER_CONTEXT_CATALOG_URI="sqlite:////nonexistent-dir/catalog.db")
    try:
        # and a customer suppressed through the API
        filed = requests.post(f"{url}/v1/regulations", headers={"authorization": f"Bearer {admin}"}, timeout=30,
                              json={"regulationType": "suppress", "users": [{"userId": "gone"}]})
        assert filed.status_code == 202, filed.text
        # When a burst of batches is sent from four clients, one with an event too large for a queue message,
        # and the stack is SIGKILLed once half of them are acknowledged
        acked: list[str] = []
        lock = threading.Lock()
        half = threading.Event()
        batches = [[{"type": "track", "userId": f"u{b}-{i}", "event": "Burst", "messageId": f"m-{b}-{i}",
                     "properties": {"blob": "x" * (300_000 if (b, i) == (3, 0) else 10)}} for i in range(50)]
                   for b in range(40)]

        def send(mine: list[list[dict[str, Any]]]) -> None:
            for batch in mine:
                try:
                    answer = requests.post(f"{url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""), timeout=30)
                except requests.RequestException:
                    return  # the stack is gone: not acknowledged
                if answer.status_code == 200:
                    with lock:
                        acked.extend(e["messageId"] for e in batch)
                        if len(acked) >= 20 * 50:
                            half.set()

        senders = [threading.Thread(target=send, args=(batches[n::4],)) for n in range(4)]
        for sender in senders:
            sender.start()
        assert half.wait(300), "half the burst was never acknowledged"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(60)
        for sender in senders:
            sender.join(60)
        with lock:
            acknowledged = set(acked)
        # (nothing could land before the kill: every acknowledged event was in moto's memory only)
        assert "m-3-0" in acknowledged and _landed(data_dir) == {}
    finally:
        if child.poll() is None:
            child.kill()

    # When the stack starts again on the same data dir, its lakehouse reachable
    child, url = _serve(data_dir)
    try:
        # Then every acknowledged event lands (the oversized one from the spool too) …
        landed: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 300
        while not acknowledged <= landed.keys() and time.monotonic() < deadline:
            time.sleep(1)
            landed = _landed(data_dir)
        missing = acknowledged - landed.keys()
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged events lost: {sorted(missing)[:3]}"
        # … and the suppression still holds: the suppressed customer's new events are acknowledged and dropped
        after = [{"type": "track", "userId": "gone", "event": "Back", "messageId": "m-gone"},
                 {"type": "track", "userId": "stays", "event": "Here", "messageId": "m-stays"}]
        answer = requests.post(f"{url}/v1/batch", json={"batch": after}, auth=(WRITE_KEY, ""), timeout=30)
        assert answer.status_code == 200 and answer.json()["accepted"] == 2
        deadline = time.monotonic() + 120
        while "m-stays" not in landed and time.monotonic() < deadline:
            time.sleep(1)
            landed = _landed(data_dir)
        assert "m-stays" in landed and "m-gone" not in landed
        status = requests.get(f"{url}/v1/regulations/{filed.json()['id']}", timeout=10,
                              headers={"authorization": f"Bearer {admin}"}).json()
        assert status["status"] == "done"
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(120)


def test_a_restarted_stack_still_serves_what_it_built(tmp_path: Path) -> None:
    from customer_context_devtools.local.stack import LocalStack

    data_dir = tmp_path / "data"
    # Given a stack that built a customer, then stopped
    with LocalStack(data_dir, write_keys={WRITE_KEY: "web"}, batch_window=0.2) as stack:
        batch = [{"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com"}},
                 {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"revenue": 9}}]
        assert requests.post(f"{stack.url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""),
                             timeout=10).status_code == 200
        assert stack.wait_for_ingest(60)
        stack.build()
        key = stack.consumer_key
        before = requests.get(f"{stack.url}/v1/context/email/ann@example.com",
                              headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert before.status_code == 200
    # When it starts again on the same data dir
    with LocalStack(data_dir, write_keys={WRITE_KEY: "web"}, batch_window=0.2) as stack:
        # Then the customer is served from the landed snapshot, before any build
        after = requests.get(f"{stack.url}/v1/context/email/ann@example.com",
                             headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert after.status_code == 200, after.text
        assert json.loads(after.text)["context"] == json.loads(before.text)["context"]
        assert stack.restored["dynamodb_writes"] > 0


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_moto_process_ends_when_the_stack_is_sigkilled(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "config.toml").write_text(f'[write_keys]\n"{WRITE_KEY}" = "web"\n')
    # Given a stack served in its own process, moto in a child process of it
    child, url = _serve(data_dir)
    moto_pid = int(json.loads((data_dir / "stack.json").read_text())["moto_pid"])
    try:
        assert requests.post(f"{url}/v1/batch", json={"batch": [{"type": "track", "userId": "u", "event": "E"}]},
                             auth=(WRITE_KEY, ""), timeout=30).status_code == 200
        assert _running(moto_pid)
        # When the stack's process is SIGKILLed: it cannot stop its child
        os.kill(child.pid, signal.SIGKILL)
        child.wait(60)
        # Then the moto process ends on its own (its stdin closed), instead of serving on as an orphan
        deadline = time.monotonic() + 60
        while _running(moto_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(moto_pid)
    finally:
        if child.poll() is None:
            child.kill()
        if _running(moto_pid):
            os.kill(moto_pid, signal.SIGKILL)
