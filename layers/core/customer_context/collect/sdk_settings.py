"""What the browser SDKs read before they send, pointing them at this API and at nothing else.

RudderStack's JavaScript SDK v3 fetches its source configuration from ``<configUrl>``
(``GET /sourceConfig?p=…&v=…&writeKey=…`` with the write key as HTTP Basic user name); Segment's
Analytics.js 2.0 fetches its settings from ``<cdnURL>/v1/projects/<writeKey>/settings``. Both answers
name no destination (so no device-mode script is loaded) and turn off what the SDKs would otherwise
report to their vendors (RudderStack's error and metrics collection, Segment's ``/m`` metrics).
"""

from __future__ import annotations

from customer_context.errors import AuthenticationError
from customer_context.ports import JsonObject, WriteKeyStore

#: The ``workspaceId`` RudderStack's SDK keeps in its state (it only reports it, with errors we turn off).
WORKSPACE_ID = "customer-context"


def source_of(write_keys: WriteKeyStore, write_key: str | None) -> str:
    """The source id of ``write_key``.

    Raises:
        AuthenticationError: No write key, or an unknown one (401).
    """
    if not write_key:
        raise AuthenticationError("Missing write key: send it as the HTTP Basic user name")
    source_id = write_keys.source_for(write_key)
    if source_id is None:
        raise AuthenticationError("Invalid write key")
    return source_id


def rudderstack_source_config(write_key: str, source_id: str) -> JsonObject:
    """The body RudderStack's SDK v3 accepts from ``configUrl``: an enabled source with no destinations."""
    return {
        "source": {
            "id": source_id,
            "name": source_id,
            "writeKey": write_key,
            "workspaceId": WORKSPACE_ID,
            "enabled": True,
            "config": {"statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}},
            "destinations": [],
        },
    }


def segment_settings(write_key: str, api_host: str, protocol: str) -> JsonObject:
    """The body Segment's Analytics.js 2.0 accepts from ``cdnURL``: only its ``Segment.io`` integration, sending
    to ``<protocol>://<api_host>/t`` …, no remote plugins, no metrics.

    Args:
        write_key: The write key the settings are for.
        api_host: Host (and path prefix) of this API followed by ``/v1``, e.g. ``api.example.com/v1``.
        protocol: ``http`` or ``https``.
    """
    return {
        "integrations": {"Segment.io": {"apiKey": write_key, "apiHost": api_host, "protocol": protocol}},
        "metrics": {"sampleRate": 0},
        "remotePlugins": [],
    }
