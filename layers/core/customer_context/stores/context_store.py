"""The serving store (DynamoDB): context snapshots, identifier aliases, behind a small interface.

Item layout in one table (``pk``, ``sk`` strings):

* snapshot: ``pk = profile#<profile_id>``, ``sk = snapshot`` — ``doc`` (the JSON document),
  ``content_hash``, ``version``, ``built_at``, ``data_as_of``, ``changed_at`` (JSON: each field's path →
  the build time its value last changed, ``null`` when unknown; absent from items landed before fields
  were tracked). It changes only with the content, so it lands only when the document does;
* alias: ``pk = id#<type>#<value>``, ``sk = alias`` — ``profile_id``; one per known identifier,
  so any identifier resolves to its profile with one GetItem;
* recent event: ``pk = recent#p#<profile_id>`` (or ``recent#id#<type>#<value>`` while the
  identifier belongs to no profile yet), ``sk = <receivedAt>#<messageId>`` — ``event`` (compact
  JSON), ``expires_at`` (TTL); written by collect, read by fetch for what is newer than the snapshot;
* suppression: ``pk = suppressed#<first hex digit of h>``, ``sk = <h>`` where h is the keyed hash of
  the identifier (HMAC-SHA256 with the PII key, :func:`customer_context.govern.suppression.suppression_hash`)
  — ``regulation_id``, ``delete`` (filed by ``suppress_with_delete``: builds never join it again). Sixteen
  partitions: collect's point reads spread over them, and a build lists them with sixteen Queries.
  Items written before the keyed hash (``pk = suppressed#<unkeyed sha256>``, ``sk = suppressed``) are
  still honoured by collect;
* fence: ``pk = fence#landing``, ``sk = fence`` — ``owner``, ``expires_at``: held by a build while it lands
  and commits, and by a deletion job while it deletes (conditional writes), so neither sees the other
  half-done; ``pk = fence#deletions``, ``sk = fence`` — ``generation``, bumped by every finished deletion
  job (a build that began before it starts again); ``pk = fence#suppressions``, ``sk = fence`` —
  ``latest``, when identifiers were last suppressed (ingest checks the events received before it);
* regulation: ``pk = regulation#<id>``, ``sk = regulation`` — ``doc`` (JSON: type, status, counts …);
* consumer: ``pk = consumer#<sha256 of the key>``, ``sk = consumer`` — ``name``, ``sections``,
  ``fields``, ``created_at``; the key itself is never stored.

DynamoDB's own limits are checked before an item is sent (:func:`item_problem`: 2,048 bytes of
partition key, 1,024 of sort key, 400 KB per item): a snapshot or alias it could never hold is
handed back as :class:`Refused` (the build quarantines and reports it) instead of failing the
BatchWriteItem of its 24 neighbours; a key it could never hold is never looked up (no such item).
A landing marker item (``pk = landing``, ``sk = marker``) names the build whose landing completed
last; the build compares it with the lakehouse's record to tell a store that lost items.

Writes are BatchWriteItem calls of 25 items. A call DynamoDB throttles as a whole is retried by
botocore (standard mode, backoff with jitter); items it leaves unprocessed are resent with
exponential backoff, and if some are still left after ``write_attempts`` the write raises
:class:`~customer_context.errors.StoreUnavailable` (boto3's ``batch_writer`` resends them at once,
in a loop with no backoff and no end). Reads left unprocessed are handled the same way, so a
throttled lookup answers 503, never "not found". Every throttling or 5xx error left after botocore's
retries becomes ``StoreUnavailable`` (503 ``service_unavailable``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

from customer_context.errors import StoreUnavailable
from customer_context.ports import (  # the values the ports exchange, also named here for the store's callers
    BOOKKEEPING_KEYS,
    FIELD_SECTIONS,
    ContextStore,
    RecentEvent,
    Refused,
    SnapshotItem,
    TailOwner,
)
from customer_context.stores.unavailable import backoff, translate_public_methods

__all__ = ["BOOKKEEPING_KEYS", "FIELD_SECTIONS", "ContextStore", "DynamoContextStore", "MemoryContextStore",
           "RecentEvent", "Refused", "SnapshotItem"]

SNAPSHOT_SK = "snapshot"
LANDING_KEY = {"pk": "landing", "sk": "marker"}
# DynamoDB's limits (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html)
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
MAX_ITEM_BYTES = 400 * 1024
ALIAS_SK = "alias"
CONSUMER_SK = "consumer"
SUPPRESSED_SK = "suppressed"
REGULATION_SK = "regulation"


def suppression_key(digest: str) -> dict[str, str]:
    """Primary key of a suppressed identifier's item, by the identifier's keyed hash (hex)."""
    return {"pk": f"suppressed#{digest[:1]}", "sk": digest}


def legacy_suppression_key(digest: str) -> dict[str, str]:
    """Primary key of a suppression item written before the keyed hash, by its unkeyed SHA-256 (hex)."""
    return {"pk": f"suppressed#{digest}", "sk": SUPPRESSED_SK}


SUPPRESSION_PARTITIONS = tuple(f"suppressed#{c}" for c in "0123456789abcdef")
FENCE_SK = "fence"
LANDING_FENCE = {"pk": "fence#landing", "sk": FENCE_SK}
DELETIONS = {"pk": "fence#deletions", "sk": FENCE_SK}
SUPPRESSIONS_FILED = {"pk": "fence#suppressions", "sk": FENCE_SK}


def regulation_key(regulation_id: str) -> dict[str, str]:
    """Primary key of a regulation's item."""
    return {"pk": f"regulation#{regulation_id}", "sk": REGULATION_SK}


