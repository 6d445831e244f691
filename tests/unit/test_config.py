"""Settings: read from the environment, errors name the variable and the reason."""

from __future__ import annotations

import pytest
from customer_context.config import Settings, parse_write_keys
from customer_context.errors import ConfigError


def test_defaults_suit_the_local_stack(tmp_path) -> None:
    settings = Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(tmp_path)})
    config = settings.catalog_config()
    assert config["type"] == "sql"
    assert config["uri"] == f"sqlite:///{tmp_path}/catalog.db"
    assert config["warehouse"] == (tmp_path / "warehouse").as_uri()


def test_rest_catalog_properties_are_merged() -> None:
    settings = Settings.from_env({
        "CUSTOMER_CONTEXT_CATALOG_TYPE": "rest", "CUSTOMER_CONTEXT_CATALOG_URI": "https://s3tables.x/iceberg",
        "CUSTOMER_CONTEXT_WAREHOUSE": "arn:aws:s3tables:us-east-1:1:bucket/b",
        "CUSTOMER_CONTEXT_CATALOG_PROPERTIES": '{"rest.sigv4-enabled": "true"}'})
    assert settings.catalog_config() == {"type": "rest", "uri": "https://s3tables.x/iceberg",
                                         "warehouse": "arn:aws:s3tables:us-east-1:1:bucket/b",
                                         "rest.sigv4-enabled": "true"}


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("CUSTOMER_CONTEXT_MAX_EVENT_BYTES", "lots", "valid integer"),
    ("CUSTOMER_CONTEXT_CATALOG_TYPE", "hive", "'sql', 'glue' or 'rest'"),
    ("CUSTOMER_CONTEXT_CATALOG_PROPERTIES", "[1]", "expected a JSON object"),
    ("CUSTOMER_CONTEXT_CORS_ALLOW_ORIGINS", "www.example.com", "origins like `https://www.example.com`"),
    ("CUSTOMER_CONTEXT_CORS_ALLOW_ORIGINS", "https://x.com/shop", "'https://x.com/shop'"),
])
def test_bad_values_name_the_variable(name: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        Settings.from_env({name: value})
    assert reason in info.value.message


def test_write_keys_parse_and_errors() -> None:
    assert parse_write_keys(" k1=web , k2=ios,") == {"k1": "web", "k2": "ios"}
    with pytest.raises(ConfigError, match="item 2 is not `key=source_id`") as info:
        parse_write_keys("k1=web, wk_secret_key")
    assert "wk_secret_key" not in info.value.message  # a malformed item may be a key: never echoed
