"""Property tests of the record-file loaders against Python's ``csv`` module in strict mode (and
``json`` for JSON Lines): every record is loaded exactly, at its physical line, or rejected with its
line; no loaded field holds another record.

* Any records written by ``csv.writer`` (any text: quotes, commas, line breaks, separators, NUL) are
  read back exactly, each at the physical line it starts on, as ``csv.reader(strict=True)`` reads them.
* Among them, lines with an unclosed quote, a stray quote or the wrong number of fields are rejected
  with their line, and every well-formed record around them is still read exactly. (A limit of CSV
  itself: an unclosed quote ends at the next quote in the file, and when that quote is followed by a
  comma, a line break or another quote, the result is valid CSV that no reader can tell from a field
  spanning lines. So here good fields do not start with a quote, a comma or a line break — a quoted
  field's opening quote is then followed by none of them — and a stray quote is never the last
  character of its field. Everything else is arbitrary.)
* JSON Lines: well-formed objects are read exactly at their line, broken lines are rejected alone.
* End to end through ``load_file`` into Iceberg: exactly the good records are stored, and
  ``rejected_records`` names exactly the broken lines.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from customer_context.assemble.records import load_file, read_file
from customer_context.spec import DEFAULT_SPEC, ContextSpec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
SPECIAL = ['"', ",", "\r", "\n", " ", "\x00", "\u2028", "\x85", "é", "🙂"]
TEXT = st.text(st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8")), max_size=12)
PLAIN = st.text(st.characters(codec="utf-8", exclude_characters='",\r\n'), min_size=1, max_size=8).filter(
    lambda s: s.strip() != "")  # a line of plain text with no quoting character at all
HEADER = ("key", "a", "b")
UPDATED = "2026-11-01T00:00:00Z"


def physical_lines(text: str) -> int:
    """Lines as the loader counts them (LF, CR LF and a lone CR end a line, as for csv)."""
    return len(io.StringIO(text, newline="").readlines())


def write_csv(rows: list[list[str]], terminator: str, quoting: int = csv.QUOTE_MINIMAL) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=terminator, quoting=quoting).writerows(rows)
    return out.getvalue()


def parsed(text: str) -> tuple[list[str] | None, list[tuple[int, Any]], list[int]]:
    """(header, [(line, values)] loaded, [line] rejected) as the loader reads a CSV text."""
    result = read_file("imports/t/f.csv", text.encode("utf-8", "surrogatepass"))
    return (result.header, [(r.number, r.values) for r in result.records if r.error is None],
            [r.number for r in result.records if r.error is not None])


# csv.writer quotes a field holding a lone CR only when CR is part of its line terminator: with "\n" it
# writes such a field bare, and no reader can read it back, so "\n" goes with QUOTE_ALL.
DIALECTS = st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\r\n", csv.QUOTE_ALL), ("\n", csv.QUOTE_ALL)])


@SETTINGS
@given(width=st.integers(1, 4), data=st.data(), dialect=DIALECTS)
def test_any_records_csv_writes_are_read_exactly_at_their_lines(width: int, data: st.DataObject,
                                                                 dialect: tuple[str, int]) -> None:
    terminator, quoting = dialect
    # Given records of arbitrary text, written by csv.writer under a header
    header = [f"c{i}" for i in range(width)]
    rows = data.draw(st.lists(st.lists(TEXT, min_size=width, max_size=width), max_size=8))
    if width == 1:  # a one-column record of "" is written as a blank line, which is not a record
        rows = [row for row in rows if row != [""]]
    text = write_csv([header, *rows], terminator, quoting)
    # When the loader reads it
    got_header, loaded, rejected = parsed(text)
    # Then it reads what strict csv reads: every record, exactly, at the line where it starts
    strict = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    assert strict == [header, *rows]
    starts = [physical_lines(write_csv([header, *rows[:n]], terminator, quoting)) + 1 for n in range(len(rows))]
    assert (got_header, loaded, rejected) == (header, list(zip(starts, rows, strict=True)), [])


GOOD_FIELD = TEXT.filter(lambda s: not s.startswith(('"', ",", "\r", "\n")))


@st.composite
def broken_line(draw: st.DrawFn, width: int) -> str:
    """A one-line record with an unclosed quote, a stray quote, or one field too many or too few."""
    kind = draw(st.sampled_from(["unclosed", "stray", "ragged"]))
    fields = draw(st.lists(PLAIN, min_size=width, max_size=width))
    at = draw(st.integers(0, width - 1))
    if kind == "unclosed":
        fields[at] = '"' + fields[at]
    elif kind == "stray":  # inside the field, never its last character (see the module's docstring)
        field = fields[at] if len(fields[at]) > 1 else fields[at] + "x"
        cut = draw(st.integers(1, len(field) - 1))
        fields[at] = field[:cut] + '"' + field[cut:]
    else:
        fields = fields + ["x"] if draw(st.booleans()) else fields[:-1]
    return ",".join(fields)


Case = tuple[str, list[tuple[int, list[str]]], list[int]]


@st.composite
def csv_with_broken_lines(draw: st.DrawFn, header: tuple[str, ...] = HEADER, last: str | None = None) -> Case:
    """A CSV text of good records (keyed k0, k1 …; ``last`` as their last field, when given) and broken
    lines; with the good records by line and the broken lines."""
    terminator = draw(st.sampled_from(["\r\n", "\n"]))  # of the broken lines (csv.writer's is CR LF)
    text = write_csv([list(header)], "\r\n")
    free = len(header) - 1 - (last is not None)
    good: list[tuple[int, list[str]]] = []
    broken: list[int] = []
    for n, is_good in enumerate(draw(st.lists(st.booleans(), min_size=1, max_size=10))):
        line = physical_lines(text) + 1
        if is_good:
            row = [f"k{n}", *draw(st.lists(GOOD_FIELD, min_size=free, max_size=free)), *([last] if last else [])]
            good.append((line, row))
            text += write_csv([row], "\r\n")
        else:
            broken.append(line)
            text += draw(broken_line(len(header))) + terminator
    return text, good, broken


@SETTINGS
@given(case=csv_with_broken_lines())
def test_broken_csv_lines_are_rejected_alone_and_no_field_holds_another_record(case: Case) -> None:
    text, good, broken = case
    # When the loader reads a file mixing good records and broken lines
    header, loaded, rejected = parsed(text)
    # Then each good record is read exactly at its line, each broken line is rejected by its number,
    # and nothing else is read (so no field holds another record)
    assert (header, loaded, rejected) == (list(HEADER), good, broken)


JSON_VALUE = st.one_of(TEXT, st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1))


@SETTINGS
@given(data=st.data(), ascii_only=st.booleans())
def test_json_lines_are_read_exactly_and_broken_lines_rejected_alone(data: st.DataObject, ascii_only: bool) -> None:
    # Given JSON objects of arbitrary values, one per line, some lines cut short
    lines, good, broken = [], [], []
    for n, is_good in enumerate(data.draw(st.lists(st.booleans(), min_size=1, max_size=10)), start=1):
        record = data.draw(st.dictionaries(st.sampled_from(HEADER), JSON_VALUE))
        line = json.dumps(record, ensure_ascii=ascii_only)
        if is_good:
            good.append((n, record))
        else:
            line = line[:data.draw(st.integers(0, len(line) - 1))] or "{"
            broken.append(n)
        lines.append(line)
    # When the loader reads them
    result = read_file("imports/t/f.jsonl", ("\n".join(lines) + "\n").encode())
    # Then it reads what json reads, at the same lines, and rejects exactly the broken lines
    assert [(r.number, r.values) for r in result.records if r.error is None] == good
    assert [r.number for r in result.records if r.error is not None] == broken
    assert all(json.loads(lines[n - 1]) == record for n, record in good)


def notes_spec() -> ContextSpec:
    """The shipped spec plus ``notes``: text columns keyed by ``key``."""
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["record_tables"]["notes"] = {
        "description": "notes", "primary_key": ["key"], "updated_at": "updated_at",
        "columns": {"key": "string", "a": "string", "b": "string", "updated_at": "timestamp"}, "identifiers": {}}
    return ContextSpec.model_validate(data)


NOTES = notes_spec()


@pytest.fixture(scope="module")
def lakehouses(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Makes a fresh SQLite-catalog lakehouse (one per example)."""
    from customer_context.stores.iceberg import Lakehouse
    from pyiceberg.catalog.sql import SqlCatalog

    root = tmp_path_factory.mktemp("lakes")
    count = iter(range(10**6))

    def make() -> Lakehouse:
        path = Path(root, f"l{next(count)}")
        path.mkdir()
        return Lakehouse(SqlCatalog("t", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}"), "t")

    return make


@settings(SETTINGS, max_examples=40)
@given(case=csv_with_broken_lines(header=(*HEADER, "updated_at"), last=UPDATED))
def test_load_file_stores_exactly_the_good_records_and_rejects_exactly_the_broken_lines(
        lakehouses: Any, case: Case) -> None:
    text, good, broken = case
    lakehouse = lakehouses()
    # When the file is loaded into Iceberg
    report = load_file(lakehouse, NOTES, "imports/notes/f.csv", text.encode())
    # Then the table holds exactly the good records (blank text is null), rejected_records the broken lines
    stored = {r["key"]: [r["key"], r["a"], r["b"]] for r in lakehouse.scan("notes").to_pylist()} if good else {}
    assert stored == {row[0]: [v if v.strip() else None for v in row[:3]] for _, row in good}
    rejected = sorted(r["row_number"] for r in lakehouse.scan("rejected_records").to_pylist()) if broken else []
    assert (rejected, report.rejected) == (broken, len(broken))
