"""Find every copy of given values anywhere the system keeps data: the residue of a deletion.

Files are decoded before they are searched, because compressed bytes hide what they hold:

* Parquet files (every one under the folder, whether a snapshot references it or not) are read **by
  value**: every column of every row (JSON text columns included), plus the column statistics and
  key-value metadata of the footer;
* Avro files (Iceberg manifests and manifest lists) are read **by record**: every field of every
  entry, with ``bytes`` values (the column lower / upper bounds) decoded as text;
* gzip files are decompressed, then searched as what they hold;
* every other file (table metadata JSON, the SQLite catalog, keys …) is searched raw;
* DynamoDB tables are scanned item by item; S3 buckets are listed and every object is read (and
  decoded as above).

A value is found as a case-insensitive substring, so ``Gone@Example.com`` inside a JSON document
counts as ``gone@example.com``.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARQUET_MAGIC = b"PAR1"
AVRO_MAGIC = b"Obj\x01"
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Hit:
    """One place a value was found."""

    place: str   # parquet | avro | raw | dynamodb | s3
    where: str   # the file, item key or object key
    value: str   # the value found
    detail: str  # the column, field or attribute holding it

    def __str__(self) -> str:
        return f"{self.place} {self.where} [{self.detail}]: {self.value}"


class _Needles:
    def __init__(self, values: Iterable[str]) -> None:
        self.values = sorted({v for v in values if v})
        self.lower = [v.lower() for v in self.values]

    def in_text(self, text: str) -> list[str]:
        low = text.lower()
        return [v for v, n in zip(self.values, self.lower, strict=True) if n in low]


def _texts(value: Any, path: str = "", kind: Any = None) -> Iterator[tuple[str, str]]:
    """(path, text) of every string in a nested value; bytes are decoded as UTF-8 (bounds are)."""
    if value is None:
        return
    if isinstance(value, bytes | bytearray | memoryview):
        yield path, bytes(value).decode("utf-8", "replace")
    elif isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield path, str(key)
            yield from _texts(item, f"{path}.{key}" if path else str(key), getattr(kind, "value_type", None))
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            yield from _texts(item, f"{path}[{n}]", getattr(kind, "element_type", None))
    elif hasattr(value, "_data"):  # a pyiceberg Avro Record: its fields named from the file's schema
        fields = list(getattr(kind, "fields", ()))
        for n, item in enumerate(value._data):
            field = fields[n] if n < len(fields) else None
            name = field.name if field else str(n)
            yield from _texts(item, f"{path}.{name}" if path else name, field.field_type if field else None)
    else:
        yield path, str(value)


def _parquet(data: bytes, where: str, needles: _Needles, place: str = "parquet") -> list[Hit]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    hits: list[Hit] = []
    source = pq.ParquetFile(io.BytesIO(data))
    table = source.read()
    for name in table.column_names:
        column = table.column(name)
        import pyarrow as pa

        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            low = pc.utf8_lower(column)
            for value, needle in zip(needles.values, needles.lower, strict=True):
                if pc.any(pc.match_substring(low, needle)).as_py():
                    hits.append(Hit(place, where, value, f"column {name}"))
        else:
            for path, text in _texts(column.to_pylist(), name):
                hits += [Hit(place, where, v, f"column {path.split('[')[0]}") for v in needles.in_text(text)]
    meta = source.metadata
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for c in range(group.num_columns):
            chunk = group.column(c)
            stats = chunk.statistics
            if stats is not None and stats.has_min_max:
                for bound in ("min", "max"):
                    for _, text in _texts(getattr(stats, bound)):
                        hits += [Hit(place, where, v, f"statistics {chunk.path_in_schema}.{bound}")
                                 for v in needles.in_text(text)]
    for key, value in (meta.metadata or {}).items():
        for text in (key.decode("utf-8", "replace"), value.decode("utf-8", "replace")):
            hits += [Hit(place, where, v, "footer metadata") for v in needles.in_text(text)]
    return sorted(set(hits), key=str)


def _avro(data: bytes, where: str, needles: _Needles, place: str = "avro") -> list[Hit]:
    from pyiceberg.avro.file import AvroFile
    from pyiceberg.io.pyarrow import PyArrowFileIO

    hits: list[Hit] = []
    tmp = _spill(data)
    try:
        with AvroFile(PyArrowFileIO().new_input(str(tmp))) as reader:
            for key, value in reader.header.meta.items():
                hits += [Hit(place, where, v, f"header {key}") for v in needles.in_text(value)]
            for n, record in enumerate(reader):
                for path, text in _texts(record, "", reader.schema.as_struct()):
                    hits += [Hit(place, where, v, f"record {n} {path}") for v in needles.in_text(text)]
    finally:
        tmp.unlink()
    return hits


def _spill(data: bytes) -> Path:
    import tempfile

    with tempfile.NamedTemporaryFile(delete=False, suffix=".avro") as fh:
        fh.write(data)
    return Path(fh.name)


def search_bytes(data: bytes, where: str, needles: Iterable[str] | _Needles, place: str | None = None) -> list[Hit]:
    """Every value in one file's content, decoded by its format (Parquet, Avro, gzip, else raw)."""
    found = needles if isinstance(needles, _Needles) else _Needles(needles)
    if not found.values:
        return []
    if data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC:
        return _parquet(data, where, found, place or "parquet")
    if data[:4] == AVRO_MAGIC:
        return _avro(data, where, found, place or "avro")
    if data[:2] == GZIP_MAGIC:
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError):
            inner = None
        if inner is not None:
            return search_bytes(inner, f"{where} (gunzipped)", found, place)
    text = data.decode("utf-8", "replace")
    return [Hit(place or "raw", where, v, "bytes") for v in found.in_text(text)]


def search_files(root: Path, values: Iterable[str], *, skip: Iterable[str] = ()) -> list[Hit]:
    """Every value in every file under ``root`` (names in ``skip`` are left out, e.g. key files)."""
    needles = _Needles(values)
    skipped = set(skip)
    hits: list[Hit] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in skipped:
            hits += search_bytes(path.read_bytes(), str(path.relative_to(root)), needles)
    return hits


def search_dynamodb(client: Any, table: str, values: Iterable[str]) -> list[Hit]:
    """Every value in every item of a DynamoDB table (a full Scan)."""
    needles = _Needles(values)
    hits: list[Hit] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        answer = client.scan(**kwargs)
        for item in answer.get("Items", []):
            key = f"{item.get('pk', {}).get('S')}|{item.get('sk', {}).get('S')}"
            for name, value in item.items():
                text = json.dumps(value, ensure_ascii=False)
                if "B" in value:  # binary attributes come base64-encoded
                    import base64

                    text = base64.b64decode(value["B"]).decode("utf-8", "replace")
                hits += [Hit("dynamodb", key, v, f"attribute {name}") for v in needles.in_text(text)]
        if "LastEvaluatedKey" not in answer:
            return hits
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def search_s3(client: Any, bucket: str, values: Iterable[str]) -> list[Hit]:
    """Every value in every object of an S3 bucket (keys included), each decoded by its format."""
    needles = _Needles(values)
    hits: list[Hit] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            hits += [Hit("s3", key, v, "key") for v in needles.in_text(key)]
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            hits += search_bytes(body, f"s3://{bucket}/{key}", needles, "s3")
    return hits


def raw_grep(root: Path, values: Iterable[str]) -> list[str]:
    """What a plain byte search finds (files whose raw bytes hold a value): the check this module replaces."""
    wanted = [v.encode() for v in values]
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*"))
            if p.is_file() and any(w in p.read_bytes() for w in wanted)]
