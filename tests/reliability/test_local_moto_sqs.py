"""The local stack's moto answers ReceiveMessage as moto does: a message past the queue's retention period is
never delivered (the stack reads that one attribute instead of building them all, queue length included)."""

from __future__ import annotations

from pathlib import Path

import boto3


def test_a_message_past_retention_is_not_delivered_and_a_fresh_one_is(tmp_path: Path) -> None:
    from customer_context_devtools.local.persistence import Journal, JournaledMotoServer
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    journal = Journal(tmp_path / "aws", "bucket")
    server = JournaledMotoServer(journal)
    server.start()
    try:
        host, port = server.get_host_and_port()
        sqs = boto3.session.Session().client("sqs", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                                             aws_access_key_id="testing", aws_secret_access_key="testing")
        # Given a queue keeping messages 60 s, one message sent 61 s ago and one just now
        url = sqs.create_queue(QueueName="retention-check", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="old")
        [old] = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_queue("retention-check")._messages
        old.sent_timestamp -= 61_000
        sqs.send_message(QueueUrl=url, MessageBody="new")
        # When the queue is read a few times
        got = [m["Body"] for _ in range(3) for m in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])]
        # Then only the fresh message is delivered (moto stops a receive at an expired message: it comes a read later)
        assert got == ["new"]
    finally:
        server.stop()
        journal.close()
