"""Identifier normalisation: one definition per identifier type, in Python and in SQL.

A customer is found by the value they typed: the same raw value must give the same identifier in
collect (suppression, live tail, the PII policy's hashing), in the build (events and record rows),
at fetch and in regulations. So each identifier type's ``normalize`` steps are defined here once:
:func:`normalize` in Python, :func:`normalize_sql` in DuckDB SQL, and the SQL falls back to the very
same Python function (registered on the connection by :func:`register`) for what SQL cannot say
exactly. A property test holds the two forms equal on generated values.

Steps, applied in the order listed:

* ``trim`` — surrounding white space removed (Unicode White_Space, as ``str.strip()``). SQL:
  ``trim(x, <those characters>)``.
* ``casefold`` — compatibility caseless form, for values people type (emails): Unicode's
  compatibility caseless matching (D146: NFD, case folding, NFKD, case folding) written in NFKC.
  So ``ΟΔΟΣ``, ``οδος`` and ``οδοσ`` are one value, ``Straße`` is ``strasse``, the NFC and NFD
  spellings of ``josé`` are one, and full-width ``ＡＤＡ`` (an East Asian keyboard's) is ``ada``.
  ``İ`` (capital I with dot above, as a Turkish keyboard's caps lock writes i) folds to ``i``, as
  Turkish does, not to ``i̇``. Dots and ``+tags`` in an email's local part are kept: providers
  differ on them. ``lowercase`` (older specs) means the same. SQL: ``lower()`` for ASCII text (the
  same result there), else the Python function.
* ``digits`` — decimal digits of any script (Arabic-Indic ``٣`` too) as ASCII digits; everything
  else dropped. SQL: a regular expression for ASCII text, else the Python function.
* ``phone`` — E.164 (``+15550100001``), parsed by libphonenumber's Python port (``phonenumbers``,
  its ``lite`` build: no geocoding or carrier data); a number written without ``+<country code>`` is
  read as a number of the type's ``region``. A value it cannot read as a possible number (or a
  national number without a ``region``) keeps its digits, as ``digits`` would. SQL: the Python
  function (``phonenumbers`` has no SQL form).

The steps are repeated until the value no longer changes (see :func:`apply`). A PII token (``h_``
and 40 hex digits, :data:`PII_TOKEN`: the PII policy hashed the value after normalising it) is
already normal: every step leaves it as it is. An empty result is no identifier (``None`` / NULL).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from customer_context.errors import ConfigError
from customer_context.sql_text import lit

if TYPE_CHECKING:
    from customer_context.spec import ContextSpec, IdentifierType

HASH_PREFIX = "h_"
PII_TOKEN = re.compile(r"h_[0-9a-f]{40}")
UDF_NAME = "cc_normalize_identifier"
# what str.strip() strips: every character Python calls white space (a test recomputes it)
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
              "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_NOT_ASCII_DIGIT = re.compile(r"[^0-9]")


def _trim(text: str, region: str | None) -> str:
    return text.strip()


def _casefold(text: str, region: str | None) -> str:
    decomposed = unicodedata.normalize("NFD", text).replace("I\u0307", "i")  # İ, composed or not
    folded = unicodedata.normalize("NFKD", decomposed.casefold()).casefold()
    return unicodedata.normalize("NFKC", folded)


def _digits(text: str, region: str | None) -> str:
    if PII_TOKEN.fullmatch(text):
        return text
    if text.isascii():
        return _NOT_ASCII_DIGIT.sub("", text)
    return "".join(str(unicodedata.decimal(c)) for c in text if c.isdecimal())


def _phone(text: str, region: str | None) -> str:
    if PII_TOKEN.fullmatch(text):
        return text
    import phonenumbers  # here: only identifiers of a phone type need it (collect and fetch stay lean)

    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"identifiers: region {region!r} is not a region libphonenumber knows "
                          "(ISO 3166-1 alpha-2, e.g. US, GB, DE)")
    try:
        number = phonenumbers.parse(text, region or None)
    except phonenumbers.NumberParseException:
        return _digits(text, region)
    if not phonenumbers.is_possible_number(number):
        return _digits(text, region)
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


STEPS = {"trim": _trim, "casefold": _casefold, "digits": _digits, "phone": _phone}
# older step names, read as the current ones when the spec is loaded
ALIASES = {"lowercase": "casefold"}


def apply(steps: Sequence[str], region: str | None, value: str) -> str | None:
    """``value`` through ``steps`` (names from :data:`STEPS`) until it no longer changes; ``None`` when nothing
    is left. (Once is nearly always enough; but ``casefold`` may turn a compatibility character into a space
    and a mark, ``¸`` → `` ̧``, which ``trim`` then removes: normalising a normal value must change nothing,
    since fetch normalises a value that hashing normalises again.)"""
    out = value
    for _ in range(4):
        before = out
        for step in steps:
            out = STEPS[step](out, region)
        if out == before:
            break
    return out or None


def normalize(rule: IdentifierType | None, value: str) -> str | None:
    """The identifier ``value`` normalised by its type's ``rule`` (``None``: just trimmed); ``None`` when empty."""
    if rule is None:
        return apply(("trim",), None, value)
    return apply(rule.normalize, rule.region, value)


def normalize_identifier(spec: ContextSpec, id_type: str, value: str) -> str | None:
    """Normalise a value of one of the spec's identifier types as everything else does (collect, the build,
    fetch, regulations); ``None`` when empty."""
    return normalize(spec.identifiers.types.get(id_type), value)


# --------------------------------------------------------------------------------------------- SQL

def _ascii_sql(step: str, expr: str) -> str:
    """One step in SQL, exact for ASCII text."""
    if step == "trim":
        return f"trim({expr}, {lit(WHITESPACE)})"
    if step == "casefold":
        return f"lower({expr})"
    if step == "digits":
        return f"CASE WHEN regexp_full_match({expr}, {lit(PII_TOKEN.pattern)}) THEN {expr} " \
               f"ELSE regexp_replace({expr}, '[^0-9]', '', 'g') END"
    raise ValueError(step)


def normalize_sql(expr: str, rule: IdentifierType) -> str:
    """SQL normalising the identifier ``expr`` by ``rule``; empty results become NULL.

    ``trim`` is exact in SQL for any text; ``casefold`` and ``digits`` are for ASCII text, and other
    text goes to the Python function (:func:`register` must have run on the connection); ``phone``
    always does.
    """
    text = f"CAST({expr} AS VARCHAR)"
    steps = rule.normalize
    python = f"{UDF_NAME}({lit(','.join(steps))}, {lit(rule.region or '')}, {text})"
    if "phone" in steps:
        return f"nullif({python}, '')"
    out = text
    for step in steps:
        out = _ascii_sql(step, out)
    if set(steps) <= {"trim"}:
        return f"nullif({out}, '')"
    return f"nullif(CASE WHEN strlen({text}) = length({text}) THEN {out} ELSE {python} END, '')"


@lru_cache(maxsize=64)
def _steps(joined: str) -> tuple[str, ...]:
    return tuple(s for s in joined.split(",") if s)


def _udf(steps: str, region: str, value: str) -> str:
    return apply(_steps(steps), region or None, value) or ""


def register(con: Any) -> None:
    """Register the Python form on a DuckDB connection, for :func:`normalize_sql` (once per connection)."""
    import duckdb

    con.create_function(UDF_NAME, _udf, [duckdb.sqltype("VARCHAR")] * 3, duckdb.sqltype("VARCHAR"),
                        side_effects=False)
