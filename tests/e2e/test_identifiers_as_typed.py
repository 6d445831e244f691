"""Customers are found by the value they typed, end to end on the local stack (HTTP, SQS, Iceberg, the
build in DuckDB, DynamoDB on moto's server): any identifier value collect accepts is found by the same raw
value at fetch, and spellings that normalise equal (case, NFC / NFD, full-width letters, Unicode spaces,
digits of other scripts, phone formats) join one profile. Emails are hashed by the PII policy here, so the
hashing's normalisation is held to the build's and the lookup's too."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from customer_context.identifiers import normalize_identifier
from customer_context.spec import DEFAULT_SPEC, parse_spec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# emails hashed by the PII policy; work emails (an identifier type of the test's own) kept as typed
WORK_EMAIL = """    work_email:
      priority: 5
      normalize: [trim, lowercase]
      from_events: [traits.work_email]
"""
SPEC_TEXT = DEFAULT_SPEC.read_text().replace("    anonymous_id:\n", WORK_EMAIL + "    anonymous_id:\n", 1) + \
    "\npii:\n  - {path: traits.email, action: hash}\n"
SPEC = parse_spec(SPEC_TEXT)
BLOCKED = [re.compile(p, re.IGNORECASE) for p in SPEC.identifiers.blocked_values]
_examples = itertools.count()
_devices = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """One stack serves the module (the conftest's per-test reset would drop its clients)."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    spec = tmp_path_factory.mktemp("spec") / "context.yaml"
    spec.write_text(SPEC_TEXT)
    with LocalStack(tmp_path_factory.mktemp("as-typed"), write_keys={"wk": "web"}, batch_window=0.2,
                    environ={"CUSTOMER_CONTEXT_SPEC_PATH": str(spec)}) as running:
        yield running


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _arabic_indic(text: str) -> str:
    return "".join(chr(0x0660 + int(c)) if c.isascii() and c.isdigit() else c for c in text)


LOCAL = st.text(st.sampled_from(list("abcxyzABCXYZ._+-ΟΔΟΣσςİIıi\u0307éeßẞﬁǅ0123456789")) | st.characters(
    exclude_categories=("Cs",)), min_size=1, max_size=12)
DOMAIN = st.sampled_from(["example.com", "X.GR", "ＥＸＡＭＰＬＥ.com", "münchen.de"])


@st.composite
def emails(draw: st.DrawFn, tag: str) -> tuple[str, list[str]]:
    base = f"{draw(LOCAL)}.{tag}@{draw(DOMAIN)}"
    spellings = [base, base.upper(), base.lower(), base.casefold(), unicodedata.normalize("NFD", base),
                 unicodedata.normalize("NFC", base), _fullwidth(base), f" \u3000{base}\u2003"]
    return draw(st.sampled_from(["email", "work_email"])), spellings


@st.composite
def phones(draw: st.DrawFn, tag: str) -> tuple[str, list[str]]:
    country, national = draw(st.sampled_from([
        ("1", st.from_regex(r"[2-9][0-9]{9}", fullmatch=True)), ("44", st.from_regex(r"7[0-9]{9}", fullmatch=True)),
        ("971", st.from_regex(r"5[0-9]{8}", fullmatch=True)), ("91", st.from_regex(r"9[0-9]{9}", fullmatch=True))]))
    digits = draw(national)
    spaced = f"+{country} {digits[:3]} {digits[3:6]} {digits[6:]}"
    spellings = [spaced, f"+{country}{digits}", f"011 {country} {digits}", _arabic_indic(spaced), _fullwidth(spaced)]
    if country == "1":  # the spec's region: national spellings too
        spellings += [f"({digits[:3]}) {digits[3:6]}-{digits[6:]}", f"1{digits}",
                      f"{digits[:3]}.{digits[3:6]}.{digits[6:]}"]
    return "phone", spellings


@st.composite
def user_ids(draw: st.DrawFn, tag: str) -> tuple[str, list[str]]:
    raw = draw(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=16)) + tag
    return "user_id", [raw, f"\u00a0{raw} \t"]


