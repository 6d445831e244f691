"""Request and response models of the fetch API (pydantic; validated by Powertools)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class IdentifierRef(BaseModel):
    """One identifier of a customer."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, description="user_id, anonymous_id, email, … or profile_id")
    value: str = Field(min_length=1, max_length=1024)


class BatchRequest(BaseModel):
    """``POST /v1/context:batch``."""

    model_config = ConfigDict(extra="forbid")

    identifiers: list[IdentifierRef] = Field(min_length=1, max_length=100,
                                             description="Up to 100 identifiers (DynamoDB BatchGetItem's limit)")
    fields: list[str] | None = Field(default=None, description="Dotted paths, e.g. traits.orders_90d")
    sections: list[str] | None = Field(default=None, description="Whole sections, e.g. traits")
