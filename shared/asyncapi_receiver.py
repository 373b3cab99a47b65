"""The handlers FastStream reads a received message's schema from, for the AsyncAPI document
(shared/asyncapi.py). Never called.

This module does not use `from __future__ import annotations` on purpose: FastStream reads the
message type from the handler's signature, and here `event: model` is evaluated when the
function is defined, so the annotation is the model class itself, not the string "model".
"""

from typing import Any


def receiver(model: type[Any], name: str) -> Any:
    """A handler whose one argument is annotated with `model` (a pydantic class)."""

    async def receive(event: model) -> None:  # type: ignore[valid-type]
        del event

    receive.__name__ = name
    return receive