@st.composite
def identities(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    tag = f"t{next(_examples)}"  # keeps one example's customers apart from the others' on the shared stack
    kinds = draw(st.lists(st.sampled_from([emails, phones, user_ids]), min_size=1, max_size=4))
    return [draw(kind(f"{tag}n{n}")) for n, kind in enumerate(kinds)]


def _identifies(id_type: str, value: str) -> bool:
    """Whether ``value`` makes an identifier (not empty once normalised, not a blocked value; a hashed one
    is a token, never blocked)."""
    normal = normalize_identifier(SPEC, id_type, value)
    return bool(normal) and (id_type == "email" or not any(p.search(normal) for p in BLOCKED))


def _lookup(stack: Any, identifiers: list[dict[str, str]]) -> list[dict[str, Any]]:
    answer = requests.post(f"{stack.url}/v1/context:batch", json={"identifiers": identifiers, "sections": ["profile"]},
                           headers={"authorization": f"Bearer {stack.consumer_key}"}, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    return answer.json()["results"]  # type: ignore[no-any-return]


# each example is a build: no shrinking (a failure shows its example as generated)
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(people=identities())
def test_any_accepted_value_is_found_as_typed_and_equal_spellings_join(stack: Any,
                                                                      people: list[tuple[str, list[str]]]) -> None:
    # Given each identity sent by its customer from one device per spelling (identify calls)
    sent = []  # (type, spelling, device)
    for id_type, spellings in people:
        sent += [(id_type, s, f"dev-{next(_devices)}") for s in dict.fromkeys(spellings)]
    batch = [{"type": "identify", "anonymousId": device, "userId": spelling} if id_type == "user_id" else
             {"type": "identify", "anonymousId": device, "traits": {id_type: spelling}}
             for id_type, spelling, device in sent]
    answer = requests.post(f"{stack.url}/v1/batch", json={"batch": batch}, auth=("wk", ""), timeout=30)
    # When collect accepts them and the build runs
    assert answer.status_code == 200 and answer.json()["rejected"] == [], answer.text[:300]
    assert stack.wait_for_ingest(60)
    stack.build()
    # Then every spelling that makes an identifier is found by itself, with the device it was sent from
    found = [t for t in sent if _identifies(t[0], t[1])]
    results = _lookup(stack, [{"type": id_type, "value": spelling} for id_type, spelling, _ in found])
    profiles: dict[tuple[str, str | None], set[str]] = {}
    for (id_type, spelling, device), result in zip(found, results, strict=True):
        assert result["found"], (id_type, spelling, result)
        assert device in result["context"]["profile"]["identifiers"]["anonymous_id"], (id_type, spelling)
        profiles.setdefault((id_type, normalize_identifier(SPEC, id_type, spelling)), set()).add(result["profile_id"])
    # and the spellings that normalise equal are one customer
    assert all(len(p) == 1 for p in profiles.values()), profiles


def test_the_issue_s_spellings_are_found_by_their_url(stack: Any) -> None:
    # Given customers identified as ΟΔΟΣ.x@X.GR, İLKER.x@X.COM, josé (NFD) and an Arabic-Indic phone number
    batch = [{"type": "identify", "anonymousId": "greek", "traits": {"email": "ΟΔΟΣ.x@X.GR"}},
             {"type": "identify", "anonymousId": "turkish", "traits": {"email": "İLKER.x@X.COM"}},
             {"type": "identify", "anonymousId": "nfd", "traits": {"email": "jose\u0301.x@x.com"}},
             {"type": "identify", "anonymousId": "nfc", "traits": {"email": "jos\u00e9.x@x.com"}},
             {"type": "identify", "anonymousId": "dubai", "traits": {"phone": "+٩٧١ ٥٠ ١٢٣ ٤٥٦٧"}}]
    assert requests.post(f"{stack.url}/v1/batch", json={"batch": batch}, auth=("wk", ""), timeout=30).ok
    assert stack.wait_for_ingest(60)
    stack.build()
    headers = {"authorization": f"Bearer {stack.consumer_key}"}

    def profile(id_type: str, value: str) -> Any:
        answer = requests.get(f"{stack.url}/v1/context/{id_type}/{quote(value, safe='')}?sections=profile",
                              headers=headers, timeout=30)
        assert answer.status_code == 200, (value, answer.text[:300])
        return answer.json()["profile_id"]

    # Then each is found by the value typed, and by its other spellings
    assert profile("email", "ΟΔΟΣ.x@X.GR") == profile("email", "οδος.x@x.gr")
    assert profile("email", "İLKER.x@X.COM") == profile("email", "ilker.x@x.com")
    # and the NFC and NFD spellings of josé are one customer
    assert profile("email", "jose\u0301.x@x.com") == profile("email", "JOS\u00c9.x@x.com") == \
        profile("anonymous_id", "nfc") == profile("anonymous_id", "nfd")
    assert profile("phone", "+٩٧١ ٥٠ ١٢٣ ٤٥٦٧") == profile("phone", "+971 50 123 4567") == \
        profile("anonymous_id", "dubai")
