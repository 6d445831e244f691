"""Strict JSON (RFC 8259): no ``NaN``, ``Infinity`` or ``-Infinity``, neither read nor written.

Python's ``json`` reads those tokens (and numbers beyond a double's range, such as ``1e400``) as
non-finite floats and writes them back as the same tokens, which strict parsers (JavaScript's
``JSON.parse``, Go, Java, orjson) refuse. So what comes in is checked with :func:`non_finite`
(an event holding one is rejected with its path) or read with :func:`loads` (a request body holding
one is refused), and everything written goes through :func:`dumps`, which never writes them.

Imports only the standard library (collect and fetch use it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# a body that may hold a non-finite number: one of the tokens, or an exponent or digit run that may
# overflow a double (a cheap byte scan, so the walk below runs only on such bodies)
_MAYBE_NON_FINITE = re.compile(rb"NaN|Infinity|[0-9][eE]\+?0*[1-9][0-9]{2}|[0-9]{309}")


def may_hold_non_finite(body: bytes) -> bool:
    """Whether ``body`` (JSON text) might decode to a non-finite number with Python's ``json``."""
    return _MAYBE_NON_FINITE.search(body) is not None


def _name(number: float) -> str:
    return "NaN" if math.isnan(number) else "Infinity" if number > 0 else "-Infinity"


def non_finite(value: Any, path: str = "") -> str | None:
    """Why ``value`` (decoded JSON) is not strict JSON: ``"properties.revenue: NaN is not a JSON number …"``
    for the first non-finite float found, or ``None``."""
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (f"{path or 'value'}: {_name(value)} is not a JSON number (JSON has no NaN or Infinity, and a "
                "number beyond ±1.8e308 does not fit a double); send null or a string")
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found = non_finite(item, f"{path}[{n}]")
            if found:
                return found
    return None


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` that never writes NaN or Infinity: a non-finite float is written as ``null``
    (the value is walked only when ``json`` refuses it, so strict values cost nothing more)."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError as exc:
        if "JSON compliant" not in str(exc):  # json's message for NaN / Infinity; anything else is not ours
            raise
        return json.dumps(finite(value), allow_nan=False, **options)


# A run of 19 digits may be an integer beyond 64 bits, which orjson turns into a float: such texts
# are decoded by ``json`` (a long id inside a string only costs that slower path). Found by mapping
# digits to "0" and everything else to "x" (bytes.translate and ``in`` run at memory speed; a regular
# expression took longer than decoding the text).
_DIGITS_ONLY = bytes(48 if 48 <= i <= 57 else 120 for i in range(256))
_LONG_DIGITS = b"0" * 19


def decode(text: str | bytes) -> tuple[Any, bool]:
    """``json.loads(text)``, and whether orjson decoded it (its values are then plain JSON).

    orjson is several times faster than ``json``; whatever it refuses (NaN, Infinity, lone surrogates,
    huge numbers, another encoding than UTF-8) or might read differently (integers beyond 64 bits) is
    decoded by ``json`` exactly as before, errors included (imported here, not at the top: the serving
    functions' cold start).

    Raises:
        ValueError: not JSON (``json``'s error); RecursionError: nested too deeply.
    """
    import orjson

    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    else:
        raw = text.encode() if isinstance(text, str) else bytes(text)  # valid UTF-8: orjson read it
        if _LONG_DIGITS not in raw.translate(_DIGITS_ONLY):
            return data, True
    return json.loads(text), False


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number (JSON has no NaN or Infinity)")


def loads(text: str | bytes) -> Any:
    """``json.loads`` of strict JSON: NaN, Infinity and numbers beyond a double's range are refused.

    Raises:
        ValueError: not strict JSON (the message says where or what).
    """
    value = json.loads(text, parse_constant=_refuse)
    if may_hold_non_finite(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")):
        reason = non_finite(value)
        if reason:
            raise ValueError(reason)
    return value


def column_text(value: Any) -> str | None:
    """The JSON text a lakehouse column holds for a value (``None`` stays ``None``): compact, strict (events
    holding a non-finite number are rejected before; in a rejected event's raw text such a number is written
    as null), lone surrogates kept escaped. Ingest writes event columns with it, record loading rejected
    record values."""
    if value is None:
        return None
    text = dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep them escaped, still valid JSON
        text = dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)
    return text
