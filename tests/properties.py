"""How many examples the property tests (Hypothesis) try, per run.

Two profiles:

- the default one (Hypothesis's own: 100 examples a test, a 200 ms deadline), which `make test`
  and a plain `pytest` run: the thorough run, and what CI runs;
- `unit`, which `make unit` selects (`--hypothesis-profile=unit`): a fifth of each budget, for
  the quick loop while working. Every property still runs, on fewer examples; examples that
  once failed are replayed first from the example database (`.hypothesis/`) in both.

A test that needs more than the default says how many with `examples(n)`, so that its budget
scales with the profile like the others: `n` under the default profile, a fifth of it under
`unit`.
"""

from __future__ import annotations

from hypothesis import settings

#: Hypothesis's default `max_examples`: a test's budget under the default profile.
DEFAULT_EXAMPLES = 100

#: The `unit` profile's examples a test: a fifth of the default's.
UNIT_EXAMPLES = DEFAULT_EXAMPLES // 5


def register_profiles() -> None:
    """Register `unit` (tests/conftest.py calls this before pytest loads a profile). Its other
    settings are those of the profile loaded when it is registered (Hypothesis's default, or
    its `ci` profile on a CI machine)."""
    settings.register_profile("unit", max_examples=UNIT_EXAMPLES)


def examples(n: int) -> int:
    """`n` under the default profile; under another, the same share of `n` as the profile's
    `max_examples` is of the default's (read when the test module is imported, after pytest
    has loaded the profile)."""
    budget = settings.default.max_examples  # type: ignore[union-attr]
    return max(1, n * budget // DEFAULT_EXAMPLES)
