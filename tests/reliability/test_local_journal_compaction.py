"""The local stack's journal, compacted, holds every item exactly as moto answers it (read from moto's backend
directly, not page by page through Scan)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import boto3
import requests


def test_compaction_writes_back_every_item_as_a_scan_answers_it(tmp_path: Path) -> None:
    from customer_context_devtools.local.persistence import _LOCAL_AUTH, Journal, JournaledMotoServer

    journal = Journal(tmp_path / "aws", "bucket")
    server = JournaledMotoServer(journal)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        ddb = boto3.session.Session().client("dynamodb", endpoint_url=url, region_name="us-east-1",
                                             aws_access_key_id="testing", aws_secret_access_key="testing")
        # Given a table (a range key, as the context table has) with items of every attribute type, nested too
        table = "journal-compaction-types"
        ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "S"}])
        for n in range(60):
            ddb.put_item(TableName=table, Item={
                "pk": {"S": f"p{n % 7}"}, "sk": {"S": f"s{n}"}, "n": {"N": f"{n}.50"}, "b": {"B": bytes([n, 0, 255])},
                "m": {"M": {"l": {"L": [{"S": "x"}, {"N": "-3"}, {"B": b"\x01\x02"}, {"M": {"z": {"NULL": True}}}]},
                            "t": {"BOOL": n % 2 == 0}}},
                "ss": {"SS": ["a", f"v{n}"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"\x00", b"\xff"]},
                "text": {"S": "ünïcode ✓ \"quoted\" " + "x" * n}})
        # When the journal is compacted
        journal.compact()
        # Then it holds one put per item, each equal to the item a Scan returns over HTTP
        kept: list[dict[str, Any]] = []
        for record in journal.dynamodb.read():
            body = json.loads(record["b"])
            kept += [put["PutRequest"]["Item"] for put in body["RequestItems"].get(table, [])]
            assert record["h"]["HTTP_X_AMZ_TARGET"] == "DynamoDB_20120810.BatchWriteItem"
            assert len(body["RequestItems"]) == 1 and all(len(v) <= 25 for v in body["RequestItems"].values())
        scanned: list[dict[str, Any]] = []
        request: dict[str, Any] = {"TableName": table, "Limit": 7}
        while True:
            answer = requests.post(url, data=json.dumps(request), timeout=10, headers={
                "Authorization": _LOCAL_AUTH, "X-Amz-Target": "DynamoDB_20120810.Scan",
                "Content-Type": "application/x-amz-json-1.0"}).json()
            scanned += answer["Items"]
            if "LastEvaluatedKey" not in answer:
                break
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

        def key(item: dict[str, Any]) -> tuple[str, str]:
            return item["pk"]["S"], item["sk"]["S"]

        assert len(scanned) == 60
        assert sorted(kept, key=key) == sorted(scanned, key=key)
        assert base64.b64decode(next(i for i in kept if i["sk"]["S"] == "s9")["b"]["B"]) == bytes([9, 0, 255])
    finally:
        server.stop()
        journal.close()
