"""What the members' rules answer when they refuse something."""

from __future__ import annotations


class RuleViolation(ValueError):
    """A join or change that the community's rules refuse (HTTP 422 with `code`).

    A ValueError, so a request model's validator that applies a rule reports it as one of
    the request's field errors (see schemas.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
