"""The serving audit's background thread keeps retrying a failing queue until its log is closed (a test or the
local stack replacing it), and never after: it used to log a failed flush, with a stack trace, into later tests."""

from __future__ import annotations

import time
from typing import Any

from customer_context.serve.audit import AuditLog


class _DownQueue:
    def __init__(self) -> None:
        self.calls = 0

    def send(self, bodies: Any) -> None:
        self.calls += 1
        raise ConnectionError("queue gone")


def test_a_closed_log_stops_retrying_and_keeps_its_records() -> None:
    queue = _DownQueue()
    log = AuditLog(queue, flush_seconds=0.01)
    log.record(consumer="c", via="fetch", identifier=("user_id", "u1"), profile_id="p1")
    deadline = time.monotonic() + 10
    while queue.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.calls >= 2  # retried while open
    log.close()
    assert log._thread is not None
    log._thread.join(5)
    assert not log._thread.is_alive()
    calls = queue.calls
    time.sleep(0.1)
    assert queue.calls == calls and len(log.pending()) == 1
