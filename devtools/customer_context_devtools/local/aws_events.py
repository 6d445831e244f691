"""Event shapes AWS delivers to Lambda, for the triggers the local stack emulates (besides API
Gateway and SQS, which live next to their emulations)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

ACCOUNT = "123456789012"


def scheduled_event(schedule: str, region: str = "us-east-1", when: datetime | None = None) -> dict[str, Any]:
    """What EventBridge Scheduler delivers to a Lambda target of a schedule without ``Input`` (the
    template's ``ScheduleV2`` events): its default notification, whose ``detail`` is the *string* ``"{}"``."""
    when = when or datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": ACCOUNT,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:scheduler:{region}:{ACCOUNT}:schedule/default/{schedule}"],
        "detail": "{}",
    }


def s3_object_created(bucket: str, key: str, size: int, etag: str = "", region: str = "us-east-1") -> dict[str, Any]:
    """An S3 ``ObjectCreated:Put`` notification (keys are URL-encoded, as S3 sends them)."""
    now = datetime.now(UTC)
    return {
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": region,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                                 "x-amz-id-2": uuid.uuid4().hex},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "customer-context-imports",
                "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                           "arn": f"arn:aws:s3:::{bucket}"},
                "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag,
                           "sequencer": f"{int(now.timestamp() * 1e6):016X}"},
            },
        }]
    }
