"""load_records: read a dropped CSV / JSON Lines / Parquet file strictly, record by record, and
upsert the good rows into their Iceberg record table by primary key.

Nothing is changed silently:

* **Parsing fails per record.** CSV is read with Python's ``csv`` module in strict mode, one
  record at a time: a record with bad quoting (an unclosed quote, text after a closing quote, a
  quote inside an unquoted field) or the wrong number of fields is rejected with its physical
  line, and reading resumes on the next line, so the records after it are read again rather than
  swallowed. A JSON Lines record is one line; a file that is one JSON array is read element by
  element. A Parquet row is named by its 1-based row number.
* **Columns are checked before any row** (per record in JSON): a declared column missing refuses
  the file, unless the file is loaded as *partial* (then only the columns present are updated; the
  primary key and ``updated_at`` are still required); a near-miss (``Email``, `` account_manager``)
  is named; a duplicated column refuses the file (the record in JSON). Undeclared columns are
  ignored and listed in the report.
* **No coercion**: integers are exact 64-bit integers written in ASCII digits, doubles finite,
  booleans booleans, text valid UTF-8 (a bad byte rejects its record) and at most
  :data:`MAX_FIELD_CHARS` characters — the same rules for every format.
* **Upserts follow ``updated_at``**: a row older than the row already stored for its key (or read
  earlier in the same file) is not applied; on a tie the row read later wins (later in the file,
  or from the file loaded later).
* **A file that cannot be read at all** (unknown type, truncated gzip, not Parquet, bad header) is
  refused with a one-line reason, also kept in ``rejected_records`` (row number 0) — never a
  traceback.

Record tables follow the spec through Iceberg schema evolution (:func:`ensure_record_table`);
a change Iceberg cannot apply is reported by :func:`check_record_schemas`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from customer_context.errors import ConfigError, InvalidRequest
from customer_context.models.tracking import parse_timestamp
from customer_context.ports import JsonObject, JsonValue, Row
from customer_context.spec import ContextSpec, RecordTable

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.schema import Schema

    from customer_context.pii import PiiPolicy
    from customer_context.ports import Lakehouse
    from customer_context.stores.tables import TableDef

IMPORTS_PREFIX = "imports/"
PARTIAL_FOLDER = "partial"
"""Files under ``imports/<table>/partial/`` update only the columns they have."""
MAX_FIELD_CHARS = 1_048_576
"""Longest text value a record may hold (characters); a longer one rejects its record."""

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DOUBLE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT64 = (-(2**63), 2**63 - 1)
_PADDING = " \t"
# A CSV record in which every quote belongs to a quoted field (csv's strict mode accepts a quote
# inside an unquoted field, `ab"c`, as a literal character: we call that a stray quote).
_QUOTED = r'"[^"]*+(?:""[^"]*+)*+"'
_CSV_RECORD = re.compile(rf'(?:{_QUOTED}|[^",\r\n]*+)(?:,(?:{_QUOTED}|[^",\r\n]*+))*+(?:\r\n|\r|\n)?')
_SURROGATE = re.compile("[\ud800-\udfff]")
_CSV_FIELD_LIMIT = 2**31 - 1  # csv's own limit is lifted: oversize values are reported with their column


@dataclass
class LoadReport:
    """What a load did.

    ``rows`` records were read; ``loaded`` keys were written; ``rejected`` records are in
    ``rejected_records``; ``duplicates`` rows repeated a key read earlier in the file; ``stale``
    rows were older than the row already stored for their key (or read earlier) and not applied;
    ``refused`` says why the whole file was not loaded.
    """

    table: str
    source_key: str
    rows: int = 0
    loaded: int = 0
    rejected: int = 0
    duplicates: int = 0
    stale: int = 0
    partial: bool = False
    ignored_columns: list[str] = field(default_factory=list)
    refused: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> JsonObject:
        """JSON-ready (the first reasons only)."""
        return {**self.__dict__, "reasons": self.reasons[:20]}


class FileRefused(InvalidRequest):
    """A dropped file that cannot be loaded at all; ``raw`` is what is kept of it (JSON text)."""

    def __init__(self, message: str, raw: str = "null") -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class _Bad:
    """A value that could not be read (the reason rejects its record)."""

    reason: str


@dataclass
class FileRecord:
    """One record as read.

    Attributes:
        number: Its first physical line (CSV, JSON Lines) or its row (Parquet), 1-based.
        values: Its values: a list in header order (CSV, Parquet) or the JSON object; None when unreadable.
        error: Why it could not be read.
        text: Its source text, kept for an unreadable record.
    """

    number: int
    values: Any
    error: str | None = None
    text: str | None = None


@dataclass
class ParsedFile:
    """The records of a file; ``unit`` names their numbers (``line`` or ``row``) and ``header`` the
    columns (None for JSON, where each object names its own)."""

    unit: str
    header: list[str] | None
    records: list[FileRecord]


def table_for_key(key: str, spec: ContextSpec) -> str:
    """The record table an object key belongs to (``imports/<table>/…``).

    Raises:
        FileRefused: The key is not under ``imports/<declared table>/``.
    """
    shown = key if key.isprintable() else repr(key)  # a key may hold a line break: the reason stays one line
    if not key.startswith(IMPORTS_PREFIX) or key.count("/") < 2:
        raise FileRefused(f"{shown}: expected imports/<table>/<file>")
    name = key[len(IMPORTS_PREFIX):].split("/", 1)[0]
    if name not in spec.record_tables:
        raise FileRefused(f"{shown}: no record table {name!r} in the spec "
                          f"(declared: {', '.join(spec.record_tables) or 'none'})")
    return name


def is_partial_key(key: str) -> bool:
    """Whether a key is under ``imports/<table>/partial/`` (the file updates only its columns)."""
    parts = key.split("/")
    return len(parts) > 3 and parts[2] == PARTIAL_FOLDER


# ---------------------------------------------------------------------------------------- reading


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _text(data: bytes) -> str:
    """The file as text: UTF-8 (a BOM is dropped); bad bytes are kept as surrogate escapes so that
    each one rejects only its record (:func:`_text_problem`)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileRefused("the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8")
    return data.removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogateescape")


