"""Object storage (S3) for spooled events and record drops, behind a small interface."""

from __future__ import annotations

from typing import Any, Protocol

from customer_context.stores.unavailable import translate_public_methods


class BlobStore(Protocol):
    """Put and get whole objects by key."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""

    def get(self, key: str) -> bytes:
        """Return the object under ``key``."""


@translate_public_methods("S3")
class S3BlobStore:
    """S3 implementation over one bucket. SlowDown and 5xx are retried by botocore (standard mode, see
    ``factory.boto_client``); still failing after that, a call raises ``StoreUnavailable`` (503)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes) -> None:
        """PutObject (server-side encryption is the bucket's default)."""
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")

    def get(self, key: str) -> bytes:
        """GetObject, read whole."""
        return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


class MemoryBlobStore:
    """In-memory store for unit tests."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        """Keep the object."""
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        """Return the object (KeyError when absent)."""
        return self.objects[key]
