"""What a stored document is to the code that reads and writes it: a plain mapping of field
names to BSON-encodable values, as PyMongo returns it. The one declaration every store, use
case and domain rule names."""

from __future__ import annotations

from typing import Any

Doc = dict[str, Any]
