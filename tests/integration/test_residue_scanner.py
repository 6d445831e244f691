"""The residue scanner finds values where a byte search cannot: inside zstd-compressed Parquet pages and
deflated Avro manifests (tests/helpers/residue.py, used by every deletion test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.lake import ev, write_events
from tests.helpers.residue import raw_grep, search_bytes, search_dynamodb, search_files, search_s3

PLANTED = "planted.person@example.com"


def _lake_with_one_mention(lakehouse: Any) -> Path:
    # Given 3,000 events (enough for zstd to code the page's literals), one of which mentions the value deep
    # inside its JSON properties, in a row that sorts neither first nor last (so no Parquet statistic holds it)
    events = [ev("track", n / 100, userId=f"m-user-{n:05d}", event="Order Completed",
                  properties={"order_id": f"o-{n:05d}", "note": f"gift for customer {n}", "revenue": n})
              for n in range(3000)]
    events[1500]["properties"]["note"] = f"gift for {PLANTED.upper()}, wrap it"
    write_events(lakehouse, events)
    return Path(lakehouse.table("events").location().removeprefix("file://"))


def test_a_value_inside_a_zstd_parquet_page_is_found_where_a_byte_search_finds_nothing(lakehouse: Any) -> None:
    table_dir = _lake_with_one_mention(lakehouse)
    # When the table's files are searched both ways
    raw = raw_grep(table_dir, [PLANTED, PLANTED.upper()])
    hits = search_files(table_dir, [PLANTED])
    # Then a byte search misses it, and the scanner finds it, read by value, in the properties column
    assert raw == []
    assert [(h.place, h.detail) for h in hits] == [("parquet", "column properties")], hits
    assert hits[0].where.startswith("data/") and hits[0].where.endswith(".parquet")


def test_a_value_in_a_manifest_bound_is_found_by_record(lakehouse: Any) -> None:
    # Given a data file whose smallest user id is the value: the manifest keeps it as the column's lower bound
    events = [ev("track", 1, userId=f"user-{n:04d}", event="Viewed") for n in range(500)]
    events.append(ev("track", 1, userId="aaa-planted-01", event="Viewed"))
    write_events(lakehouse, events)
    table = lakehouse.table("events")
    manifests = [m.manifest_path for m in table.current_snapshot().manifests(table.io)]
    # When the manifest (a deflated Avro file) is searched
    data = Path(manifests[0].removeprefix("file://")).read_bytes()
    hits = search_bytes(data, "manifest", ["aaa-planted-01"])
    # Then the scanner decodes its records and finds the bound; the compressed bytes do not show it
    assert b"aaa-planted-01" not in data
    assert hits and {h.place for h in hits} == {"avro"}
    assert any("lower_bounds" in h.detail for h in hits), hits


def test_dynamodb_items_and_s3_objects_are_searched(aws: str) -> None:
    import gzip

    from customer_context import wiring

    ddb, s3 = wiring.boto_client("dynamodb"), wiring.boto_client("s3")
    ddb.create_table(TableName="residue", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName="residue", Item={"pk": {"S": "a"}, "doc": {"S": json.dumps({"e": PLANTED})}})
    ddb.put_item(TableName="residue", Item={"pk": {"S": "b"}, "doc": {"S": "nobody"}})
    s3.create_bucket(Bucket="residue-bucket")
    s3.put_object(Bucket="residue-bucket", Key="spool/x.json.gz", Body=gzip.compress(PLANTED.upper().encode()))
    s3.put_object(Bucket="residue-bucket", Key="spool/y.json", Body=b"nothing here")
    assert [(h.where, h.detail) for h in search_dynamodb(ddb, "residue", [PLANTED])] == [("a|None", "attribute doc")]
    assert [h.where for h in search_s3(s3, "residue-bucket", [PLANTED])] == [
        "s3://residue-bucket/spool/x.json.gz (gunzipped)"]
