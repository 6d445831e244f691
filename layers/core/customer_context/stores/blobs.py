"""Object storage (S3) for spooled events and record drops, behind a small interface."""

from __future__ import annotations

from typing import Any

from customer_context.stores.unavailable import translate_public_methods


@translate_public_methods("S3")
class S3BlobStore:
    """S3 implementation over one bucket. SlowDown and 5xx are retried by botocore (standard mode, see
    ``customer_context.stores.aws.boto_client``); still failing after that, a call raises ``StoreUnavailable`` (503)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes) -> None:
        """PutObject (server-side encryption is the bucket's default)."""
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")

    def get(self, key: str) -> bytes:
        """GetObject, read whole."""
        return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        """ListObjectsV2, every page."""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def delete(self, key: str) -> None:
        """DeleteObject."""
        self._client.delete_object(Bucket=self.bucket, Key=key)


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

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix``."""
        return sorted(k for k in self.objects if k.startswith(prefix))

    def delete(self, key: str) -> None:
        """Forget the object."""
        self.objects.pop(key, None)
