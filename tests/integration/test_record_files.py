"""Record files never change data silently (issue 23): each finding of the careless-data-team review,
loaded through ``load_file`` into a real Iceberg catalog (SQLite) and read back."""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from customer_context.assemble.records import MAX_FIELD_CHARS, LoadReport, load_file
from customer_context.spec import DEFAULT_SPEC, ContextSpec

CRM = b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
T1, T2 = "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"


def spec_with_accounts() -> ContextSpec:
    """The default spec plus ``accounts``: one column of every type."""
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["record_tables"]["accounts"] = {
        "description": "Accounts from billing", "primary_key": ["account_id"], "updated_at": "updated_at",
        "columns": {"account_id": "string", "seats": "integer", "score": "double", "active": "boolean",
                    "note": "string", "updated_at": "timestamp"},
        "identifiers": {},
    }
    return ContextSpec.model_validate(data)


SPEC = spec_with_accounts()
ACCOUNTS = b"account_id,seats,score,active,note,updated_at\n"


def load(lakehouse: Any, key: str, data: bytes, **kwargs: Any) -> LoadReport:
    return load_file(lakehouse, SPEC, key, data, **kwargs)


def stored(lakehouse: Any, table: str, key: str = "") -> dict[str, dict[str, Any]]:
    """Rows of a record table by primary key (``key`` defaults to the table's first key column)."""
    column = key or SPEC.record_tables[table].primary_key[0]
    return {row[column]: row for row in lakehouse.scan(table).to_pylist()} if lakehouse.exists(table) else {}


def rejected(lakehouse: Any) -> list[dict[str, Any]]:
    return sorted(lakehouse.scan("rejected_records").to_pylist(), key=lambda r: (r["source_key"], r["row_number"]))