def snapshot_key(profile_id: str) -> dict[str, str]:
    """Primary key of a profile's snapshot item."""
    return {"pk": f"profile#{profile_id}", "sk": SNAPSHOT_SK}


def alias_key(id_type: str, id_value: str) -> dict[str, str]:
    """Primary key of an identifier's alias item."""
    return {"pk": f"id#{id_type}#{id_value}", "sk": ALIAS_SK}


def consumer_key(key_hash: str) -> dict[str, str]:
    """Primary key of a consumer key's item."""
    return {"pk": f"consumer#{key_hash}", "sk": CONSUMER_SK}


def tail_pk(owner: TailOwner) -> str:
    """Partition of a live tail: a profile's, or an identifier's not yet in any profile (the store's key
    layout: store implementations use it, the domain names a tail by its owner)."""
    if isinstance(owner, str):
        return f"recent#p#{owner}"
    return f"recent#id#{owner[0]}#{owner[1]}"


def _recent_item(event: RecentEvent) -> dict[str, Any]:
    """The DynamoDB item of a tail event."""
    return {"pk": tail_pk(event.owner), "sk": f"{event.received_at}#{event.message_id}", "event": event.event,
            "expires_at": event.expires_at}


def _snapshot_item(snapshot: SnapshotItem) -> dict[str, Any]:
    """The DynamoDB item of a snapshot."""
    item: dict[str, Any] = {**snapshot_key(snapshot.profile_id), "profile_id": snapshot.profile_id,
                            "doc": snapshot.doc, "content_hash": snapshot.content_hash, "version": snapshot.version,
                            "built_at": snapshot.built_at}
    if snapshot.data_as_of:
        item["data_as_of"] = snapshot.data_as_of
    if snapshot.changed_at:
        item["changed_at"] = snapshot.changed_at
    return item


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def key_problem(key: dict[str, str]) -> str | None:
    """Why DynamoDB could never hold an item with this key, or ``None``."""
    for name, limit in (("pk", MAX_PARTITION_KEY_BYTES), ("sk", MAX_SORT_KEY_BYTES)):
        size = _utf8_len(key[name])
        if size > limit:
            return f"key of {size:,} bytes; DynamoDB allows {limit:,}"
    return None


def item_problem(item: dict[str, Any]) -> str | None:
    """Why DynamoDB would refuse this item (key or item size), or ``None``. Sizes as DynamoDB counts them:
    UTF-8 bytes of each attribute name and string value; a number counted at its largest (21 bytes)."""
    problem = key_problem(item)
    if problem:
        return problem
    size = sum(_utf8_len(name) + (_utf8_len(value) if isinstance(value, str) else 21) for name, value in item.items())
    return f"item of {size:,} bytes; DynamoDB allows {MAX_ITEM_BYTES:,}" if size > MAX_ITEM_BYTES else None


