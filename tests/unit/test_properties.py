"""The property tests' budgets: under the default profile (`make test`) each test tries the
examples it always did; under `unit` (`make unit`) a fifth of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.properties import DEFAULT_EXAMPLES, UNIT_EXAMPLES, examples


@pytest.fixture
def profile() -> Iterator[None]:
    """Load profiles in the test; the run's own is loaded again after it."""
    current = settings.get_current_profile_name()
    yield
    settings.load_profile(current)


def test_the_default_profile_keeps_every_budget_as_written(profile: None) -> None:
    settings.load_profile("default")
    assert settings.default.max_examples == DEFAULT_EXAMPLES == 100
    assert [examples(n) for n in (40, 60, 80, 200, 300, 400)] == [40, 60, 80, 200, 300, 400]


def test_the_unit_profile_tries_a_fifth_of_each_budget(profile: None) -> None:
    settings.load_profile("unit")
    assert settings.default.max_examples == UNIT_EXAMPLES == 20
    assert [examples(n) for n in (40, 60, 80, 200, 300, 400)] == [8, 12, 16, 40, 60, 80]