def _text_problem(value: str) -> str | None:
    """Why a text value is not storable: a byte that is not UTF-8, a lone surrogate, or its length."""
    surrogate = None if value.isascii() else _SURROGATE.search(value)
    if surrogate:
        code = ord(surrogate.group())
        if 0xDC80 <= code <= 0xDCFF:  # a byte the UTF-8 decoder could not read (surrogateescape)
            return f"not UTF-8 (byte 0x{code - 0xDC00:02X})"
        return f"lone surrogate U+{code:04X} is not text"
    if len(value) > MAX_FIELD_CHARS:
        return f"{len(value):,} characters, over the limit of {MAX_FIELD_CHARS:,}"
    return None


def read_file(key: str, data: bytes) -> ParsedFile:
    """The records of a file, by its extension: .csv, .jsonl / .ndjson / .json, .parquet (each
    optionally .gz).

    Raises:
        FileRefused: The file cannot be read at all (unknown type, truncated archive, not Parquet,
            an unreadable CSV header, a broken JSON array).
    """
    lower = key.lower()
    if lower.endswith(".gz"):
        import gzip
        import zlib

        lower = lower.removesuffix(".gz")
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise FileRefused(f"not a complete gzip file ({_one_line(exc)})") from None
    if lower.endswith(".csv"):
        return _read_csv(_text(data))
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        text = _text(data)
        if text.lstrip(" \t\r\n").startswith("["):
            return ParsedFile("line", None, _read_json_array(text))
        return ParsedFile("line", None, _read_json_lines(text))
    if lower.endswith(".parquet"):
        return _read_parquet(data)
    raise FileRefused("unsupported file type; use .csv, .jsonl or .parquet (optionally .gz)")


