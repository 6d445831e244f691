"""The profile explorer: a static page (HTML, JavaScript, CSS, no third-party code, no CDN) that shows one
customer the way the agent sees them, through the fetch and replay APIs.

Served by the query function at ``/explorer`` (locally by the local stack, on AWS by the HTTP API), so it
works offline and needs nothing but this package. The page asks for a consumer key and keeps it in the
tab's ``sessionStorage`` only; every call it makes goes to the API that served it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from customer_context.errors import NotFound

ASSETS = {"index.html": "text/html; charset=utf-8", "explorer.js": "text/javascript; charset=utf-8",
          "explorer.css": "text/css; charset=utf-8"}


@cache
def asset(name: str) -> tuple[str, str]:
    """``(content type, text)`` of one of the page's files.

    Raises:
        NotFound: not one of :data:`ASSETS` (names them).
    """
    if name not in ASSETS:
        raise NotFound(f"explorer: no asset {name!r}; the page has {', '.join(ASSETS)}")
    return ASSETS[name], resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
