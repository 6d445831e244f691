"""Identifier normalisation: the Python form (collect, fetch, regulations, PII hashing) and the SQL form
(the build, named queries) give the same value for any text, normalising twice changes nothing, and the
spellings the issue found apart (ΟΔΟΣ, İLKER, NFC / NFD josé, Arabic-Indic digits) are one identifier."""

from __future__ import annotations

import unicodedata

import duckdb
import pytest
from customer_context import identifiers
from customer_context.assemble.compiler import normalize_sql
from customer_context.identifiers import normalize_identifier
from customer_context.spec import DEFAULT_SPEC, IdentifierType, parse_spec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

SPEC = parse_spec(DEFAULT_SPEC.read_text())
RULES = {
    "trim": IdentifierType(normalize=["trim"]),
    "email": SPEC.identifiers.types["email"],
    "casefold": IdentifierType(normalize=["casefold"]),
    "digits": IdentifierType(normalize=["digits"]),
    "trim_digits": IdentifierType(normalize=["trim", "digits"]),
    "phone_us": SPEC.identifiers.types["phone"],
    "phone": IdentifierType(normalize=["phone"]),
    "phone_de": IdentifierType(normalize=["trim", "phone"], region="DE"),
}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# characters where Unicode and ASCII-only rules part ways: final sigma, dotted and dotless i, sharp s,
# combining marks, full-width and compatibility forms, Unicode spaces, digits of other scripts, +tokens
TRICKY = list("ΟΔΟΣσςİIıi\u0307éeßẞＡａﬁK٣۴０१ \u00a0\u2003\u3000\t\n\x1c\x85+-().@xX0129h_")
TEXT = st.one_of(st.text(max_size=24), st.text(st.sampled_from(TRICKY), max_size=16),
                 st.builds(lambda h: "h_" + h, st.text("0123456789abcdef", min_size=40, max_size=40)))


_CON = duckdb.connect()
identifiers.register(_CON)


def sql_forms(rule: IdentifierType, values: list[str]) -> list[str | None]:
    """The build's SQL normalisation of ``values``, run in DuckDB (on a connection set up as the build's)."""
    rows = _CON.execute(f"SELECT {normalize_sql('v', rule)} FROM (SELECT unnest($values) AS v, "
                        "generate_subscripts($values, 1) AS i) ORDER BY i", {"values": values}).fetchall()
    return [r[0] for r in rows]


def test_whitespace_is_what_python_strips() -> None:
    assert "".join(c for c in map(chr, range(0x110000)) if c.isspace()) == identifiers.WHITESPACE


@pytest.mark.parametrize("name", sorted(RULES))
@SETTINGS
@given(values=st.lists(TEXT, min_size=1, max_size=8))
@example(values=["ΟΔΟΣ.x@X.GR", "İLKER.x@X.COM", "jose\u0301.x@x.com", "josé.x@x.com", " \u3000Ann@X.com\u2003",
                 "٠٥٠١٢٣٤٥٦٧", "+44 20 7946 0958", "h_" + "0a" * 20, "ΣΑΣ", "straße", "ǅ"])
def test_python_and_sql_forms_agree(name: str, values: list[str]) -> None:
    rule = RULES[name]
    # Given any text as an identifier value of a type (the build reads it in SQL, fetch in Python)
    # Then both forms give the same value (or both none)
    assert sql_forms(rule, values) == [identifiers.normalize(rule, v) for v in values]


@pytest.mark.parametrize("name", sorted(RULES))
@SETTINGS
@given(value=TEXT)
def test_normalising_twice_changes_nothing(name: str, value: str) -> None:
    # fetch normalises then hashes, and hashing normalises again: both must give collect's token
    rule = RULES[name]
    once = identifiers.normalize(rule, value)
    assert once is None or identifiers.normalize(rule, once) == once


@SETTINGS
@given(value=st.text(max_size=24))
def test_spellings_of_one_email_are_one_identifier(value: str) -> None:
    email = SPEC.identifiers.types["email"]
    expected = identifiers.normalize(email, value)
    for spelling in (unicodedata.normalize("NFD", value), unicodedata.normalize("NFC", value),
                     unicodedata.normalize("NFKC", value), value.casefold(), f" {value}\u3000"):
        assert identifiers.normalize(email, spelling) == expected


@pytest.mark.parametrize(("id_type", "spellings", "value"), [
    ("email", ["ΟΔΟΣ.x@X.GR", "οδος.x@x.gr", "Οδοσ.X@x.gr"], "οδοσ.x@x.gr"),
    ("email", ["İLKER.x@X.COM", "ilker.x@x.com", "I\u0307LKER.x@x.com"], "ilker.x@x.com"),
    ("email", ["jos\u00e9.x@x.com", "jose\u0301.x@x.com", "JOSÉ.X@X.COM"], "jos\u00e9.x@x.com"),
    ("email", ["ＡＮＮ@ｘ.ｃｏｍ", "ann@x.com"], "ann@x.com"),
    ("phone", ["+1 (555) 010-0001", "15550100001", "(555) 010-0001", "+١ ٥٥٥ ٠١٠ ٠٠٠١", "＋１ ５５５ ０１０ ０００１"],
     "+15550100001"),
    ("phone", ["+971 50 123 4567", "+٩٧١ ٥٠ ١٢٣ ٤٥٦٧", "011 971 50 123 4567"], "+971501234567"),
])
def test_the_spellings_the_issue_found_are_one_identifier(id_type: str, spellings: list[str], value: str) -> None:
    # Python (collect, fetch) and SQL (the build) alike
    rule = SPEC.identifiers.types[id_type]
    assert {normalize_identifier(SPEC, id_type, s) for s in spellings} == {value}
    assert set(sql_forms(rule, spellings)) == {value}


def test_a_phone_region_libphonenumber_does_not_know_is_named() -> None:
    from customer_context.errors import ConfigError

    with pytest.raises(ConfigError, match="region 'XX'"):
        identifiers.normalize(IdentifierType(normalize=["phone"], region="XX"), "555 0100")
