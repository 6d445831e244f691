"""AWS clients for the storage classes, and what to tell a user who cannot reach AWS.

boto3 honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``, which is how the local stack and the
integration tests point every client at moto's server on loopback.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def boto_client(service: str) -> Any:
    """A boto3 client with standard-mode retries (backoff with jitter on throttling and 5xx)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10)
    return boto3.session.Session().client(service, config=config)


def explain_aws_problem(exc: Exception) -> str:
    """What a command-line user must set when boto3 cannot reach AWS (no region, no credentials), in one line."""
    from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError, ProfileNotFound

    if isinstance(exc, NoRegionError):
        return ("no AWS region: set AWS_DEFAULT_REGION (e.g. export AWS_DEFAULT_REGION=eu-west-1) or `region` in "
                "your AWS profile (aws configure)")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials: set AWS_PROFILE (aws configure / aws sso login) or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ProfileNotFound):
        return f"{exc}: check AWS_PROFILE against ~/.aws/config"
    return f"cannot reach AWS: {exc}"


def dynamodb_table(name: str) -> Any:
    """A DynamoDB table resource with standard-mode retries (more attempts than the clients: landing writes
    in bulk)."""
    import boto3
    from botocore.config import Config

    resource = boto3.session.Session().resource(
        "dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 8}))
    return resource.Table(name)
