"""The serving audit: who was served what about which customer, and when — never the values.

Every fetch, batch lookup, tool call, named query and replay read (history, replay, identity) adds a record
(consumer, via, profile, identifier used, sections and field paths returned, snapshot version, status). The
identifier is kept as the PII policy's keyed token of its lookup form (:meth:`PiiPolicy.audit_value`), never
in the clear: a lookup by a deleted customer's email leaves no copy of it (``customer-context audit`` hashes
its query the same way); a ``profile_id`` is kept as it is. Records are buffered in the container and sent
to the events queue in one message per batch by a background thread, off the response's critical path;
ingest writes them to the ``serving_audit`` Iceberg table (one commit per batch, like events). A container
keeps at most ``flush_seconds`` of records in memory; each invocation first flushes what an earlier one
left, so only a container reclaimed within that window can lose its last records.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from customer_context.observability import logger
from customer_context.ports import JsonObject

if TYPE_CHECKING:
    from customer_context.pii import PiiPolicy
    from customer_context.ports import EventQueue

MAX_RECORDS_PER_MESSAGE = 200


def audit_identifier(pii: PiiPolicy | None, id_type: str, lookup_value: str) -> str:
    """What the audit keeps of an identifier: a profile id as it is, anything else as the policy's keyed
    token (empty without a key)."""
    if id_type == "profile_id":
        return lookup_value
    return pii.audit_value(lookup_value) if pii is not None else ""


class AuditLog:
    """Buffers audit records and sends them to the queue in batches.

    Args:
        queue: The events queue (``send(bodies)``); ``None`` keeps records in memory only (tests).
        flush_seconds: How long a record may wait in the buffer.
        pii: The PII policy whose keyed hash stands for identifiers (none, or no key: they are not kept).
    """

    def __init__(self, queue: EventQueue | None, flush_seconds: float = 0.5, pii: PiiPolicy | None = None) -> None:
        self.queue = queue
        self.pii = pii
        self.flush_seconds = flush_seconds
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def record(self, *, consumer: str, via: str, identifier: tuple[str, str], profile_id: str | None,
               sections: list[str] | tuple[str, ...] = (), fields: list[str] | tuple[str, ...] = (),
               snapshot_version: int | None = None, status: int = 200) -> None:
        """Add one record (cheap: no I/O here). ``identifier`` is the lookup form (normalised, hashed
        where the policy hashes)."""
        rec = {"audit_id": str(uuid.uuid4()), "at": datetime.now(UTC).isoformat(), "consumer": consumer,
               "via": via, "profile_id": profile_id, "identifier_type": identifier[0],
               "identifier_value": audit_identifier(self.pii, *identifier), "sections": list(sections),
               "fields": list(fields), "snapshot_version": snapshot_version, "status": status}
        with self._lock:
            self._buffer.append(rec)
        self._start()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="audit-flush", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - kept for the next flush; never breaks serving
                logger.exception("serving audit flush failed; records kept for the next attempt")

    def flush(self) -> int:
        """Send what is buffered now; returns how many records were sent."""
        with self._lock:
            records, self._buffer = self._buffer, []
        if not records:
            return 0
        if self.queue is None:
            with self._lock:
                self._buffer[:0] = records
            return 0
        from customer_context.envelope import audit_body

        try:
            bodies = [audit_body(records[i:i + MAX_RECORDS_PER_MESSAGE])
                      for i in range(0, len(records), MAX_RECORDS_PER_MESSAGE)]
            self.queue.send(bodies)
        except Exception:
            with self._lock:
                self._buffer[:0] = records
            raise
        self.sent += len(records)
        return len(records)

    def close(self) -> None:
        """Stop the background thread after its current pass (what is still buffered stays in :meth:`pending`).
        A container's log runs until the container ends; the local stack and the tests close the one they
        replace."""
        self._stop.set()
        self._wake.set()

    def pending(self) -> list[JsonObject]:
        """Records not sent yet (tests)."""
        with self._lock:
            return list(self._buffer)

    def wait_flushed(self, timeout: float = 10.0) -> bool:
        """Block until the buffer is empty (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            with self._lock:
                if not self._buffer:
                    return True
            time.sleep(0.02)
        return False
