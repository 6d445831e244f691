"""Property tests are derandomized by default (tests/conftest.py): the same examples on every run."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def test_property_tests_draw_the_same_examples_on_every_run() -> None:
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci":
        pytest.skip("HYPOTHESIS_PROFILE asks for random examples on purpose")
    assert settings.default.derandomize and settings.default.database is None
    # Given the same property test run twice
    runs: list[list[int]] = []
    for _ in range(2):
        drawn: list[int] = []

        @given(st.integers())
        def property_test(n: int) -> None:
            drawn.append(n)  # noqa: B023 - each run's own list, used within the iteration

        property_test()
        runs.append(drawn)
    # Then both runs drew the same examples, in the same order
    assert len(runs[0]) > 10 and runs[0] == runs[1]