def _holdable(rows: Iterable[Any], to_item: Any, label: Any, refused: list[Refused] | None
              ) -> Iterable[dict[str, Any]]:
    """``to_item(row)`` for each row the store can hold; the others go to ``refused`` as ``label(row,
    reason)`` (raises without a list)."""
    from customer_context.errors import InvalidRequest

    for row in rows:
        item = to_item(row)
        problem = item_problem(item)
        if problem is None:
            yield item
            continue
        refusal = label(row, problem)
        if refused is None:
            raise InvalidRequest(f"{refusal.kind} of profile {refusal.profile_id}: {problem}")
        refused.append(refusal)


def _snapshot_items(items: Iterable[SnapshotItem], refused: list[Refused] | None) -> Iterable[dict[str, Any]]:
    return _holdable(items, _snapshot_item, lambda i, why: Refused("snapshot", i.profile_id, why), refused)


def _alias_items(aliases: Iterable[tuple[str, str, str]], refused: list[Refused] | None
                 ) -> Iterable[dict[str, Any]]:
    return _holdable(aliases, lambda a: {**alias_key(a[0], a[1]), "profile_id": a[2]},
                     lambda a, why: Refused("alias", a[2], why, a[0]), refused)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@translate_public_methods("DynamoDB")
class DynamoContextStore:
    """DynamoDB implementation over one table (boto3 resource API).

    Args:
        table: The boto3 ``Table`` resource.
        attempts: BatchWriteItem / BatchGetItem calls for items DynamoDB leaves unprocessed.
        backoff_base: First backoff between those calls, in seconds (doubled each time, jittered).
        backoff_cap: Longest backoff, in seconds.
    """

    def __init__(self, table: Any, attempts: int = 8, backoff_base: float = 0.05, backoff_cap: float = 5.0) -> None:
        self.table = table
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

    def _write(self, puts: Iterable[dict[str, Any]] = (), deletes: Iterable[dict[str, str]] = ()) -> int:
        """BatchWriteItem in groups of 25 (a later request for the same key replaces an earlier one)."""
        n = 0
        group: dict[tuple[str, str], dict[str, Any]] = {}
        requests = itertools.chain((({"PutRequest": {"Item": item}}, item) for item in puts),
                                   (({"DeleteRequest": {"Key": key}}, key) for key in deletes))
        for request, key in requests:  # streamed: a build hands over millions of items lazily
            group.pop((key["pk"], key["sk"]), None)
            group[(key["pk"], key["sk"])] = request
            n += 1
            if len(group) == 25:
                self._send(list(group.values()))
                group = {}
        if group:
            self._send(list(group.values()))
        return n

    def _until_processed(self, call: Any, request: dict[str, Any], unprocessed: str,
                         answered: Any = None) -> dict[str, Any]:
        """``call(RequestItems=request)``, then again with what DynamoDB left ``unprocessed`` (after an
        exponential backoff), at most ``attempts`` times; ``answered`` sees every answer. Returns what is
        still unprocessed (empty when all went through)."""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(backoff(attempt - 1, self.backoff_base, self.backoff_cap))
            answer = call(RequestItems=request)
            if answered is not None:
                answered(answer)
            request = answer.get(unprocessed) or {}
            if not request:
                break
        return request

    def _send(self, requests: list[dict[str, Any]]) -> None:
        """One BatchWriteItem, resending unprocessed items with backoff; raises if some are left."""
        # the resource's client: boto3 converts Python values to and from attribute values for us
        pending = self._until_processed(self.table.meta.client.batch_write_item, {self.table.name: requests},
                                        "UnprocessedItems")
        if pending:
            left = len(pending.get(self.table.name, []))
            raise StoreUnavailable(f"DynamoDB is throttling: {left} of {len(requests)} writes still unprocessed "
                                   f"after {self.attempts} BatchWriteItem attempts; retry later")

    def put_snapshots(self, items: Iterable[SnapshotItem], refused: list[Refused] | None = None) -> int:
        """BatchWriteItem puts."""
        return self._write(puts=_snapshot_items(items, refused))

    def put_aliases(self, aliases: Iterable[tuple[str, str, str]], refused: list[Refused] | None = None) -> int:
        """BatchWriteItem puts."""
        return self._write(puts=_alias_items(aliases, refused))

    def delete_snapshots(self, profile_ids: Iterable[str]) -> int:
        """BatchWriteItem deletes."""
        return self._write(deletes=(k for k in map(snapshot_key, profile_ids) if key_problem(k) is None))

    def delete_aliases(self, identifiers: Iterable[tuple[str, str]]) -> int:
        """BatchWriteItem deletes (a key the store could never hold has no item to delete)."""
        return self._write(deletes=(k for k in (alias_key(t, v) for t, v in identifiers) if key_problem(k) is None))

    def get_landing_marker(self) -> str | None:
        """GetItem (strongly consistent: it decides whether to land everything again)."""
        item = self.table.get_item(Key=LANDING_KEY, ConsistentRead=True).get("Item")
        return str(item["generation"]) if item else None

    def put_landing_marker(self, generation: str) -> None:
        """PutItem."""
        self.table.put_item(Item={**LANDING_KEY, "generation": generation})

    def missing(self, snapshots: dict[str, str], aliases: list[tuple[str, str, str]]) -> str | None:
        """Two BatchGetItem calls at most (the sample a build verifies is small)."""
        return _missing(self, snapshots, aliases)

    def _get(self, key: dict[str, str]) -> dict[str, Any] | None:
        if key_problem(key):
            return None  # DynamoDB refuses to look such a key up; no item can have it
        item: dict[str, Any] | None = self.table.get_item(Key=key).get("Item")
        return item

    def get_snapshot(self, profile_id: str) -> dict[str, Any] | None:
        """GetItem."""
        return self._get(snapshot_key(profile_id))

    def resolve(self, id_type: str, id_value: str) -> str | None:
        """GetItem on the alias."""
        item = self._get(alias_key(id_type, id_value))
        return str(item["profile_id"]) if item else None

    def _batch_get(self, keys: list[dict[str, str]]) -> list[dict[str, Any]]:
        """BatchGetItem in chunks of 100, resending unprocessed keys with backoff; raises
        :class:`StoreUnavailable` if some are still unprocessed (never a silent "not found")."""
        # the resource's client: boto3 converts Python values to and from attribute values for us
        client = self.table.meta.client
        found: list[dict[str, Any]] = []
        unique = list({(k["pk"], k["sk"]): k for k in keys if key_problem(k) is None}.values())

        def take(answer: dict[str, Any]) -> None:
            found.extend(answer.get("Responses", {}).get(self.table.name, []))

        for chunk in _chunks(unique, 100):
            request = self._until_processed(client.batch_get_item, {self.table.name: {"Keys": chunk}},
                                            "UnprocessedKeys", take)
            if request:
                left = len(request.get(self.table.name, {}).get("Keys", []))
                raise StoreUnavailable(f"DynamoDB is throttling: {left} of {len(chunk)} reads still unprocessed "
                                       f"after {self.attempts} BatchGetItem attempts; retry later")
        return found

    def resolve_many(self, identifiers: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """BatchGetItem on the aliases."""
        out: dict[tuple[str, str], str] = {}
        for item in self._batch_get([alias_key(t, v) for t, v in identifiers]):
            _, id_type, id_value = item["pk"].split("#", 2)
            out[(id_type, id_value)] = str(item["profile_id"])
        return out

    def get_snapshots(self, profile_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """BatchGetItem on the snapshots."""
        return {str(i["profile_id"]): i for i in self._batch_get([snapshot_key(p) for p in profile_ids])}

    def put_recent(self, events: Iterable[RecentEvent]) -> int:
        """BatchWriteItem puts."""
        return self._write(puts=(_recent_item(e) for e in events))

    def recent(self, owner: TailOwner, after: str | None, limit: int) -> list[dict[str, Any]]:
        """One Query, newest first."""
        from boto3.dynamodb.conditions import Key

        condition = Key("pk").eq(tail_pk(owner))
        if after:
            condition = condition & Key("sk").gt(after)
        answer = self.table.query(KeyConditionExpression=condition, ScanIndexForward=False, Limit=max(limit, 1))
        return list(answer.get("Items", []))

    def put_consumer(self, key_hash: str, attributes: dict[str, Any]) -> None:
        """PutItem."""
        self.table.put_item(Item={**consumer_key(key_hash), **attributes})

    def get_consumer(self, key_hash: str) -> dict[str, Any] | None:
        """GetItem."""
        return self._get(consumer_key(key_hash))

    def list_consumers(self) -> list[dict[str, Any]]:
        """A filtered Scan (administration only)."""
        from boto3.dynamodb.conditions import Attr

        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"FilterExpression": Attr("sk").eq(CONSUMER_SK)}
        while True:
            answer = self.table.scan(**kwargs)
            items.extend(answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                return items
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def delete_consumer(self, key_hash: str) -> None:
        """DeleteItem."""
        self.table.delete_item(Key=consumer_key(key_hash))

    def put_suppressions(self, digests: Iterable[str], regulation_id: str, delete: bool = False) -> int:
        """BatchWriteItem puts."""
        return self._write(puts=({**suppression_key(d), "regulation_id": regulation_id, "delete": delete}
                                 for d in digests))

    def suppressed(self, digests: Iterable[str], legacy: Iterable[str] = ()) -> set[str]:
        """BatchGetItem on the suppression keys (keyed and legacy layouts)."""
        keys = [suppression_key(d) for d in digests] + [legacy_suppression_key(d) for d in legacy]
        return {item["sk"] if item["sk"] != SUPPRESSED_SK else item["pk"].split("#", 1)[1]
                for item in self._batch_get(keys)}

    def deleted_identifiers(self) -> set[str]:
        """One paginated Query per suppression partition."""
        from boto3.dynamodb.conditions import Key

        found: set[str] = set()
        for pk in SUPPRESSION_PARTITIONS:
            kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(pk)}
            while True:
                answer = self.table.query(**kwargs)
                found.update(str(i["sk"]) for i in answer.get("Items", []) if i.get("delete"))
                if "LastEvaluatedKey" not in answer:
                    break
                kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return found

    def acquire_fence(self, owner: str, lease_seconds: float) -> bool:
        """Conditional PutItem: no holder, the same holder, or a lease that ran out."""
        from botocore.exceptions import ClientError

        now = time.time()
        try:
            self.table.put_item(
                Item={**LANDING_FENCE, "owner": owner, "expires_at": int(now + lease_seconds)},
                ConditionExpression="attribute_not_exists(pk) OR #o = :owner OR expires_at < :now",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": owner, ":now": int(now)})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_fence(self, owner: str) -> None:
        """Conditional DeleteItem (a lease that ran out and was taken over stays with its new holder)."""
        from botocore.exceptions import ClientError

        try:
            self.table.delete_item(Key=LANDING_FENCE, ConditionExpression="#o = :owner",
                                   ExpressionAttributeNames={"#o": "owner"},
                                   ExpressionAttributeValues={":owner": owner})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def deletion_generation(self) -> int:
        """GetItem (strongly consistent)."""
        item = self.table.get_item(Key=DELETIONS, ConsistentRead=True).get("Item")
        return int(item["generation"]) if item else 0

    def bump_deletion_generation(self) -> int:
        """UpdateItem ADD."""
        answer = self.table.update_item(Key=DELETIONS, UpdateExpression="ADD generation :one",
                                        ExpressionAttributeValues={":one": 1}, ReturnValues="UPDATED_NEW")
        return int(answer["Attributes"]["generation"])

    def note_suppression(self, at: str) -> None:
        """PutItem."""
        self.table.put_item(Item={**SUPPRESSIONS_FILED, "latest": at})

    def last_suppression(self) -> str | None:
        """GetItem (strongly consistent)."""
        item = self.table.get_item(Key=SUPPRESSIONS_FILED, ConsistentRead=True).get("Item")
        return str(item["latest"]) if item else None

    def put_regulation(self, regulation: dict[str, Any]) -> None:
        """PutItem."""
        import json

        self.table.put_item(Item={**regulation_key(regulation["id"]), "doc": json.dumps(regulation)})

    def get_regulation(self, regulation_id: str) -> dict[str, Any] | None:
        """GetItem."""
        import json

        item = self.table.get_item(Key=regulation_key(regulation_id)).get("Item")
        return json.loads(item["doc"]) if item else None

    def _tail_keys(self, pk: str) -> list[dict[str, str]]:
        from boto3.dynamodb.conditions import Key

        keys: list[dict[str, str]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(pk), "ProjectionExpression": "pk, sk"}
        while True:
            answer = self.table.query(**kwargs)
            keys += [{"pk": i["pk"], "sk": i["sk"]} for i in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                return keys
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def delete_customer(self, profile_ids: Iterable[str], identifiers: Iterable[tuple[str, str]]) -> int:
        """BatchWriteItem deletes (live-tail keys found with a Query per partition)."""
        pids, ids = list(profile_ids), list(identifiers)
        keys = [snapshot_key(p) for p in pids] + [alias_key(t, v) for t, v in ids]
        for pk in [tail_pk(p) for p in pids] + [tail_pk(i) for i in ids]:
            keys += self._tail_keys(pk)
        return self._write(deletes=keys)


class MemoryContextStore:
    """In-memory store for unit tests; counts every item written or deleted."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0

    def _key(self, key: dict[str, str]) -> tuple[str, str]:
        return key["pk"], key["sk"]

    def _put(self, items: Iterable[dict[str, Any]]) -> int:
        n = 0
        for item in items:
            self.items[self._key(item)] = item
            n += 1
        self.writes += n
        return n

    def put_snapshots(self, items: Iterable[SnapshotItem], refused: list[Refused] | None = None) -> int:
        """Keep the items (refusing what DynamoDB would)."""
        return self._put(_snapshot_items(items, refused))

    def put_aliases(self, aliases: Iterable[tuple[str, str, str]], refused: list[Refused] | None = None) -> int:
        """Keep the items (refusing what DynamoDB would)."""
        return self._put(_alias_items(aliases, refused))

    def get_landing_marker(self) -> str | None:
        """The marker, or None."""
        item = self.items.get(self._key(LANDING_KEY))
        return str(item["generation"]) if item else None

    def put_landing_marker(self, generation: str) -> None:
        """Keep the marker."""
        self.items[self._key(LANDING_KEY)] = {**LANDING_KEY, "generation": generation}

    def missing(self, snapshots: dict[str, str], aliases: list[tuple[str, str, str]]) -> str | None:
        """As DynamoDB's."""
        return _missing(self, snapshots, aliases)

    def delete_snapshots(self, profile_ids: Iterable[str]) -> int:
        """Drop the items."""
        n = 0
        for p in profile_ids:
            self.items.pop(self._key(snapshot_key(p)), None)
            n += 1
        self.writes += n
        return n

    def delete_aliases(self, identifiers: Iterable[tuple[str, str]]) -> int:
        """Drop the items."""
        n = 0
        for t, v in identifiers:
            self.items.pop(self._key(alias_key(t, v)), None)
            n += 1
        self.writes += n
        return n

    def get_snapshot(self, profile_id: str) -> dict[str, Any] | None:
        """The item, or None."""
        return self.items.get(self._key(snapshot_key(profile_id)))

    def resolve(self, id_type: str, id_value: str) -> str | None:
        """The profile id, or None."""
        item = self.items.get(self._key(alias_key(id_type, id_value)))
        return item["profile_id"] if item else None

    def resolve_many(self, identifiers: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The known ones."""
        out = {}
        for t, v in identifiers:
            pid = self.resolve(t, v)
            if pid is not None:
                out[(t, v)] = pid
        return out

    def get_snapshots(self, profile_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The ones that exist."""
        return {p: item for p in profile_ids if (item := self.get_snapshot(p)) is not None}

    def put_recent(self, events: Iterable[RecentEvent]) -> int:
        """Keep the items."""
        n = 0
        for event in events:
            data = _recent_item(event)
            self.items[self._key(data)] = data
            n += 1
        self.writes += n
        return n

    def recent(self, owner: TailOwner, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        pk = tail_pk(owner)
        rows = sorted((i for (p, s), i in self.items.items() if p == pk and (after is None or s > after)),
                      key=lambda i: i["sk"], reverse=True)
        return rows[:max(limit, 1)]

    def put_consumer(self, key_hash: str, attributes: dict[str, Any]) -> None:
        """Keep the item."""
        key = consumer_key(key_hash)
        self.items[self._key(key)] = {**key, **attributes}

    def get_consumer(self, key_hash: str) -> dict[str, Any] | None:
        """The item, or None."""
        return self.items.get(self._key(consumer_key(key_hash)))

    def list_consumers(self) -> list[dict[str, Any]]:
        """Every consumer item."""
        return [i for (_, s), i in self.items.items() if s == CONSUMER_SK]

    def delete_consumer(self, key_hash: str) -> None:
        """Drop the item."""
        self.items.pop(self._key(consumer_key(key_hash)), None)

    def put_suppressions(self, digests: Iterable[str], regulation_id: str, delete: bool = False) -> int:
        """Keep the items."""
        n = 0
        for d in digests:
            key = suppression_key(d)
            self.items[self._key(key)] = {**key, "regulation_id": regulation_id, "delete": delete}
            n += 1
        return n

    def suppressed(self, digests: Iterable[str], legacy: Iterable[str] = ()) -> set[str]:
        """The suppressed ones."""
        return ({d for d in digests if self._key(suppression_key(d)) in self.items}
                | {d for d in legacy if self._key(legacy_suppression_key(d)) in self.items})

    def deleted_identifiers(self) -> set[str]:
        """Keyed hashes filed by ``suppress_with_delete``."""
        return {i["sk"] for (p, _), i in self.items.items() if p in SUPPRESSION_PARTITIONS and i.get("delete")}

    def acquire_fence(self, owner: str, lease_seconds: float) -> bool:
        """Take the fence if free, ours, or expired."""
        held = self.items.get(self._key(LANDING_FENCE))
        if held and held["owner"] != owner and held["expires_at"] >= time.time():
            return False
        self.items[self._key(LANDING_FENCE)] = {**LANDING_FENCE, "owner": owner,
                                                "expires_at": time.time() + lease_seconds}
        return True

    def release_fence(self, owner: str) -> None:
        """Drop the fence if ours."""
        held = self.items.get(self._key(LANDING_FENCE))
        if held and held["owner"] == owner:
            del self.items[self._key(LANDING_FENCE)]

    def deletion_generation(self) -> int:
        """The counter."""
        return int(self.items.get(self._key(DELETIONS), {}).get("generation", 0))

    def bump_deletion_generation(self) -> int:
        """Count one more."""
        generation = self.deletion_generation() + 1
        self.items[self._key(DELETIONS)] = {**DELETIONS, "generation": generation}
        return generation

    def note_suppression(self, at: str) -> None:
        """Keep the time."""
        self.items[self._key(SUPPRESSIONS_FILED)] = {**SUPPRESSIONS_FILED, "latest": at}

    def last_suppression(self) -> str | None:
        """The time, or None."""
        item = self.items.get(self._key(SUPPRESSIONS_FILED))
        return str(item["latest"]) if item else None

    def put_regulation(self, regulation: dict[str, Any]) -> None:
        """Keep a copy."""
        import json

        self.items[self._key(regulation_key(regulation["id"]))] = {**regulation_key(regulation["id"]),
                                                                   "doc": json.dumps(regulation)}

    def get_regulation(self, regulation_id: str) -> dict[str, Any] | None:
        """A copy, or None."""
        import json

        item = self.items.get(self._key(regulation_key(regulation_id)))
        return json.loads(item["doc"]) if item else None

    def delete_customer(self, profile_ids: Iterable[str], identifiers: Iterable[tuple[str, str]]) -> int:
        """Drop the items."""
        pids, ids = list(profile_ids), list(identifiers)
        doomed = {self._key(snapshot_key(p)) for p in pids} | {self._key(alias_key(t, v)) for t, v in ids}
        tails = {tail_pk(p) for p in pids} | {tail_pk(i) for i in ids}
        doomed |= {k for k in self.items if k[0] in tails}
        existing = doomed & set(self.items)
        for key in existing:
            del self.items[key]
        return len(existing)


def _missing(store: Any, snapshots: dict[str, str], aliases: list[tuple[str, str, str]]) -> str | None:
    """:meth:`ContextStore.missing` over a store's batch reads."""
    held = store.get_snapshots(snapshots)
    for profile_id, content_hash in snapshots.items():
        if key_problem(snapshot_key(profile_id)):
            continue
        item = held.get(profile_id)
        if item is None:
            return f"snapshot of profile {profile_id} missing"
        if item.get("content_hash") != content_hash:
            return f"snapshot of profile {profile_id} is not the one landed last"
    expected = {(t, v): p for t, v, p in aliases if key_problem(alias_key(t, v)) is None}
    resolved = store.resolve_many(expected)
    for (id_type, _), profile_id in expected.items():
        if resolved.get((id_type, _)) != profile_id:
            return f"an alias ({id_type}) of profile {profile_id} missing or moved"
    return None