def jsonl(*rows: dict[str, Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def account(account_id: str, **values: Any) -> dict[str, Any]:
    return {"account_id": account_id, "seats": None, "score": None, "active": None, "note": None,
            "updated_at": T1, **values}


# ---------------------------------------------------------------------------------- CSV parsing


def test_an_unclosed_quote_rejects_its_line_and_the_rows_after_it_load(lakehouse: Any) -> None:
    # Given a CRM export of 5 rows whose second row opens a quote it never closes
    data = CRM + (
        f"C1,a@x.com,Ann,lead,,{T1}\n"
        f'C2,b@x.com,"Bob,lead,,{T1}\n'
        f"C3,c@x.com,Cy,lead,,{T1}\n"
        f'C4,d@x.com,"Di ""D"" Li",lead,,{T1}\n'
        f"C5,e@x.com,Eve,lead,,{T1}\n").encode()
    # When it is loaded
    report = load(lakehouse, "imports/crm_contacts/crm.csv", data)
    # Then the broken row is rejected by its physical line, the four others load exactly
    assert (report.loaded, report.rejected) == (4, 1)
    assert report.reasons == ["line 3: unclosed quote (the quoted field opened here ends on line 5 followed by text)"]
    rows = stored(lakehouse, "crm_contacts")
    assert {k: (r["email"], r["full_name"]) for k, r in rows.items()} == {
        "C1": ("a@x.com", "Ann"), "C3": ("c@x.com", "Cy"), "C4": ("d@x.com", 'Di "D" Li'), "C5": ("e@x.com", "Eve")}
    assert [(r["row_number"], r["reason"]) for r in rejected(lakehouse)] == [(3, report.reasons[0])]


def test_an_unclosed_quote_at_the_end_and_a_stray_quote_are_rejected_alone(lakehouse: Any) -> None:
    # Given a stray quote inside an unquoted field, and a last row whose quote runs to the end of the file
    data = CRM + (
        f'C1,a@x.com,Ann "the" Admin,lead,,{T1}\n'
        f"C2,b@x.com,Bob,lead,,{T1}\n"
        f'C3,c@x.com,"Cy,lead,,{T1}\n').encode()
    # When it is loaded
    report = load(lakehouse, "imports/crm_contacts/crm.csv", data)
    # Then each is rejected with its line and the good row loads
    assert report.reasons == [
        "line 2: stray quote (a field holding a quote must be quoted, the quote doubled)",
        "line 4: unclosed quote (the quoted field runs to the end of the file)"]
    assert list(stored(lakehouse, "crm_contacts")) == ["C2"]


def test_a_quoted_field_spans_lines_and_lines_are_counted_physically(lakehouse: Any) -> None:
    # Given a ticket body over three physical lines, and a later row with a bad time
    data = (b"ticket_id,requester_email,channel,status,subject,body,created_at,updated_at\n"
            + f'T1,a@x.com,email,open,Hi,"line one\nline two, with a comma\n""quoted""",{T1},{T1}\n'.encode()
            + f"T2,b@x.com,email,open,Hi,short,{T1},not a time\n".encode())
    # When it is loaded
    report = load(lakehouse, "imports/support_tickets/t.csv", data)
    # Then the body is kept exactly and the bad row is named by its physical line (5), not its row (2)
    assert stored(lakehouse, "support_tickets")["T1"]["body"] == 'line one\nline two, with a comma\n"quoted"'
    assert report.reasons == ["line 5: updated_at: expected an ISO-8601 date-time, got 'not a time'"]


def test_ragged_rows_are_rejected_with_their_line_instead_of_shifting_fields(lakehouse: Any) -> None:
    # Given one row with a field too many and one with a field too few
    data = CRM + (
        f"C1,a@x.com,Ann,lead,,{T1}\n"
        f"C2,b@x.com,Bob,Builder,lead,,{T1}\n"
        f"C3,c@x.com,lead,,{T1}\n").encode()
    # When it is loaded
    report = load(lakehouse, "imports/crm_contacts/crm.csv", data)
    # Then both are rejected, nothing shifted into another column
    assert report.reasons == ["line 3: 7 fields, the header has 6", "line 4: 5 fields, the header has 6"]
    assert list(stored(lakehouse, "crm_contacts")) == ["C1"]


# ------------------------------------------------------------------------------------ the header


def test_a_partial_export_is_refused_and_nulls_nothing_unless_loaded_as_partial(lakehouse: Any) -> None:
    # Given a stored contact
    load(lakehouse, "imports/crm_contacts/full.csv", CRM + f"C1,ann@x.com,Ann,lead,Tom,{T1}\n".encode())
    # When an export without the email and account manager columns is dropped
    partial = f"contact_id,full_name,lifecycle_stage,updated_at\nC1,Ann,vip,{T2}\n".encode()
    report = load(lakehouse, "imports/crm_contacts/part.csv", partial)
    # Then the email identifier is still there: the whole file is refused, naming the columns
    assert stored(lakehouse, "crm_contacts")["C1"]["email"] == "ann@x.com"
    assert report.refused == ("header: missing columns 'email', 'account_manager' (to update only the columns "
                              "present, load it as partial: imports/<table>/partial/…)")
    assert report.loaded == 0
    assert [(r["source_key"], r["row_number"], r["reason"]) for r in rejected(lakehouse)] == [
        ("imports/crm_contacts/part.csv", 0, f"{report.refused}")]
    # When the same file is dropped as partial
    report = load(lakehouse, "imports/crm_contacts/partial/part.csv", partial)
    # Then only the columns it has are updated
    row = stored(lakehouse, "crm_contacts")["C1"]
    assert report.partial and report.loaded == 1
    assert (row["email"], row["lifecycle_stage"], row["account_manager"]) == ("ann@x.com", "vip", "Tom")


def test_header_near_misses_are_named(lakehouse: Any) -> None:
    # Given a header with `Email` and ` account_manager`
    data = f"contact_id,Email,full_name,lifecycle_stage, account_manager,updated_at\nC1,a@x.com,Ann,lead,Tom,{T1}\n"
    # When it is loaded
    report = load(lakehouse, "imports/crm_contacts/crm.csv", data.encode())
    # Then nothing is loaded with null columns: it is refused, naming each near-miss
    assert stored(lakehouse, "crm_contacts") == {}
    assert report.refused == ("header: missing columns 'email', 'account_manager'; 'Email' looks like 'email': "
                              "rename it; ' account_manager' looks like 'account_manager': rename it")


def test_a_duplicated_header_column_is_refused(lakehouse: Any) -> None:
    # Given a header naming email twice
    data = f"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at,email\n" \
           f"C1,a@x.com,Ann,lead,Tom,{T1},b@x.com\n"
    # When it is loaded
    report = load(lakehouse, "imports/crm_contacts/crm.csv", data.encode())
    # Then it is refused rather than the last email winning
    assert stored(lakehouse, "crm_contacts") == {}
    assert report.refused == "header: column 'email' appears 2 times"


# ----------------------------------------------------------------------------- updated_at order


def test_an_older_file_never_replaces_a_newer_row_and_ties_go_to_the_later_load(lakehouse: Any) -> None:
    # Given a contact updated on Nov 2
    load(lakehouse, "imports/crm_contacts/new.csv", CRM + f"C1,ann@x.com,Ann,vip,Tom,{T2}\n".encode())
    # When an export from Nov 1 is loaded after it
    report = load(lakehouse, "imports/crm_contacts/old.csv", CRM + f"C1,old@x.com,Ann,lead,Tom,{T1}\n".encode())
    # Then it is not applied (counted stale) and updated_at never goes backwards
    row = stored(lakehouse, "crm_contacts")["C1"]
    assert (row["email"], row["lifecycle_stage"], row["updated_at"].isoformat()) == (
        "ann@x.com", "vip", "2026-11-02T00:00:00+00:00")
    assert (report.loaded, report.stale) == (0, 1)
    # When a file with the same updated_at is loaded: the later load wins the tie
    load(lakehouse, "imports/crm_contacts/fix.csv", CRM + f"C1,ann@x.com,Ann,customer,Tom,{T2}\n".encode())
    assert stored(lakehouse, "crm_contacts")["C1"]["lifecycle_stage"] == "customer"
    # and within one file, an older row after a newer one is skipped; a tie goes to the later row
    report = load(lakehouse, "imports/crm_contacts/mixed.csv", CRM + (
        f"C2,b@x.com,Bob,vip,,{T2}\nC2,b@x.com,Bob,lead,,{T1}\nC3,c@x.com,Cy,lead,,{T1}\n"
        f"C3,c@x.com,Cy,vip,,{T1}\n").encode())
    rows = stored(lakehouse, "crm_contacts")
    assert (rows["C2"]["lifecycle_stage"], rows["C3"]["lifecycle_stage"]) == ("vip", "vip")
    assert (report.loaded, report.duplicates, report.stale) == (2, 2, 1)


# ------------------------------------------------------------------------------- no coercion


def test_integers_are_exact_in_every_format(lakehouse: Any) -> None:
    # Given 2^53 + 1, which a double cannot hold, in CSV, JSON Lines and Parquet
    big = 9007199254740993
    load(lakehouse, "imports/accounts/a.csv", ACCOUNTS + f"A1,{big},,,,{T1}\n".encode())
    load(lakehouse, "imports/accounts/a.jsonl", jsonl(account("A2", seats=big)))
    load(lakehouse, "imports/accounts/a.parquet", parquet(pa.table({
        "account_id": ["A3"], "seats": pa.array([big], pa.int64()), "score": pa.array([None], pa.float64()),
        "active": pa.array([None], pa.bool_()), "note": pa.array([None], pa.string()),
        "updated_at": pa.array([T1]).cast(pa.timestamp("us", "UTC"))})))
    # Then each is stored exactly
    rows = stored(lakehouse, "accounts")
    assert [rows[k]["seats"] for k in ("A1", "A2", "A3")] == [big, big, big]


def test_exponents_underscores_and_other_digit_forms_are_not_integers(lakehouse: Any) -> None:
    # Given integers written as 1e3, 1_000, an Arabic-Indic three and 1.0, in CSV and JSON Lines
    csv_data = ACCOUNTS + f"A1,1e3,,,,{T1}\nA2,1_000,,,,{T1}\nA3,٣,,,,{T1}\nA4,1.0,,,,{T1}\nA5, 42 ,,,,{T1}\n".encode()
    report = load(lakehouse, "imports/accounts/a.csv", csv_data)
    json_report = load(lakehouse, "imports/accounts/a.jsonl", jsonl(
        account("B1", seats=1e3), account("B2", seats="1_000"), account("B3", seats=True), account("B4", seats=7)))
    # Then each is rejected with the line, the column and the value; plain digits (padded) load
    assert report.reasons == [
        "line 2: seats: expected an integer (ASCII digits, optional sign), got '1e3'",
        "line 3: seats: expected an integer (ASCII digits, optional sign), got '1_000'",
        "line 4: seats: expected an integer (ASCII digits, optional sign), got '٣'",
        "line 5: seats: expected an integer (ASCII digits, optional sign), got '1.0'"]
    assert json_report.reasons == [
        "line 1: seats: expected an integer, got 1000.0",
        "line 2: seats: expected an integer (ASCII digits, optional sign), got '1_000'",
        "line 3: seats: expected an integer, got true"]
    rows = stored(lakehouse, "accounts")
    assert sorted(rows) == ["A5", "B4"] and (rows["A5"]["seats"], rows["B4"]["seats"]) == (42, 7)


def test_non_finite_doubles_are_rejected_in_every_format(lakehouse: Any) -> None:
    # Given NaN, infinities and an overflowing exponent in CSV, JSON Lines and Parquet
    csv_report = load(lakehouse, "imports/accounts/a.csv", ACCOUNTS + (
        f"A1,,NaN,,,{T1}\nA2,,inf,,,{T1}\nA3,,-Infinity,,,{T1}\nA4,,1e999,,,{T1}\nA5,,٣.5,,,{T1}\n"
        f"A6,,-1.5e3,,,{T1}\n").encode())
    json_report = load(lakehouse, "imports/accounts/a.jsonl", jsonl(
        account("B1", score=0), account("B2", score=0), account("B3", score=2)
    ).replace(b'"score": 0', b'"score": NaN', 1).replace(b'"score": 0', b'"score": 1e999', 1))
    parquet_report = load(lakehouse, "imports/accounts/a.parquet", parquet(pa.table({
        "account_id": ["C1", "C2", "C3"], "seats": pa.array([None] * 3, pa.int64()),
        "score": pa.array([float("nan"), float("inf"), 0.5]), "active": pa.array([None] * 3, pa.bool_()),
        "note": pa.array([None] * 3, pa.string()),
        "updated_at": pa.array([T1] * 3).cast(pa.timestamp("us", "UTC"))})))
    # Then each is rejected with a reason, and finite numbers load
    assert csv_report.reasons == [
        "line 2: score: expected a decimal number (ASCII digits, optional exponent), got 'NaN'",
        "line 3: score: expected a decimal number (ASCII digits, optional exponent), got 'inf'",
        "line 4: score: expected a decimal number (ASCII digits, optional exponent), got '-Infinity'",
        "line 5: score: '1e999' is out of range for a double",
        "line 6: score: expected a decimal number (ASCII digits, optional exponent), got '٣.5'"]
    assert json_report.reasons == ["line 1: invalid JSON (NaN is not JSON (non-finite numbers are refused))",
                                   "line 2: score: inf is not a finite number"]
    assert parquet_report.reasons == ["row 1: score: nan is not a finite number",
                                      "row 2: score: inf is not a finite number"]
    rows = stored(lakehouse, "accounts")
    assert (rows["A6"]["score"], rows["B3"]["score"], rows["C3"]["score"]) == (-1500.0, 2.0, 0.5)


def test_json_booleans_stay_booleans_and_json_text(lakehouse: Any) -> None:
    # Given JSON true in a boolean and in a text column, and a number in the text column
    load(lakehouse, "imports/accounts/a.jsonl", jsonl(account("A1", active=True, note=True),
                                                      account("A2", active=False, note=12)))
    # Then the boolean is a boolean and the text holds the JSON text as written, not Python's spelling
    rows = stored(lakehouse, "accounts")
    assert (rows["A1"]["active"], rows["A1"]["note"]) == (True, "true")
    assert (rows["A2"]["active"], rows["A2"]["note"]) == (False, "12")


def test_a_byte_that_is_not_utf8_rejects_its_record_the_same_way_in_every_format(lakehouse: Any) -> None:
    # Given a Latin-1 é in the second record of a CSV, a JSON Lines and a Parquet file
    csv_report = load(lakehouse, "imports/accounts/a.csv",
                      ACCOUNTS + f"A1,,,,ok,{T1}\nA2,,,,caf\xe9,{T1}\nA3,,,,fine,{T1}\n".encode("latin-1"))
    json_report = load(lakehouse, "imports/accounts/a.jsonl", jsonl(account("B1", note="ok")) + json.dumps(
        account("B2", note="caf\xe9"), ensure_ascii=False).encode("latin-1") + b"\n" + jsonl(account("B3")))
    notes = pa.array([b"ok", b"caf\xe9", b"fine"], pa.binary()).view(pa.string())
    parquet_report = load(lakehouse, "imports/accounts/a.parquet", parquet(pa.table({
        "account_id": ["C1", "C2", "C3"], "seats": pa.array([None] * 3, pa.int64()),
        "score": pa.array([None] * 3, pa.float64()), "active": pa.array([None] * 3, pa.bool_()),
        "note": notes, "updated_at": pa.array([T1] * 3).cast(pa.timestamp("us", "UTC"))})))
    # Then only that record is rejected, with its line (row) and column, and nothing is replaced by U+FFFD
    assert csv_report.reasons == ["line 3: note: not UTF-8 (byte 0xE9)"]
    assert json_report.reasons == ["line 2: note: not UTF-8 (byte 0xE9)"]
    assert parquet_report.reasons == ["row 2: note: not UTF-8 (byte 0xE9)"]
    rows = stored(lakehouse, "accounts")
    assert sorted(rows) == ["A1", "A3", "B1", "B3", "C1", "C3"]
    assert not any("\ufffd" in (r["note"] or "") for r in rows.values())


# ------------------------------------------------------------------ what used to be a traceback


def test_a_long_field_loads_and_only_an_oversize_one_is_rejected(lakehouse: Any) -> None:
    # Given 998 tickets, one with a 200,000-character body and one over the limit
    head = b"ticket_id,requester_email,channel,status,subject,body,created_at,updated_at\n"
    rows = [f"T{n},u{n}@x.com,email,open,Hi,short,{T1},{T1}\n" for n in range(996)]
    rows.insert(10, f"TLONG,l@x.com,email,open,Hi,\"{'x' * 200_000}\",{T1},{T1}\n")
    rows.insert(20, f"THUGE,h@x.com,email,open,Hi,{'y' * (MAX_FIELD_CHARS + 1)},{T1},{T1}\n")
    # When it is loaded
    report = load(lakehouse, "imports/support_tickets/t.csv", head + "".join(rows).encode())
    # Then the long body is stored whole, and only the oversize row is rejected
    assert (report.loaded, report.rejected) == (997, 1)
    assert report.reasons == [f"line 22: body: {MAX_FIELD_CHARS + 1:,} characters, over the limit of "
                              f"{MAX_FIELD_CHARS:,}"]
    assert len(stored(lakehouse, "support_tickets")["TLONG"]["body"]) == 200_000


def test_integers_beyond_64_bits_are_rejected_per_row(lakehouse: Any) -> None:
    # Given 2^63 in CSV and JSON Lines next to the largest 64-bit integer
    csv_report = load(lakehouse, "imports/accounts/a.csv",
                      ACCOUNTS + f"A1,{2**63},,,,{T1}\nA2,{2**63 - 1},,,,{T1}\nA3,{-2**63 - 1},,,,{T1}\n".encode())
    json_report = load(lakehouse, "imports/accounts/a.jsonl", jsonl(account("B1", seats=2**63)))
    # Then the out-of-range rows are rejected with a reason and the others load
    assert csv_report.reasons == ["line 2: seats: 9223372036854775808 is out of range for a 64-bit integer",
                                  "line 4: seats: -9223372036854775809 is out of range for a 64-bit integer"]
    assert json_report.reasons == ["line 1: seats: 9223372036854775808 is out of range for a 64-bit integer"]
    assert stored(lakehouse, "accounts")["A2"]["seats"] == 2**63 - 1


def test_parquet_unsigned_integers_load_when_they_fit(lakehouse: Any) -> None:
    # Given a Parquet file whose seats column is uint64, one value above 2^63 - 1
    data = parquet(pa.table({
        "account_id": ["A1", "A2"], "seats": pa.array([5, 2**64 - 1], pa.uint64()),
        "score": pa.array([None, None], pa.float64()), "active": pa.array([True, None]),
        "note": pa.array([None, None], pa.string()),
        "updated_at": pa.array([T1, T1]).cast(pa.timestamp("us", "UTC"))}))
    # When it is loaded
    report = load(lakehouse, "imports/accounts/a.parquet", data)
    # Then the row that fits loads and the other is rejected by its row number
    assert report.reasons == ["row 2: seats: 18446744073709551615 is out of range for a 64-bit integer"]
    assert stored(lakehouse, "accounts")["A1"]["seats"] == 5


def test_a_truncated_gzip_is_refused_with_a_reason_in_rejected_records(lakehouse: Any) -> None:
    # Given a gzip cut short
    data = gzip.compress(CRM + f"C1,a@x.com,Ann,lead,,{T1}\n".encode() * 50)[:-20]
    # When it is loaded
    report = load(lakehouse, "imports/crm_contacts/crm.csv.gz", data)
    # Then the file is refused with one line, kept in rejected_records, and nothing raised
    assert report.refused is not None and report.refused.startswith("not a complete gzip file (")
    assert "\n" not in report.refused
    assert [(r["row_number"], r["reason"]) for r in rejected(lakehouse)] == [(0, report.refused)]


def test_a_json_array_file_is_read_element_by_element(lakehouse: Any) -> None:
    # Given a .json file holding one array, the second element with a bad time
    data = ("[\n" + json.dumps(account("A1", seats=3)) + ",\n" + json.dumps(account("A2", updated_at="soon"))
            + "\n]\n").encode()
    # When it is loaded
    report = load(lakehouse, "imports/accounts/a.json", data)
    # Then the good element loads and the bad one is named by the line it starts on
    assert report.reasons == ["line 3: updated_at: expected an ISO-8601 date-time, got 'soon'"]
    assert stored(lakehouse, "accounts")["A1"]["seats"] == 3


def test_json_records_with_duplicate_or_missing_keys_are_rejected(lakehouse: Any) -> None:
    # Given a record naming seats twice, one without the email column, one with `Email`
    report = load(lakehouse, "imports/accounts/a.jsonl", jsonl(account("A1", seats=1)).replace(
        b'"seats": 1', b'"seats": 1, "seats": 2') + jsonl({k: v for k, v in account("A2").items() if k != "note"},
                       {**{k: v for k, v in account("A3").items() if k != "note"}, "Note": "x"}, account("A4")))
    # Then each is rejected with its line; the complete one loads
    assert report.reasons == [
        "line 1: invalid JSON (duplicate key 'seats')",
        "line 2: missing column 'note' (to update only the columns present, load it as partial: "
        "imports/<table>/partial/…)",
        "line 3: missing column 'note'; 'Note' looks like 'note': rename it"]
    assert list(stored(lakehouse, "accounts")) == ["A4"]


def test_the_s3_drop_handler_records_bad_files_instead_of_raising(aws: str, lakehouse: Any) -> None:
    from customer_context import wiring
    from customer_context_devtools.local import lambda_runtime
    from customer_context_devtools.local.aws_events import s3_object_created

    # Given a truncated gzip, a file for a table the spec does not declare, and a file with one bad row
    s3 = wiring.boto_client("s3")
    s3.create_bucket(Bucket="drops")
    files = {"imports/crm_contacts/": b"",  # a folder created in the S3 console: ignored
             "imports/crm_contacts/cut.csv.gz": gzip.compress(CRM * 100)[:-10],
             "imports/nowhere/x.csv": CRM,
             "imports/crm_contacts/ok.csv": CRM + f"C1,a@x.com,Ann,lead,,{T1}\nC2,b@x.com,Bob,lead,,{2**63}\n".encode()}
    event: dict[str, Any] = {"Records": []}
    for key, body in files.items():
        s3.put_object(Bucket="drops", Key=key, Body=body)
        event["Records"] += s3_object_created("drops", key, len(body))["Records"]
    # When the S3 notification is handled
    result = lambda_runtime.invoke("load_records", event)
    # Then it returns a report per file, and every problem is in rejected_records with its reason
    refused = {f["source_key"]: f["refused"] for f in result["files"]}
    assert refused["imports/crm_contacts/"] is None
    assert refused["imports/crm_contacts/cut.csv.gz"].startswith("not a complete gzip file")
    assert refused["imports/nowhere/x.csv"].startswith("imports/nowhere/x.csv: no record table 'nowhere'")
    assert refused["imports/crm_contacts/ok.csv"] is None
    assert {(r["source_key"], r["row_number"]) for r in rejected(lakehouse)} == {
        ("imports/crm_contacts/cut.csv.gz", 0), ("imports/nowhere/x.csv", 0), ("imports/crm_contacts/ok.csv", 3)}
    assert list(stored(lakehouse, "crm_contacts")) == ["C1"]


@pytest.mark.parametrize("action", ["hash", "drop"])
def test_an_unreadable_record_keeps_no_raw_text_when_the_table_has_a_pii_policy(lakehouse: Any, action: str) -> None:
    from customer_context.pii import PiiPolicy

    # Given a PII policy on the CRM's full_name, and a row whose quoting is broken
    data = yaml.safe_load(DEFAULT_SPEC.read_text())
    data["record_tables"]["crm_contacts"]["pii"] = {"full_name": action}
    spec = ContextSpec.model_validate(data)
    body = CRM + f'C1,a@x.com,"Ann Secret,lead,,{T1}\nC2,b@x.com,Bob Private,lead,,not a time\n'.encode()
    # When it is loaded
    load_file(lakehouse, spec, "imports/crm_contacts/crm.csv", body, pii=PiiPolicy(spec, "k" * 32))
    # Then neither rejected row keeps the name in clear
    raws = [r["raw"] for r in rejected(lakehouse)]
    assert len(raws) == 2 and raws[0] == "null"
    assert not any("Secret" in raw or "Private" in raw for raw in raws)


def test_the_load_command_loads_partial_files_and_refuses_with_one_line(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from customer_context_devtools.cli import main

    data_dir = str(tmp_path / "state")
    (tmp_path / "state").mkdir()  # a data dir that does not exist is refused
    full, partial = tmp_path / "crm.csv", tmp_path / "stages.csv"
    full.write_bytes(CRM + f"C1,ann@x.com,Ann,lead,Tom,{T1}\n".encode())
    partial.write_text(f"contact_id,lifecycle_stage,updated_at\nC1,vip,{T2}\n")
    assert main(["load", str(full), "--table", "crm_contacts", "--data-dir", data_dir]) == 0
    capsys.readouterr()
    # When a file without every column is loaded: refused, exit 2, one line on stderr
    assert main(["load", str(partial), "--table", "crm_contacts", "--data-dir", data_dir]) == 2
    assert capsys.readouterr().err == ("error: header: missing columns 'email', 'full_name', 'account_manager' "
                                       "(to update only the columns present, load it as partial: "
                                       "imports/<table>/partial/…)\n")
    # When it is loaded with --partial: only its columns change
    assert main(["load", str(partial), "--table", "crm_contacts", "--data-dir", data_dir, "--partial"]) == 0
    assert json.loads(capsys.readouterr().out)["loaded"] == 1
    assert main(["sql", "select email, lifecycle_stage from crm_contacts", "--data-dir", data_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"email": "ann@x.com", "lifecycle_stage": "vip"}]
