"""load_records: validate a dropped CSV / JSON Lines / Parquet file against its record table and
upsert the good rows into Iceberg by primary key; bad rows go to ``rejected_records`` with their
row number and reason. Within one file, the row with the latest ``updated_at`` wins per key.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from customer_context.errors import InvalidRequest
from customer_context.models.tracking import parse_timestamp
from customer_context.spec import ContextSpec, RecordTable

if TYPE_CHECKING:
    from customer_context.stores.iceberg import Lakehouse

IMPORTS_PREFIX = "imports/"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass
class LoadReport:
    """What a load did."""

    table: str
    source_key: str
    rows: int = 0
    loaded: int = 0
    rejected: int = 0
    duplicates: int = 0
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the first reasons only)."""
        return {**self.__dict__, "reasons": self.reasons[:20]}


def table_for_key(key: str, spec: ContextSpec) -> str:
    """The record table an object key belongs to (``imports/<table>/…``).

    Raises:
        InvalidRequest: The key is not under ``imports/<declared table>/``.
    """
    if not key.startswith(IMPORTS_PREFIX) or key.count("/") < 2:
        raise InvalidRequest(f"{key}: expected imports/<table>/<file>")
    name = key[len(IMPORTS_PREFIX):].split("/", 1)[0]
    if name not in spec.record_tables:
        raise InvalidRequest(f"{key}: no record table {name!r} in the spec "
                             f"(declared: {', '.join(spec.record_tables) or 'none'})")
    return name


def read_rows(key: str, data: bytes) -> list[dict[str, Any]]:
    """Rows of a file by its extension: .csv, .jsonl / .ndjson / .json (JSON Lines), .parquet.

    Raises:
        InvalidRequest: Unknown extension or unreadable file (the whole file is refused).
    """
    lower = key.lower().removesuffix(".gz")
    if key.lower().endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    if lower.endswith(".csv"):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{key}: not UTF-8 (byte {exc.start})") from None
        return [dict(row) for row in csv.DictReader(io.StringIO(text))]
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                value = {"__error__": f"line {number}: invalid JSON ({exc})", "__raw__": line}
            rows.append(value if isinstance(value, dict) else {"__error__": "expected a JSON object", "__raw__": line})
        return rows
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(io.BytesIO(data)).to_pylist()
        except Exception as exc:
            raise InvalidRequest(f"{key}: not a readable Parquet file ({exc})") from None
    raise InvalidRequest(f"{key}: unsupported file type; use .csv, .jsonl or .parquet (optionally .gz)")


def _convert(value: Any, kind: str) -> Any:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, int | float) or int(number) != number:
            raise ValueError(f"expected an integer, got {value!r}")
        return int(number)
    if kind == "double":
        if isinstance(value, bool):
            raise ValueError("expected a number")
        return float(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if kind == "timestamp":
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return parse_timestamp(str(value))
    if kind == "date":
        if isinstance(value, date):
            return value
        return date.fromisoformat(str(value))
    raise ValueError(f"unknown type {kind}")


def validate_row(row: dict[str, Any], table: RecordTable) -> dict[str, Any]:
    """A row converted to the declared column types.

    Raises:
        ValueError: The first problem: the column and the reason.
    """
    if "__error__" in row:
        raise ValueError(row["__error__"])
    out: dict[str, Any] = {}
    for column, kind in table.columns.items():
        try:
            out[column] = _convert(row.get(column), kind)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"{column}: {exc}") from None
    for column in (*table.primary_key, table.updated_at):
        if out[column] is None:
            raise ValueError(f"{column}: required")
    return out


def load_file(lakehouse: Lakehouse, spec: ContextSpec, key: str, data: bytes,
              received_at: datetime | None = None, pii: Any | None = None) -> LoadReport:
    """Validate and upsert one dropped file. Returns what happened; raises only for unreadable files."""
    import pyarrow as pa

    from customer_context.collect.ingest import _json_text
    from customer_context.stores.tables import record_table_def

    name = table_for_key(key, spec)
    table = spec.record_tables[name]
    received_at = received_at or datetime.now(UTC)
    report = LoadReport(table=name, source_key=key)
    rows = read_rows(key, data)
    report.rows = len(rows)
    good: dict[tuple[Any, ...], dict[str, Any]] = {}
    rejected = []
    for number, row in enumerate(rows, start=1):
        if pii:
            pii.apply_record(name, row)  # before anything is written, rejected rows' raw text included
        try:
            clean = validate_row(row, table)
        except ValueError as exc:
            reason = f"row {number}: {exc}"
            report.reasons.append(reason)
            rejected.append({"table_name": name, "source_key": key, "row_number": number, "reason": str(exc),
                             "raw": _json_text({k: v for k, v in row.items() if k != "__error__"}) or "{}",
                             "received_at": received_at})
            continue
        pk = tuple(clean[c] for c in table.primary_key)
        if pk in good:
            report.duplicates += 1
            if good[pk][table.updated_at] > clean[table.updated_at]:
                continue
        good[pk] = {**clean, "_source_key": key, "_loaded_at": received_at}
    definition = record_table_def(name, table.columns, table.primary_key, table.description)
    lakehouse.define(definition)
    if good:
        data_table = pa.Table.from_pylist(list(good.values()), schema=definition.schema.as_arrow())
        lakehouse.upsert(name, data_table, join_cols=list(table.primary_key))
    if rejected:
        lakehouse.append("rejected_records", pa.Table.from_pylist(
            rejected, schema=lakehouse.arrow_schema("rejected_records")))
    report.loaded = len(good)
    report.rejected = len(rejected)
    return report
