"""Write keys (which source an SDK writes as), from the environment or an SSM parameter."""

from __future__ import annotations

from customer_context.config import Settings, parse_write_keys
from customer_context.observability import logger


class ConfiguredWriteKeys:
    """Write keys from ``CUSTOMER_CONTEXT_WRITE_KEYS`` or, on AWS, an SSM SecureString parameter.

    The parameter is fetched through Powertools' parameters utility (cached 5 minutes per
    container), so rotating a key needs no deployment.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._static = parse_write_keys(settings.write_keys) if settings.write_keys else {}

    def _keys(self) -> dict[str, str]:
        name = self._settings.write_keys_parameter
        if not name:
            return self._static
        from aws_lambda_powertools.utilities import parameters

        text = parameters.get_parameter(name, decrypt=True, max_age=300)
        return parse_write_keys(str(text), origin=f"SSM parameter {name}")

    def source_for(self, write_key: str) -> str | None:
        """Look the key up; an empty configuration is logged, and every key is then unknown."""
        keys = self._keys()
        if not keys:
            logger.error("no write keys configured: set CUSTOMER_CONTEXT_WRITE_KEYS or _WRITE_KEYS_PARAMETER")
        return keys.get(write_key)


class StaticWriteKeys:
    """A fixed mapping (tests, benchmarks)."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = dict(keys)

    def source_for(self, write_key: str) -> str | None:
        """Look the key up."""
        return self._keys.get(write_key)