class _Lines:
    """The physical lines of a text, handed to ``csv.reader`` one at a time (``pos``: lines read)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.pos = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _quoting_error(exc: csv.Error, start: int, end: int) -> str:
    """A csv error as a reason (``start``: the record's first line, ``end``: the line it failed on)."""
    message = str(exc)
    if message == "unexpected end of data":
        return "unclosed quote (the quoted field runs to the end of the file)"
    if message.startswith("',' expected after"):
        if end > start:
            return f"unclosed quote (the quoted field opened here ends on line {end} followed by text)"
        return "text after a closing quote (a quoted field must be followed by ',' or the end of the line)"
    return f"unreadable record ({_one_line(exc)})"


def _read_csv(text: str) -> ParsedFile:
    """The header and records of a CSV text. Each record is parsed strictly on its own; a bad one
    (quoting, stray quote, field count) is rejected by its first line and reading resumes on the
    line after that line, so lines an unclosed quote ran over are read again as records."""
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    lines = io.StringIO(text, newline="").readlines()
    source = _Lines(lines)
    reader = csv.reader(source, strict=True)
    header: list[str] | None = None
    records: list[FileRecord] = []
    while source.pos < len(lines):
        start = source.pos
        if not lines[start].strip("\r\n"):
            source.pos += 1  # a blank line is not a record
            continue
        error = None
        try:
            fields = next(reader)
        except csv.Error as exc:
            error = _quoting_error(exc, start + 1, source.pos)
            reader = csv.reader(source, strict=True)  # a fresh state for the next record
        else:
            # a quote left in a value is either doubled inside a quoted field or stray in an unquoted one
            if '"' in "".join(fields) and not _CSV_RECORD.fullmatch("".join(lines[start:source.pos])):
                error = "stray quote (a field holding a quote must be quoted, the quote doubled)"
            elif header is not None and len(fields) != len(header):
                error = f"{len(fields)} fields, the header has {len(header)}"
        if header is None:
            if error:
                raise FileRefused(f"line {start + 1}: header: {error}")
            bad = next((problem for name in fields if (problem := _text_problem(name))), None)
            if bad:
                raise FileRefused(f"line {start + 1}: header: {bad}")
            header = fields
        elif error:
            records.append(FileRecord(start + 1, None, error, lines[start]))
            source.pos = start + 1
        else:
            records.append(FileRecord(start + 1, fields))
    if header is None:
        raise FileRefused("empty file (no header line)")
    return ParsedFile("line", header, records)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (non-finite numbers are refused)")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_no_constant)


def _json_value(text: str) -> tuple[Any, str | None]:
    """A JSON text decoded strictly (no duplicate keys, no NaN / Infinity), or the reason it is not."""
    try:
        return _DECODER.decode(text), None
    except json.JSONDecodeError as exc:
        problem = next((p for c in text if "\udc80" <= c <= "\udcff" and (p := _text_problem(c))), None)
        return None, problem or f"invalid JSON ({exc.msg} at column {exc.colno})"
    except ValueError as exc:  # from the hooks, or an integer too long to convert
        return None, f"invalid JSON ({_one_line(exc)})"
    except RecursionError:
        return None, "invalid JSON (nested too deeply)"


def _json_record(number: int, value: Any, text: str) -> FileRecord:
    if not isinstance(value, dict):
        kind = "an array" if isinstance(value, list) else f"a JSON {type(value).__name__}"
        return FileRecord(number, None, f"expected a JSON object, got {kind}", text)
    return FileRecord(number, value)


def _read_json_lines(text: str) -> list[FileRecord]:
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue
        value, problem = _json_value(line)
        records.append(FileRecord(number, None, problem, line) if problem else _json_record(number, value, line))
    return records


def _read_json_array(text: str) -> list[FileRecord]:
    """The elements of a file holding one JSON array, each named by the line it starts on.

    Raises:
        FileRefused: The array is not valid JSON (its elements cannot be told apart).
    """
    whitespace = re.compile(r"[ \t\r\n]*")
    pos = whitespace.match(text, 0).end() + 1  # type: ignore[union-attr]  # past "["
    records: list[FileRecord] = []
    while True:
        pos = whitespace.match(text, pos).end()  # type: ignore[union-attr]
        line = text.count("\n", 0, pos) + 1
        if text.startswith("]", pos) and not records:
            pos += 1
            break
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            raise FileRefused(f"line {line}: a JSON array that is not valid JSON ({_one_line(exc)}); the file "
                              "is refused whole (write JSON Lines to have bad records rejected alone)") from None
        records.append(_json_record(line, value, text[pos:end]))
        pos = whitespace.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", pos):
            pos += 1
            continue
        if text.startswith("]", pos):
            pos += 1
            break
        raise FileRefused(f"line {text.count(chr(10), 0, pos) + 1}: a JSON array that is not valid JSON "
                          "(expected ',' or ']')")
    if text[pos:].strip(" \t\r\n"):
        raise FileRefused(f"line {text.count(chr(10), 0, pos) + 1}: text after the JSON array")
    return records


def _parquet_values(column: pa.ChunkedArray) -> list[Any]:
    """Python values of a Parquet column; text is decoded here so a bad byte rejects only its row."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        return [None if v is None else v.decode("utf-8", "surrogateescape")
                for v in column.cast(pa.large_binary()).to_pylist()]
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return [None if v is None else _Bad("nanoseconds cannot be kept (timestamps are stored in microseconds)")
                if v % 1000 else (epoch + timedelta(microseconds=v // 1000)).replace(
                    tzinfo=UTC if kind.tz else None)
                for v in column.cast(pa.int64()).to_pylist()]
    try:
        return column.to_pylist()
    except (UnicodeDecodeError, ValueError):  # text nested in a struct or list that is not UTF-8, …
        values: list[Any] = []
        for item in column:
            try:
                values.append(item.as_py())
            except (UnicodeDecodeError, ValueError) as exc:
                values.append(_Bad(f"unreadable value ({_one_line(exc)})"))
        return values


def _read_parquet(data: bytes) -> ParsedFile:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # ArrowInvalid, OSError …: not Parquet, or cut short
        raise FileRefused(f"not a readable Parquet file ({_one_line(exc)})") from None
    columns = [_parquet_values(table.column(i)) for i in range(table.num_columns)]
    records = [FileRecord(n + 1, [values[n] for values in columns]) for n in range(table.num_rows)]
    return ParsedFile("row", list(table.schema.names), records)


# ------------------------------------------------------------------------------------- checking


def _fold(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", name.strip()).casefold()


def check_columns(names: Sequence[str], table: RecordTable, partial: bool = False) -> list[str]:
    """Check a file's (or a JSON record's) column names against the table; return the undeclared ones.

    Raises:
        ValueError: A column appears twice, a declared column is missing (with ``partial``: the
            primary key or ``updated_at``), or a name is a near-miss of a declared one.
    """
    twice = [name for name, n in Counter(names).items() if n > 1]
    if twice:
        raise ValueError("; ".join(f"column {name!r} appears {names.count(name)} times" for name in twice))
    present = set(names)
    undeclared = [name for name in names if name not in table.columns]
    near = [(name, column) for name in undeclared for column in table.columns
            if column not in present and _fold(name) == _fold(column)]
    required = (*table.primary_key, table.updated_at) if partial else tuple(table.columns)
    missing = [column for column in dict.fromkeys(required) if column not in present]
    problems = []
    if missing:
        problems.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    problems += [f"{name!r} looks like {column!r}: rename it" for name, column in near]
    if problems:
        hint = "" if partial or near or set(missing) & {*table.primary_key, table.updated_at} else \
            f" (to update only the columns present, load it as partial: imports/<table>/{PARTIAL_FOLDER}/…)"
        raise ValueError("; ".join(problems) + hint)
    return undeclared


def _integer(value: int) -> int:
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{value} is out of range for a 64-bit integer")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _from_text(value: str, kind: str) -> Any:
    """A text value (any format) read as ``kind``."""
    if kind == "string":
        return value
    text = value.strip(_PADDING)
    if kind == "integer":
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"expected an integer (ASCII digits, optional sign), got {value[:64]!r}")
        return _integer(int(text))
    if kind == "double":
        if not _DOUBLE.fullmatch(text):
            raise ValueError(f"expected a decimal number (ASCII digits, optional exponent), got {value[:64]!r}")
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{value[:64]!r} is out of range for a double")
        return number
    if kind == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {value[:64]!r}")
    if kind == "timestamp":
        return parse_timestamp(text)
    if kind == "date":
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected an ISO-8601 date, got {value[:64]!r}") from None
    raise ValueError(f"unknown type {kind}")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)[:64]


def convert(value: JsonValue, kind: str) -> JsonValue:
    """A value as read (text from any format, or a JSON / Parquet typed value) as a ``kind`` column.

    Text follows one rule per type in every format; typed values must already be of the column's
    kind (an integer may fill a double column). Empty or blank text is null.

    Raises:
        ValueError: The reason, without the column.
    """
    if value is None:
        return None
    if isinstance(value, _Bad):
        raise ValueError(value.reason)
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            raise ValueError(problem)
        return None if not value.strip() else _from_text(value, kind)
    if kind == "string":
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise ValueError("holds a non-finite number") from None
        problem = _text_problem(text)
        if problem:
            raise ValueError(problem)
        return text
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return _integer(value)
        if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
            return _integer(int(value))
        raise ValueError(f"expected an integer, got {_describe(value)}")
    if kind == "double":
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            try:
                return _finite(float(value))
            except OverflowError:
                raise ValueError(f"{value} is out of range for a double") from None
        raise ValueError(f"expected a number, got {_describe(value)}")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {_describe(value)}")
    if kind == "timestamp":
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        raise ValueError(f"expected an ISO-8601 date-time, got {_describe(value)}")
    if kind == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        raise ValueError(f"expected an ISO-8601 date, got {_describe(value)}")
    raise ValueError(f"unknown type {kind}")


def validate_row(values: Row, table: RecordTable, columns: Sequence[str] | None = None) -> Row:
    """The ``columns`` (default: all declared) of a row converted to their declared types.

    Raises:
        ValueError: The first problem: the column and the reason.
    """
    out: dict[str, Any] = {}
    for column in columns if columns is not None else table.columns:
        try:
            out[column] = convert(values.get(column), table.columns[column])
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"{column}: {exc}") from None
    for column in (*table.primary_key, table.updated_at):
        if out.get(column) is None:
            raise ValueError(f"{column}: required")
    return out


# -------------------------------------------------------------------------------------- schemas

def _definition(name: str, table: RecordTable) -> TableDef:
    from customer_context.stores.tables import record_table_def

    return record_table_def(name, table.columns, table.primary_key, table.description)


def _schema_problems(name: str, table: RecordTable, current: Schema) -> list[str]:
    """Spec changes Iceberg cannot apply to the loaded table ``current``, each with what to do."""
    from customer_context.stores.tables import column_kind

    have = {f.name: f for f in current.fields}
    problems = []
    for column, kind in table.columns.items():
        old = have.get(column)
        if old is not None and column_kind(old.field_type) != kind:
            was = column_kind(old.field_type)
            problems.append(
                f"record_tables.{name}.columns.{column}: the loaded table holds it as {was}, and Iceberg cannot change "
                f"{was} to {kind} in place; keep {was}, or remove the column from the spec and load a file into "
                f"the table (its stored values are dropped), then declare it as {kind} and reload the files that "
                f"fill it")
    loaded_key = sorted(str(current.find_column_name(i)) for i in current.identifier_field_ids)
    if loaded_key != sorted(table.primary_key):
        problems.append(
            f"record_tables.{name}.primary_key: {sorted(table.primary_key)} differs from the loaded table's "
            f"{loaded_key}; keep the primary key, or declare a new record table and load the files into it")
    return problems


def check_record_schemas(lakehouse: Lakehouse, spec: ContextSpec) -> list[str]:
    """Record-table changes in ``spec`` that cannot be applied to the lakehouse, each with what to do.

    Columns added or dropped in the spec are applied by Iceberg schema evolution on the next load
    (builds read the table as the spec declares it meanwhile); a changed type or primary key of a
    loaded table, and a column named like a lineage column, cannot be.
    """
    from customer_context.stores.tables import LINEAGE_COLUMNS

    problems = []
    for name, table in spec.record_tables.items():
        problems += [f"record_tables.{name}.columns.{column}: the name is reserved for the lineage column"
                     for column in table.columns if column in LINEAGE_COLUMNS]
        if lakehouse.exists(name):
            problems += _schema_problems(name, table, lakehouse.table(name).schema())
    return problems


def read_record_table(lakehouse: Lakehouse, name: str, table: RecordTable) -> pa.Table:
    """The rows of a record table with the spec's columns, read only: a column the spec added since
    the last load is null, one it dropped is left out (loads apply such changes to the table).

    Raises:
        ConfigError: A change Iceberg cannot apply (see :func:`check_record_schemas`).
    """
    import pyarrow as pa

    definition = _definition(name, table)
    lakehouse.define(definition)
    schema = definition.schema.as_arrow()
    if not lakehouse.exists(name):
        return schema.empty_table()
    problems = _schema_problems(name, table, lakehouse.table(name).refresh().schema())
    if problems:
        raise ConfigError("; ".join(problems))
    data = lakehouse.scan(name)
    return pa.Table.from_arrays(
        [data.column(f.name).cast(f.type) if f.name in data.column_names else pa.nulls(data.num_rows, f.type)
         for f in schema], schema=schema)


def ensure_record_table(lakehouse: Lakehouse, name: str, table: RecordTable) -> TableDef:
    """Declare a record table and bring a loaded one to the spec's columns (Iceberg schema evolution:
    new columns added as optional, removed ones dropped).

    Raises:
        ConfigError: A change Iceberg cannot apply (see :func:`check_record_schemas`).
    """
    from customer_context.stores.tables import LINEAGE_COLUMNS

    definition = _definition(name, table)
    reserved = [column for column in table.columns if column in LINEAGE_COLUMNS]
    if reserved:
        raise ConfigError(f"record_tables.{name}.columns.{reserved[0]}: the name is reserved for the lineage column")
    lakehouse.define(definition)
    if not lakehouse.exists(name):
        return definition

    def evolve(iceberg: Any) -> None:
        current = iceberg.refresh().schema()
        problems = _schema_problems(name, table, current)
        if problems:
            raise ConfigError("; ".join(problems))
        have = {f.name for f in current.fields}
        wanted = {f.name for f in definition.schema.fields}
        added = [f for f in definition.schema.fields if f.name not in have]
        dropped = [f.name for f in current.fields if f.name not in wanted]
        if added or dropped:
            with iceberg.update_schema() as update:
                for f in added:
                    update.add_column(f.name, f.field_type, required=False)
                for column in dropped:
                    update.delete_column(column)

    lakehouse.update(name, evolve)
    return definition


# -------------------------------------------------------------------------------------- loading


def _raw(values: Any, table: RecordTable, guarded: bool) -> str:
    """What ``rejected_records.raw`` keeps of a record (JSON text). With a PII policy on the table
    only declared columns are kept (the policy applied to them)."""
    from customer_context.strict_json import column_text

    if guarded:
        values = {k: v for k, v in values.items() if k in table.columns}
    return column_text({k: v.reason if isinstance(v, _Bad) else v for k, v in values.items()}) or "{}"


def _rows(parsed: ParsedFile, name: str, table: RecordTable, partial: bool, pii: PiiPolicy | None,
          report: LoadReport, reject: Callable[[int, str, str], None]) -> list[tuple[dict[str, Any], list[str]]]:
    """Good rows (converted, with the declared columns they set) of a parsed file, in file order."""
    guarded = pii is not None and any(action != "keep" for action in table.pii.values())
    columns: list[str] = []
    if parsed.header is not None:
        try:
            report.ignored_columns = check_columns(parsed.header, table, partial)
        except ValueError as exc:
            raise FileRefused(f"header: {exc}", json.dumps(parsed.header)) from None
        columns = [c for c in parsed.header if c in table.columns]
    ignored: dict[str, None] = dict.fromkeys(report.ignored_columns)
    rows: list[tuple[dict[str, Any], list[str]]] = []
    for record in parsed.records:
        report.rows += 1
        where = f"{parsed.unit} {record.number}"
        if record.error is not None:
            # an unreadable record cannot have its PII columns found: with a policy, its text is withheld
            reject(record.number, f"{where}: {record.error}", "null" if guarded else json.dumps(record.text))
            continue
        values = dict(zip(parsed.header, record.values, strict=True)) if parsed.header is not None \
            else record.values
        present = columns
        problem = None
        if parsed.header is None:
            try:
                ignored.update(dict.fromkeys(check_columns(list(values), table, partial)))
                present = [c for c in values if c in table.columns]
            except ValueError as exc:
                problem = str(exc)
        # text is checked as read, before the PII policy can turn a bad value into a good token (and
        # blank text is null before it could be hashed)
        problem = problem or next((f"{c}: {p}" for c in present if isinstance(values.get(c), str)
                                   and (p := _text_problem(values[c]))), None)
        values.update({c: None for c in present if isinstance(values.get(c), str) and not values[c].strip()})
        if pii is not None:
            pii.apply_record(name, values)  # before anything is written, rejected rows' raw text included
        try:
            if problem:
                raise ValueError(problem)
            rows.append((validate_row(values, table, present), present))
        except ValueError as exc:
            reject(record.number, f"{where}: {exc}", _raw(values, table, guarded))
    report.ignored_columns = list(ignored)
    return rows


def _upsert(lakehouse: Lakehouse, name: str, table: RecordTable, rows: list[tuple[dict[str, Any], list[str]]],
            lineage: dict[str, Any]) -> tuple[int, int]:
    """Apply rows in order to the stored ones: a row older (by ``updated_at``) than its key's current
    row is skipped, a tie goes to the row applied later. Returns (keys written, rows skipped)."""
    import pyarrow as pa
    from pyiceberg.table.upsert_util import create_match_filter

    key_columns = list(table.primary_key)
    keys = list(dict.fromkeys(tuple(row[c] for c in key_columns) for row, _ in rows))

    def apply(iceberg: Any) -> tuple[int, int]:
        schema = iceberg.refresh().schema().as_arrow()
        state: dict[tuple[Any, ...], dict[str, Any]] = {}  # key → its row as stored, then as applied
        if iceberg.current_snapshot() is not None:
            wanted = pa.Table.from_pylist([dict(zip(key_columns, k, strict=True)) for k in keys],
                                          schema=pa.schema([schema.field(c) for c in key_columns]))
            for stored in iceberg.scan(row_filter=create_match_filter(wanted, key_columns)).to_arrow().to_pylist():
                state[tuple(stored[c] for c in key_columns)] = stored
        stored_keys = set(state)
        changed: dict[tuple[Any, ...], None] = {}
        stale = 0
        for row, present in rows:
            key = tuple(row[c] for c in key_columns)
            current = state.get(key)
            if current is not None and current.get(table.updated_at) is not None \
                    and row[table.updated_at] < current[table.updated_at]:
                stale += 1
                continue
            state[key] = {**(current or {}), **{c: row[c] for c in present}, **lineage}
            changed[key] = None
        if changed:
            # the whole rows of the changed keys replace the stored ones (pyiceberg's upsert is not used: it
            # fails on a table whose columns were reordered by schema evolution)
            data = pa.Table.from_pylist([state[k] for k in changed], schema=schema)
            replaced = [k for k in changed if k in stored_keys]
            if replaced:
                old = pa.Table.from_pylist([dict(zip(key_columns, k, strict=True)) for k in replaced],
                                           schema=pa.schema([schema.field(c) for c in key_columns]))
                iceberg.overwrite(data, overwrite_filter=create_match_filter(old, key_columns))
            else:
                iceberg.append(data)
        return len(changed), stale

    return lakehouse.update(name, apply)  # type: ignore[no-any-return]


def load_file(lakehouse: Lakehouse, spec: ContextSpec, key: str, data: bytes,
              received_at: datetime | None = None, pii: PiiPolicy | None = None, partial: bool | None = None
              ) -> LoadReport:
    """Validate and upsert one dropped file.

    Args:
        lakehouse: Where the record table and ``rejected_records`` are.
        spec: The context spec (the record table is named by the key: ``imports/<table>/…``).
        key: The object key (its extension says the format).
        data: The file's bytes.
        received_at: When it was received (default: now).
        pii: The PII policy, applied to each row before anything is written.
        partial: Update only the columns the file has (default: when the key is under
            ``imports/<table>/partial/``).

    Returns:
        What happened. Bad records and a refused file are in ``rejected_records`` with the reason;
        only storage failures raise.
    """
    import pyarrow as pa

    from customer_context.stores.tables import LINEAGE_COLUMNS

    received_at = received_at or datetime.now(UTC)
    folder = key[len(IMPORTS_PREFIX):].split("/", 1)[0] if key.startswith(IMPORTS_PREFIX) else ""
    report = LoadReport(table=folder, source_key=key)
    rejected: list[dict[str, Any]] = []

    def reject(number: int, reason: str, raw: str) -> None:
        report.reasons.append(reason)
        rejected.append({"table_name": report.table, "source_key": key, "row_number": number, "reason": reason,
                         "raw": raw, "received_at": received_at})

    rows: list[tuple[dict[str, Any], list[str]]] = []
    if key.endswith("/"):
        return report  # a folder marker (the S3 console's "Create folder"), not a file
    try:
        name = table_for_key(key, spec)
        table = spec.record_tables[name]
        report.partial = is_partial_key(key) if partial is None else partial
        ensure_record_table(lakehouse, name, table)
        rows = _rows(read_file(key, data), name, table, report.partial, pii, report, reject)
    except (FileRefused, ConfigError) as exc:
        report.refused = exc.message
        reject(0, exc.message, getattr(exc, "raw", "null"))
    if rows:
        report.duplicates = len(rows) - len({tuple(row[c] for c in table.primary_key) for row, _ in rows})
        report.loaded, report.stale = _upsert(lakehouse, name, table, rows,
                                              dict(zip(LINEAGE_COLUMNS, (key, received_at), strict=True)))
    if rejected:
        lakehouse.append("rejected_records", pa.Table.from_pylist(
            rejected, schema=lakehouse.arrow_schema("rejected_records")))
    report.rejected = len(rejected) - (1 if report.refused else 0)
    return report
