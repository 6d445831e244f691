"""The SQS → Lambda event source mapping, as AWS runs it, for the local stack.

Polls the queue, gathers up to ``batch_size`` messages (and 6 MB) within ``batch_window`` seconds, invokes
the handler with the exact SQS event shape, deletes the messages that succeeded, and leaves the
ones reported in ``batchItemFailures`` (or all, if the handler raised) to become visible again;
the queue's redrive policy moves repeat failures to the dead-letter queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from customer_context.observability import logger

# Lambda's synchronous invocation payload limit: the event source mapping never delivers more at once
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event the SQS event source mapping delivers for ``messages`` (from ReceiveMessage)."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", str(int(time.time() * 1000))),
                    "SenderId": m.get("Attributes", {}).get("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
                    "ApproximateFirstReceiveTimestamp": m.get("Attributes", {}).get(
                        "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))),
                },
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class SqsTrigger:
    """A background poller invoking ``handler`` with SQS batches.

    Args:
        sqs: A boto3 SQS client.
        queue_url: The queue to poll.
        handler: Called with the SQS event; returns ``{"batchItemFailures": [...]}`` or raises.
        batch_size: At most this many messages per invocation (AWS: up to 10,000 with a batching window).
        batch_window: Seconds to gather a batch (AWS's MaximumBatchingWindowInSeconds).
    """

    def __init__(self, sqs: Any, queue_url: str, handler: Callable[[dict[str, Any]], Any],
                 batch_size: int = 10, batch_window: float = 0.5, region: str = "us-east-1") -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.region = region
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.invocations = 0
        self.failures = 0
        self._busy = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-trigger", daemon=True)

    def start(self) -> None:
        """Start polling in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current invocation."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _receive(self) -> list[dict[str, Any]]:
        """One batch: waits up to a second for a first message, then gathers until ``batch_size`` messages,
        ``MAX_PAYLOAD_BYTES`` of bodies or ``batch_window`` seconds after the first (as AWS batches)."""
        messages: list[dict[str, Any]] = []
        size = 0
        deadline = 0.0
        while len(messages) < self.batch_size and size < MAX_PAYLOAD_BYTES and not self._stop.is_set():
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                WaitTimeSeconds=0 if messages else 1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                if not got:
                    return []
                deadline = time.monotonic() + self.batch_window
            messages.extend(got)
            size += sum(len(m["Body"]) for m in got)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not got:  # the queue is empty for now: look again shortly, until the window closes
                time.sleep(min(0.05, left))
        return messages

    def poll_once(self) -> int:
        """Receive one batch and invoke the handler; returns the number of messages handled."""
        messages = self._receive()
        if not messages:
            return 0
        self._busy.set()
        try:
            self.invocations += 1
            try:
                result = self.handler(sqs_event(messages, self.queue_arn, self.region))
                failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            except Exception:
                logger.exception("ingest invocation failed; the batch will be redelivered")
                self.failures += 1
                return len(messages)
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                             for i, m in enumerate(done[start:start + 10])],
                )
            if failed:
                self.failures += 1
            return len(messages)
        finally:
            self._busy.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                logger.exception("SQS poll failed")
                time.sleep(1)

    def pending(self) -> int:
        """Messages in the queue (visible and in flight) plus one if an invocation is running."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
                + (1 if self._busy.is_set() else 0))

    def wait_idle(self, timeout: float = 120.0, poll: float = 0.2) -> bool:
        """Block until the queue is empty and no invocation runs (twice in a row); False on timeout."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            quiet = quiet + 1 if self.pending() == 0 else 0
            if quiet >= 2:
                return True
            time.sleep(poll)
        return False
