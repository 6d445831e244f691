"""moto's Athena for today's botocore.

botocore now calls Athena in its REST protocol (``POST /query-executions``, ``GET /query-executions/{id}/results``
…). moto's dispatcher already finds the operation of such a request from botocore's model, but moto's server only
routes ``/`` to Athena (the path of the JSON protocol it was written for), so every other path is a 404. Routing
every path to the same dispatcher is the whole change: moto still keeps the queries, their states and results.
"""

from __future__ import annotations


def route_every_athena_path() -> None:
    """Call before the first Athena request reaches moto's server (it builds Athena's routes then)."""
    from moto.athena import urls

    urls.url_paths.setdefault("{0}/.*$", urls.AthenaResponse.dispatch)
