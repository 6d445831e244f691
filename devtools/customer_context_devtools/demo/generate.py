"""A deterministic, streaming generator of synthetic tracking events in the Segment spec shape.

Used by ``make demo`` (a few thousand customers over 90 days) and by the benchmarks (100k, 1M and 10M
events). Every event is one message as a Segment or RudderStack SDK would send it, with camelCase keys
(``type``, ``messageId``, ``timestamp``, ``anonymousId``/``userId``, ``context`` and the fields of its
type). Each customer tells a plausible story:

* 1-3 anonymous devices (web browsers or mobile apps) browse pages or screens and view products;
* about 60 % sign up (``identify`` with ``userId`` ``u_000123`` and traits), some later log in from a
  second device (``identify`` again, cross-device); emails arrive in mixed case and with stray spaces;
* identified customers complete 0-12 orders (``Order Completed``) following a buy-till-you-die process
  (per-customer purchase rate and dropout), and some churn: no activity in the last 30-60 days;
* about 5 % have an ``alias`` call, about 10 % belong to a B2B account (``group``, ``acct_042``);
* about 2 % of anonymous devices are shared: two different users identify on the same ``anonymousId``.

A share of deliberately invalid events (``DemoConfig.bad_event_rate``) is mixed in; each carries a
top-level ``"_bad"`` key naming what is wrong (one of ``BAD_KINDS``) so callers can count or strip it.

The output depends only on the config: the same config (same ``end`` included) yields the same
events. Events of one customer are yielded together, in chronological order; customers follow each
other, so the stream as a whole is not ordered by time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

__all__ = [
    "BAD_KINDS",
    "EVENTS_PER_CUSTOMER",
    "SIZES",
    "DemoConfig",
    "generate_events",
    "size_config",
]

#: Mean number of events generated per customer (bad events included) with ``days=90``, measured;
#: ``size_config`` uses it to pick the number of customers for a target event count.
EVENTS_PER_CUSTOMER = 10.37

#: Target event counts of the named sizes accepted by :func:`size_config`.
SIZES: dict[str, int] = {"S": 100_000, "M": 1_000_000, "L": 10_000_000}

#: The values of the ``"_bad"`` key of a deliberately invalid event.
BAD_KINDS = (
    "missing_event",  # track without ``event``
    "missing_identity",  # neither ``userId`` nor ``anonymousId``
    "invalid_timestamp",  # ``timestamp`` is not ISO-8601, e.g. "yesterday"
    "missing_group_id",  # group without ``groupId``
    "missing_previous_id",  # alias without ``previousId``
    "properties_not_object",  # ``properties`` is a list
)


@dataclass(frozen=True)
class DemoConfig:
    """What to generate.

    Attributes:
        customers: Number of customers (people), each with one or more devices.
        days: Length of the window, ending at ``end``, in which all timestamps fall.
        seed: Seed of the random generator; the same config yields the same events.
        end: End of the window (aware; a naive value is taken as UTC). ``None`` means now, truncated to
            the minute, resolved when :func:`generate_events` is called.
        bad_event_rate: Share of all events that are deliberately invalid (marked with ``"_bad"``).
    """

    customers: int = 3000
    days: int = 90
    seed: int = 7
    end: datetime | None = None
    bad_event_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError(f"customers must be >= 0, got {self.customers}")
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if not 0.0 <= self.bad_event_rate < 1.0:
            raise ValueError(f"bad_event_rate must be in [0, 1), got {self.bad_event_rate}")


def size_config(size: str, seed: int = 7) -> DemoConfig:
    """A config for a named size.

    Args:
        size: ``"demo"`` (the default config: 3000 customers, about 30k events), ``"S"`` (about 100k
            events), ``"M"`` (about 1M) or ``"L"`` (about 10M); case-insensitive.
        seed: Seed of the random generator.

    Returns:
        A config over 90 days ending now (resolved when generating).

    Raises:
        ValueError: ``size`` is not one of the names above.
    """
    key = size.strip()
    if key.lower() == "demo":
        return DemoConfig(seed=seed)
    target = SIZES.get(key.upper())
    if target is None:
        raise ValueError(f"size must be one of demo, {', '.join(SIZES)}; got {size!r}")
    return DemoConfig(customers=round(target / EVENTS_PER_CUSTOMER), seed=seed)


def generate_events(config: DemoConfig) -> Iterator[dict[str, Any]]:
    """Generate the events of ``config``, lazily, customer after customer.

    Every yielded dict is new (nested dicts included), so callers may mutate it.

    Args:
        config: What to generate.

    Returns:
        An iterator of Segment-spec messages; invalid ones carry a ``"_bad"`` key.
    """
    end = config.end
    if end is None:
        end = datetime.now(UTC).replace(second=0, microsecond=0)
    elif end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return _Story(config, end).events()


# --------------------------------------------------------------------------------------------------
# Vocabulary

_SITE = "https://shop.example.com"
_DAY = 86_400_000
_HOUR = 3_600_000
_MINUTE = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HM = [f"{h:02d}:{m:02d}" for h in range(24) for m in range(60)]
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)

_FIRST = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Isabella", "Lucas", "Mia",
    "Mateo", "Amelia", "Leo", "Harper", "Hugo", "Chloe", "Louis", "Lea", "Jonas", "Hannah", "Lukas",
    "Sofia", "Diego", "Yuki", "Haruto", "Aiko", "Ravi", "Priya", "Arjun", "Fatima", "Omar", "Zoe",
    "Finn", "Ines", "Marta", "Pedro", "Ana", "Lars", "Freya",
)  # fmt: skip
_LAST = (
    "Smith", "Johnson", "Garcia", "Miller", "Davis", "Martinez", "Lopez", "Wilson", "Anderson", "Moore",
    "Martin", "Lee", "Walker", "Young", "King", "Wright", "Scott", "Green", "Baker", "Nelson", "Muller",
    "Schmidt", "Dubois", "Bernard", "Rossi", "Silva", "Santos", "Tanaka", "Sato", "Patel", "Sharma",
    "Khan", "Nowak", "Jansen", "Berg", "Novak", "Kowalski", "Costa", "Fischer", "Weber",
)  # fmt: skip
_MAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me", "hotmail.com")
_LOCALES = ("en-US", "en-US", "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "nl-NL", "ja-JP")
_AREA_CODES = ("212", "312", "415", "503", "617", "646", "702", "737", "206", "305")
_PLANS = ("free", "free", "free", "free", "starter", "starter", "starter", "pro", "pro", "enterprise")
_B2B_PLANS = ("starter", "pro", "pro", "enterprise")
_WEB_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
)
# (os name, os version, manufacturer, model, device type, library name)
_MOBILE_DEVICES = (
    ("iOS", "17.4.1", "Apple", "iPhone15,2", "ios", "analytics-ios"),
    ("iOS", "16.7.7", "Apple", "iPhone13,2", "ios", "analytics-ios"),
    ("iOS", "17.3", "Apple", "iPhone14,5", "ios", "analytics-ios"),
    ("Android", "14", "Google", "Pixel 8", "android", "analytics-android"),
    ("Android", "13", "samsung", "SM-S911B", "android", "analytics-android"),
    ("Android", "12", "Xiaomi", "2201116SG", "android", "analytics-android"),
)
_APP_VERSIONS = ("3.4.0", "3.4.1", "3.5.0")
# A page or screen: (page name, path, title, url, screen name, sku or None).
_View = tuple[str, str, str, str, str, str | None]
# A product: (sku, name, category, price, its view).
_Product = tuple[str, str, str, float, _View]
_WEB_PAGES: tuple[_View, ...] = tuple(
    (name, path, title, _SITE + path, screen, None)
    for name, path, title, screen in (
        ("Home", "/", "Example Shop", "Home"),
        ("Home", "/", "Example Shop", "Home"),
        ("Category", "/c/new-arrivals", "New arrivals | Example Shop", "Category"),
        ("Category", "/c/sale", "Sale | Example Shop", "Sale"),
        ("Search", "/search", "Search | Example Shop", "Search"),
        ("Blog", "/blog/spring-guide", "Our spring guide | Example Shop", "Inspiration"),
        ("Pricing", "/pricing", "Membership | Example Shop", "Membership"),
        ("Help", "/help", "Help center | Example Shop", "Help"),
    )
)
_SIGNUP_VIEW: _View = (
    "Sign Up",
    "/signup",
    "Create your account | Example Shop",
    _SITE + "/signup",
    "Sign Up",
    None,
)
_CHECKOUT_VIEW: _View = (
    "Checkout",
    "/checkout",
    "Checkout | Example Shop",
    _SITE + "/checkout",
    "Checkout",
    None,
)
_REFERRERS = (
    "", "", "", "https://www.google.com/", "https://www.google.com/", "https://duckduckgo.com/",
    "https://www.facebook.com/", "https://www.instagram.com/", "https://t.co/", "https://news.example.org/",
)  # fmt: skip
_PRODUCT_WORDS = (
    ("Classic", "Everyday", "Trail", "Merino", "Organic", "Urban", "Alpine", "Coastal", "Studio", "Vintage"),
    ("Tee", "Hoodie", "Sneaker", "Backpack", "Mug", "Jacket", "Beanie", "Bottle", "Notebook", "Lamp"),
)
_CATEGORIES = ("Apparel", "Apparel", "Footwear", "Bags", "Home", "Apparel", "Accessories", "Outdoor",
               "Stationery", "Home")  # fmt: skip
_COMPANY_WORDS = (
    ("Blue", "North", "Bright", "Iron", "Silver", "Red", "Green", "Quantum", "Summit", "Harbor", "Nimbus"),
    ("Peak", "Labs", "Works", "Systems", "Logistics", "Foods", "Health", "Analytics", "Retail", "Media"),
)
_SUFFIXES = ("Inc.", "LLC", "GmbH", "Ltd", "SAS", "Co.")
_INDUSTRIES = ("Retail", "Software", "Healthcare", "Manufacturing", "Logistics", "Finance", "Education",
               "Media", "Hospitality")  # fmt: skip
_TICKET_SUBJECTS = ("Where is my order?", "Wrong size", "Refund request", "Damaged item",
                    "Change delivery address", "Cannot log in")  # fmt: skip
_BAD_TIMESTAMPS = ("yesterday", "last tuesday", "03/12/2024 10:15", "not a date", "12 May, 9pm", "")
_WEB_LIB = "analytics.js"
_WEB_LIB_VERSION = "2.11.1"
_SERVER_LIB = "analytics-python"
_SERVER_LIB_VERSION = "2.3.2"

# Story parameters (shares are of customers unless said otherwise).
_SIGNUP_SHARE = 0.60
_ALIAS_SHARE = 0.05
_B2B_SHARE = 0.10
_MOBILE_SHARE = 0.30  # of devices
_SHARED_DEVICE_SHARE = 0.02  # of devices
_CHURN_SHARE = 0.30  # of customers: no activity in the last 30-60 days
_MAX_ORDERS = 12
_CUSTOMERS_PER_ACCOUNT = 6
_MEAN_DEVICES = 1.6  # per signed-up customer
_IP_FIRST_OCTETS = (24, 31, 45, 62, 73, 81, 98, 104, 151, 176, 188, 213)


@functools.cache
def _seconds_table() -> list[str]:
    """``SS.mmmZ`` for each millisecond of a minute."""
    return [f"{s:02d}.{ms:03d}Z" for s in range(60) for ms in range(1000)]


class _Device:
    """One browser or app install of a customer: its anonymousId and what its context says."""

    __slots__ = (
        "anon",
        "mobile",
        "ip",
        "ua",
        "lib",
        "lib_version",
        "os",
        "hw",
        "app",
        "will_login",
        "logged",
    )

    def __init__(self) -> None:
        self.anon = ""
        self.mobile = False
        self.ip = ""
        self.ua = ""
        self.lib = _WEB_LIB
        self.lib_version = _WEB_LIB_VERSION
        self.os: tuple[str, ...] = ()
        self.hw: tuple[str, ...] = ()
        self.app = ""
        self.will_login = True  # logs in when used after the customer signed up
        self.logged = False  # the customer is identified on it


# A planned session: (start ms, tie-breaker, kind, device index, payload).
_Session = tuple[int, int, str, int, Any]


class _Story:
    """One run: the random generator, the catalogues, cross-customer bookkeeping, the current customer.

    Customers are told one after the other: :meth:`customer` plans their sessions, :meth:`play` plays
    them in time order and returns the customer's events.
    """

    def __init__(self, config: DemoConfig, end: datetime) -> None:
        rng = self.rng = Random(config.seed)
        self.rnd = rnd = rng.random
        self.bits = rng.getrandbits
        self.customers = config.customers
        self.end_ms = (end - _EPOCH) // timedelta(milliseconds=1)
        self.start_ms = self.end_ms - config.days * _DAY
        rate = config.bad_event_rate
        self.bad_odds = rate / (1.0 - rate)  # a bad event after a good one with these odds
        # Timestamp prefixes of each minute of the window, filled a day at a time.
        self.first_minute = self.start_ms // _MINUTE
        self.minutes: list[str | None] = [None] * (self.end_ms // _MINUTE - self.first_minute + 1)
        self.sec_ms = _seconds_table()
        self.shared_pending: _Device | None = None
        # Story probabilities among the customers who sign up.
        self.alias_p = _ALIAS_SHARE / _SIGNUP_SHARE
        self.b2b_p = _B2B_SHARE / _SIGNUP_SHARE
        # A shared device is brought by one signed-up customer and adopted by a later one.
        self.shared_p = min(1.0, 2 * _SHARED_DEVICE_SHARE * _MEAN_DEVICES / _SIGNUP_SHARE)
        self.products: list[_Product] = []
        for i in range(100):
            name = f"{_PRODUCT_WORDS[0][i % 10]} {_PRODUCT_WORDS[1][(i // 10) % 10]}"
            sku = f"SKU-{i:04d}"
            path = f"/p/{sku.lower()}-{name.lower().replace(' ', '-')}"
            price = max(4.99, round(rng.lognormvariate(math.log(42.0), 0.55), 2))
            view = ("Product", path, f"{name} | Example Shop", _SITE + path, "Product Detail", sku)
            self.products.append((sku, name, _CATEGORIES[(i // 10) % 10], price, view))
        # B2B accounts: (groupId, name, industry, employees, email domain).
        self.accounts: list[tuple[str, str, str, int, str]] = []
        for i in range(1, max(1, round(config.customers * _B2B_SHARE / _CUSTOMERS_PER_ACCOUNT)) + 1):
            words = f"{_COMPANY_WORDS[0][int(rnd() * 11)]} {_COMPANY_WORDS[1][int(rnd() * 10)]}"
            employees = int(rng.lognormvariate(math.log(80.0), 1.3)) + 2
            domain = f"{words.replace(' ', '').lower()}{i}.example.com"
            self.accounts.append(
                (
                    f"acct_{i:03d}",
                    f"{words} {_SUFFIXES[int(rnd() * 6)]}",
                    _INDUSTRIES[int(rnd() * 9)],
                    employees,
                    domain,
                )
            )
        # The customer being told.
        self.idx = 0
        self.out: list[dict[str, Any]] = []
        self.t = 0  # clock of the session being played, epoch ms
        self.uid: str | None = None  # userId once signed up
        self.page: tuple[str, str, str, str] | None = None  # current web page: (path, title, referrer, url)
        self.first = ""
        self.last = ""
        self.email = ""
        self.locale = ""

    def events(self) -> Iterator[dict[str, Any]]:
        """All events, customer after customer."""
        for idx in range(self.customers):
            yield from self.customer(idx)

    # ---------------------------------------------------------------------------------- primitives

    def uuid4(self) -> str:
        """A version-4 UUID string from the generator's bits (as ``str(uuid.UUID(int=n, version=4))``)."""
        h = (self.bits(128) & _UUID_CLEAR | _UUID_SET).to_bytes(16).hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def iso(self, ms: int) -> str:
        """ISO-8601 UTC timestamp with milliseconds, as analytics.js writes it; ``ms`` is in the window."""
        minute, rest = divmod(ms, _MINUTE)
        prefix = self.minutes[minute - self.first_minute]
        if prefix is None:
            prefix = self.fill_day(minute)
        return prefix + self.sec_ms[rest]

    def fill_day(self, minute: int) -> str:
        """Fill the ``YYYY-MM-DDTHH:MM:`` prefixes of the day of ``minute``; return the one of ``minute``."""
        day = minute // 1440
        date = (_EPOCH + timedelta(days=day)).date().isoformat()
        first = self.first_minute
        minutes = self.minutes
        for m in range(max(day * 1440, first), min((day + 1) * 1440, first + len(minutes))):
            minutes[m - first] = f"{date}T{_HM[m % 1440]}:"
        return minutes[minute - first]  # type: ignore[return-value]

    def device(self) -> _Device:
        """A new device with its anonymousId, IP address and client."""
        rnd = self.rnd
        dev = _Device()
        dev.anon = self.uuid4()
        b = self.bits(32)
        dev.ip = f"{_IP_FIRST_OCTETS[b % 12]}.{(b >> 4) & 255}.{(b >> 12) & 255}.{((b >> 20) & 253) + 1}"
        if rnd() < _MOBILE_SHARE:
            model = _MOBILE_DEVICES[int(rnd() * len(_MOBILE_DEVICES))]
            dev.mobile = True
            dev.os = model[:2]
            dev.hw = model[2:5]
            dev.lib = model[5]
            dev.lib_version = "4.1.8" if model[0] == "iOS" else "4.12.0"
            dev.app = _APP_VERSIONS[int(rnd() * 3)]
            dev.ua = f"ExampleShop/{dev.app} ({model[3]}; {model[0]} {model[1]})"
        else:
            dev.ua = _WEB_AGENTS[int(rnd() * len(_WEB_AGENTS))]
        return dev

    def product(self) -> _Product:
        """A product; popularity is skewed towards the first SKUs."""
        return self.products[int(self.rnd() ** 2 * 100)]

    def email_variant(self) -> str:
        """The email as a client might send it: mostly clean, sometimes mixed case or padded."""
        r = self.rnd()
        email = self.email
        if r < 0.70:
            return email
        if r < 0.82:
            local, _, domain = email.partition("@")
            return f"{local.title()}@{domain.capitalize()}"
        if r < 0.90:
            return email.upper()
        return f"  {email} " if r < 0.95 else f"{email}\t"

    def phone(self) -> str:
        """A fictional US number (555-01xx) in one of the formats people type."""
        area = _AREA_CODES[int(self.rnd() * len(_AREA_CODES))]
        nn = self.idx % 100
        return (f"+1 {area} 555 01{nn:02d}", f"({area}) 555-01{nn:02d}", f"+1{area}55501{nn:02d}")[
            int(self.rnd() * 3)
        ]

    # ------------------------------------------------------------------------------------ emitting

    def event(
        self, typ: str, dev: _Device | None, uid: str | None, src: _Device | None = None
    ) -> dict[str, Any]:
        """A new event a few seconds after the previous one, with the fields common to all types.

        The event is appended to the output (sometimes followed by a bad event) and returned for the
        caller to add the fields of its type.

        Args:
            typ: The event type.
            dev: The device sending it; ``None`` means sent server-side (no anonymousId).
            uid: The userId, when the sender knows it.
            src: For a server-side event, the device whose IP address and user agent it forwards.
        """
        t = self.t + 3_000 + int(self.rnd() * 87_000)
        if t >= self.end_ms:
            t = self.end_ms - 1
        self.t = t
        h = (self.bits(128) & _UUID_CLEAR | _UUID_SET).to_bytes(16).hex()
        minute, rest = divmod(t, _MINUTE)
        prefix = self.minutes[minute - self.first_minute]
        if prefix is None:
            prefix = self.fill_day(minute)
        ev: dict[str, Any] = {
            "type": typ,
            "messageId": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
            "timestamp": prefix + self.sec_ms[rest],
        }
        if dev is None:
            if uid is not None:
                ev["userId"] = uid
            src = src or _Device()
            ev["context"] = {"ip": src.ip, "userAgent": src.ua, "locale": self.locale,
                             "library": {"name": _SERVER_LIB, "version": _SERVER_LIB_VERSION}}  # fmt: skip
        else:
            ev["anonymousId"] = dev.anon
            if uid is not None:
                ev["userId"] = uid
            if dev.mobile:
                os, hw = dev.os, dev.hw
                ev["context"] = {
                    "ip": dev.ip, "userAgent": dev.ua, "locale": self.locale,
                    "library": {"name": dev.lib, "version": dev.lib_version},
                    "app": {"name": "Example Shop", "version": dev.app},
                    "os": {"name": os[0], "version": os[1]},
                    "device": {"manufacturer": hw[0], "model": hw[1], "type": hw[2]},
                }  # fmt: skip
            elif (page := self.page) is None:
                ev["context"] = {"ip": dev.ip, "userAgent": dev.ua, "locale": self.locale,
                                 "library": {"name": _WEB_LIB, "version": _WEB_LIB_VERSION}}  # fmt: skip
            else:
                ev["context"] = {
                    "ip": dev.ip, "userAgent": dev.ua, "locale": self.locale,
                    "library": {"name": _WEB_LIB, "version": _WEB_LIB_VERSION},
                    "page": {"path": page[0], "referrer": page[2], "search": "", "title": page[1],
                             "url": page[3]},
                }  # fmt: skip
        out = self.out
        out.append(ev)
        if self.bad_odds and self.rnd() < self.bad_odds:
            out.append(self.bad(ev))
        return ev

    def view(self, dev: _Device, uid: str | None, view: _View) -> None:
        """A page view (web) or screen view (app)."""
        if dev.mobile:
            ev = self.event("screen", dev, uid)
            ev["name"] = view[4]
            if view[5] is not None:
                ev["properties"] = {"sku": view[5]}
        else:
            current = self.page
            ref = current[3] if current is not None else _REFERRERS[int(self.rnd() * len(_REFERRERS))]
            self.page = (view[1], view[2], ref, view[3])
            ev = self.event("page", dev, uid)
            ev["name"] = view[0]
            ev["properties"] = {"url": view[3], "path": view[1], "title": view[2], "referrer": ref}

    def track(self, dev: _Device | None, uid: str | None, name: str, props: dict[str, Any],
              src: _Device | None = None) -> None:  # fmt: skip
        """A track event (server-side when ``dev`` is ``None``)."""
        ev = self.event("track", dev, uid, src)
        ev["event"] = name
        ev["properties"] = props

    def identify(
        self, dev: _Device | None, uid: str, traits: dict[str, Any], src: _Device | None = None
    ) -> None:
        """An identify event (server-side when ``dev`` is ``None``)."""
        ev = self.event("identify", dev, uid, src)
        ev["traits"] = traits

    def login(self, dev: _Device) -> None:
        """Identify on a device that was anonymous so far (cross-device, or a shared device)."""
        assert self.uid is not None
        self.identify(dev, self.uid, {"email": self.email_variant()} if self.rnd() < 0.7 else {})
        dev.logged = True

    def bad(self, good: dict[str, Any]) -> dict[str, Any]:
        """A deliberately invalid event next to ``good`` (same time and sender), of a random kind."""
        rnd = self.rnd
        kind = BAD_KINDS[int(rnd() * len(BAD_KINDS))]
        ev: dict[str, Any] = {"type": "track", "messageId": self.uuid4(), "timestamp": good["timestamp"]}
        if "anonymousId" in good:
            ev["anonymousId"] = good["anonymousId"]
        uid = good.get("userId")
        if uid is not None:
            ev["userId"] = uid
        ctx = good["context"]
        ev["context"] = {"ip": ctx["ip"], "userAgent": ctx["userAgent"], "locale": ctx["locale"]}
        p = self.product()
        if kind == "missing_event":
            ev["properties"] = _product_props(p)
        elif kind == "missing_identity":
            ev.pop("anonymousId", None)
            ev.pop("userId", None)
            ev["event"] = "Product Viewed"
            ev["properties"] = _product_props(p)
        elif kind == "invalid_timestamp":
            ev["timestamp"] = _BAD_TIMESTAMPS[int(rnd() * len(_BAD_TIMESTAMPS))]
            ev["event"] = "Product Viewed"
            ev["properties"] = _product_props(p)
        elif kind == "missing_group_id":
            ev["type"] = "group"
            account = self.accounts[int(rnd() * len(self.accounts))]
            ev["traits"] = {"name": account[1], "industry": account[2]}
        elif kind == "missing_previous_id":
            ev["type"] = "alias"
            ev["userId"] = uid or f"u_{self.idx:06d}"
        else:  # properties_not_object
            ev["event"] = "Product Added"
            ev["properties"] = [{"sku": p[0], "price": p[3], "quantity": 1}]
        ev["_bad"] = kind
        return ev

    # ------------------------------------------------------------------------------------ sessions

    def browse(self, dev: _Device, uid: str | None) -> None:
        """A browsing session: a few views, some of products, now and then a cart."""
        rnd = self.rnd
        self.page = None
        for _ in range(1 + int(rnd() * rnd() * 3.2)):
            if rnd() < 0.45:
                p = self.product()
                self.view(dev, uid, p[4])
                self.track(dev, uid, "Product Viewed", _product_props(p))
                if rnd() < 0.12:
                    props = _product_props(p)
                    props["quantity"] = 1
                    self.track(dev, uid, "Product Added", props)
            else:
                self.view(dev, uid, _WEB_PAGES[int(rnd() * len(_WEB_PAGES))])

    def order(self, dev: _Device, uid: str | None, n: int) -> None:
        """A purchase: product views, cart, checkout, and the order (sent by the client or the backend)."""
        rnd = self.rnd
        self.page = None
        lines = []
        for _ in range(1 + int(rnd() * rnd() * 3)):
            p = self.product()
            if rnd() < 0.5:
                self.view(dev, uid, p[4])
                self.track(dev, uid, "Product Viewed", _product_props(p))
            qty = 1 + int(rnd() ** 3 * 3)
            props = _product_props(p)
            props["quantity"] = qty
            self.track(dev, uid, "Product Added", props)
            lines.append((p, qty))
        order_id = f"ord_{self.idx:06d}_{n}"
        revenue = round(sum(p[3] * q for p, q in lines), 2)
        self.view(dev, uid, _CHECKOUT_VIEW)
        checkout = {"order_id": order_id, "value": revenue, "currency": "USD", "products": _lines(lines)}
        self.track(dev, uid, "Checkout Started", checkout)
        props = {"order_id": order_id, "revenue": revenue, "currency": "USD", "products": _lines(lines)}
        if self.uid is not None and rnd() < 0.3:  # confirmed by the backend
            self.track(None, self.uid, "Order Completed", props, src=dev)
        else:
            self.track(dev, uid, "Order Completed", props)

    def signup(self, dev: _Device, uid: str, account: tuple[str, str, str, int, str] | None) -> None:
        """Sign-up: the form, identify with the traits, the account (B2B), a first page as a user."""
        rnd = self.rnd
        self.page = None
        self.view(dev, None, _SIGNUP_VIEW)
        traits: dict[str, Any] = {
            "email": self.email_variant(),
            "name": f"{self.first} {self.last}",
            "first_name": self.first,
            "last_name": self.last,
            "plan": _B2B_PLANS[int(rnd() * 4)] if account else _PLANS[int(rnd() * 10)],
            "created_at": self.iso(self.t),
        }
        if rnd() < 0.4:
            traits["phone"] = self.phone()
        if account is not None:
            traits["company"] = account[1]
        self.identify(dev, uid, traits)
        dev.logged = True
        self.uid = uid
        if account is not None:
            ev = self.event("group", dev, uid)
            ev["groupId"] = account[0]
            ev["traits"] = {"name": account[1], "industry": account[2], "employees": account[3]}
        self.view(dev, uid, _WEB_PAGES[0])

    # ------------------------------------------------------------------------------------ the story

    def customer(self, idx: int) -> list[dict[str, Any]]:
        """Plan the sessions of customer ``idx``, then play them; returns the customer's events."""
        rnd = self.rnd
        self.idx, self.out, self.t, self.uid, self.page = idx, [], 0, None, None
        start, end = self.start_ms, self.end_ms - _HOUR
        span = end - start
        first = start + int(rnd() * span * 0.97)
        active_end = end
        if rnd() < _CHURN_SHARE:
            gap = min(int((30 + rnd() * 30) * _DAY), int(span * 0.6))
            if end - gap > first + _DAY:
                active_end = end - gap
        self.first = _FIRST[int(rnd() * len(_FIRST))]
        self.last = _LAST[int(rnd() * len(_LAST))]
        self.locale = _LOCALES[int(rnd() * len(_LOCALES))]
        r = rnd()
        devices = [self.device() for _ in range(1 if r < 0.55 else 2 if r < 0.88 else 3)]
        plan: list[_Session] = [(first, 0, "browse", 0, None)]

        def at(t: int, kind: str, dev_i: int, payload: Any = None) -> None:
            plan.append((t, len(plan), kind, dev_i, payload))

        def between(lo: int, hi: int) -> int:
            return lo + int(rnd() * max(0, hi - lo))

        if rnd() >= _SIGNUP_SHARE:  # stays anonymous
            for _ in range(int(rnd() * 1.8)):
                at(between(first, active_end), "browse", int(rnd() * len(devices)))
            return self.play(plan, devices, None)

        signup = first + int(-math.log(1.0 - rnd()) * 2 * _DAY)
        if signup >= active_end:
            signup = between(first, active_end)
        at(signup, "signup", 0)
        # Buy till you die: a purchase rate per customer (exponential, mean 0.03 a day) and, after each
        # purchase, a chance to leave for good (Beta(1, 3.5), mean 0.22).
        rate = -math.log(1.0 - rnd()) * 0.03 + 1e-4
        dropout = 1.0 - (1.0 - rnd()) ** (1 / 3.5)
        t = signup + (int(rnd() * _HOUR) if rnd() < 0.35 else int(-math.log(1.0 - rnd()) / rate * _DAY))
        orders = 0
        while t < active_end and orders < _MAX_ORDERS:
            orders += 1
            at(t, "order", int(rnd() * len(devices)), orders)
            if rnd() < 0.08:
                at(t + int(rnd() * 5 * _DAY), "support", 0, orders)
            if rnd() < dropout:
                active_end = min(active_end, t + int(rnd() * 10 * _DAY))
                break
            t += _HOUR + int(-math.log(1.0 - rnd()) / rate * _DAY)
        for _ in range(int(rnd() * 1.8)):
            at(between(signup, active_end), "browse", int(rnd() * len(devices)))
        for i in range(1, len(devices)):  # the other devices show up; most log in
            devices[i].will_login = rnd() < 0.8
            at(between(first, active_end), "browse", i)
        r = rnd()
        if r < self.alias_p:
            if r < self.alias_p / 2:  # signed up under an old (legacy) userId, later merged by alias
                self.uid = f"legacy_{self.bits(40):010x}"
                at(between(signup, active_end), "alias", 0, self.uid)
            else:  # an anonymous device merged by alias rather than identify
                devices.append(self.device())
                devices[-1].will_login = False
                at(between(first, signup), "browse", len(devices) - 1)
                at(between(signup, active_end), "alias", 0, devices[-1].anon)
        if rnd() < 0.08:
            at(between(signup, active_end), "plan", 0)
        if rnd() < self.shared_p:
            pending = self.shared_pending
            if pending is None:  # this customer's first device will be shared with a later customer
                self.shared_pending = devices[0]
            else:  # log in on an earlier customer's device
                self.shared_pending = None
                pending.logged = False
                pending.will_login = True
                devices.append(pending)
                at(between(signup, active_end), "browse", len(devices) - 1)
        account = self.accounts[int(rnd() * len(self.accounts))] if rnd() < self.b2b_p else None
        return self.play(plan, devices, (account,))

    def play(
        self, plan: list[_Session], devices: list[_Device], signed: tuple[Any] | None
    ) -> list[dict[str, Any]]:
        """Play the planned sessions in time order.

        Args:
            plan: The sessions.
            devices: The customer's devices, indexed by the sessions.
            signed: ``(account,)`` for a customer who signs up (``account`` is ``None`` unless B2B).
        """
        rnd, idx = self.rnd, self.idx
        plan.sort()
        final_uid = f"u_{idx:06d}"
        account = signed[0] if signed is not None else None
        if signed is not None:
            domain = account[4] if account is not None else _MAIL_DOMAINS[int(rnd() * len(_MAIL_DOMAINS))]
            self.email = f"{self.first}.{self.last}{idx}@{domain}".lower()
        signup_uid = self.uid or final_uid  # a legacy id when alias will merge it later
        self.uid = None
        for t0, _, kind, dev_i, payload in plan:
            dev = devices[dev_i]
            self.t = max(t0, self.t + _MINUTE)  # sessions never overlap
            if (
                self.uid is not None
                and not dev.logged
                and kind != "alias"
                and (dev.will_login or kind == "order")
            ):
                self.login(dev)
            uid: str | None = self.uid if dev.logged else None
            if kind == "browse":
                self.browse(dev, uid)
            elif kind == "order":
                self.order(dev, uid, payload)
            elif kind == "signup":
                self.signup(dev, signup_uid, account)
            elif kind == "support":
                self.page = None
                props = {"ticket_id": f"T-{idx:06d}-{payload}", "order_id": f"ord_{idx:06d}_{payload}",
                         "subject": _TICKET_SUBJECTS[int(rnd() * len(_TICKET_SUBJECTS))],
                         "channel": ("email", "chat", "phone")[int(rnd() * 3)]}  # fmt: skip
                self.track(None, self.uid, "Support Ticket Opened", props, src=dev)
            elif kind == "alias":
                ev = self.event("alias", dev, final_uid)
                ev["previousId"] = payload
                self.uid = final_uid
            elif kind == "plan":
                plans = _B2B_PLANS if account is not None else _PLANS[4:]
                self.identify(None, self.uid or final_uid, {"plan": plans[int(rnd() * len(plans))]}, src=dev)
        return self.out


def _product_props(p: _Product) -> dict[str, Any]:
    return {"product_id": p[0], "sku": p[0], "name": p[1], "category": p[2], "price": p[3], "currency": "USD"}


def _lines(lines: list[tuple[_Product, int]]) -> list[dict[str, Any]]:
    return [{"sku": p[0], "price": p[3], "quantity": q} for p, q in lines]
