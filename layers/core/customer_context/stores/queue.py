"""The event queue between collect and ingest (SQS), behind a small interface.

``EventQueue.send`` either hands every body to the queue or raises :class:`QueueUnavailable`, so
collect can answer 5xx and the SDK retries (at-least-once delivery).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from customer_context.errors import QueueUnavailable
from customer_context.observability import logger


class SqsEventQueue:
    """SQS implementation: SendMessageBatch in groups of ≤ 10 entries and ≤ ``max_batch_bytes``.

    Args:
        client: A boto3 SQS client (built lazily by the composition root, customer_context.wiring).
        queue_url: The queue.
        max_batch_bytes: Largest total payload of one SendMessageBatch call.
        attempts: How often entries that failed are sent again before giving up.
    """

    def __init__(self, client: Any, queue_url: str, max_batch_bytes: int = 256 * 1024, attempts: int = 3) -> None:
        self._client = client
        self._queue_url = queue_url
        self._max_batch_bytes = max_batch_bytes
        self._attempts = attempts

    def _groups(self, bodies: list[str]) -> list[list[str]]:
        groups: list[list[str]] = []
        cur: list[str] = []
        size = 0
        for body in bodies:
            n = len(body.encode())
            if cur and (len(cur) == 10 or size + n > self._max_batch_bytes):
                groups.append(cur)
                cur, size = [], 0
            cur.append(body)
            size += n
        if cur:
            groups.append(cur)
        return groups

    def send(self, bodies: list[str]) -> None:
        """Send every body; retry failed entries with backoff; raise QueueUnavailable if any is left."""
        for group in self._groups(bodies):
            pending = {str(i): body for i, body in enumerate(group)}
            for attempt in range(self._attempts):
                try:
                    resp = self._client.send_message_batch(
                        QueueUrl=self._queue_url,
                        Entries=[{"Id": i, "MessageBody": b} for i, b in pending.items()],
                    )
                except Exception as exc:  # botocore raises many classes; all mean "not enqueued"
                    logger.warning("SQS send failed", extra={"attempt": attempt + 1, "error": str(exc)})
                else:
                    for ok in resp.get("Successful", []):
                        pending.pop(ok["Id"], None)
                    for failed in resp.get("Failed", []):
                        logger.warning("SQS entry failed", extra={"attempt": attempt + 1, "code": failed.get("Code")})
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)
            if pending:
                raise QueueUnavailable(f"{len(pending)} queue message(s) could not be sent; retry the request")


class MemoryEventQueue:
    """In-memory queue for unit tests and benchmarks of collect alone."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.fail = False

    def send(self, bodies: list[str]) -> None:
        """Keep the bodies, or raise QueueUnavailable when ``fail`` is set."""
        if self.fail:
            raise QueueUnavailable("queue unavailable (simulated)")
        self.bodies.extend(bodies)


def new_message_id() -> str:
    """A random id for messages built outside SQS (local tools)."""
    return str(uuid.uuid4())
