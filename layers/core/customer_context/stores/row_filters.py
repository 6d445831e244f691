"""Iceberg row filters, typed: the one place that builds pyiceberg's predicates from a column name.

pyiceberg's predicates are pydantic models whose constructors take ``(term, literal)`` positionally, while the
signature a type checker synthesises from their fields does not allow it; these functions state the real one.
pyiceberg is imported when a filter is made, not when this module is (the core layer's functions import it
without pyiceberg).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression


def equal(column: str, value: Any) -> BooleanExpression:
    from pyiceberg.expressions import EqualTo

    return EqualTo(column, value)  # type: ignore[call-arg, arg-type, misc]


def one_of(column: str, values: Iterable[Any]) -> BooleanExpression:
    from pyiceberg.expressions import In

    return In(column, set(values))  # type: ignore[call-arg, arg-type, misc]


def at_least(column: str, value: Any) -> BooleanExpression:
    from pyiceberg.expressions import GreaterThanOrEqual

    return GreaterThanOrEqual(column, value)  # type: ignore[call-arg, arg-type, misc]


def at_most(column: str, value: Any) -> BooleanExpression:
    from pyiceberg.expressions import LessThanOrEqual

    return LessThanOrEqual(column, value)  # type: ignore[call-arg, arg-type, misc]


def below(column: str, value: Any) -> BooleanExpression:
    from pyiceberg.expressions import LessThan

    return LessThan(column, value)  # type: ignore[call-arg, arg-type, misc]


def is_null(column: str) -> BooleanExpression:
    from pyiceberg.expressions import IsNull

    return IsNull(column)  # type: ignore[call-arg, arg-type, misc]
