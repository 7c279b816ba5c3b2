"""Row values shown in Dagster's event log (previews, sample payloads, example keys), masked
as the project file's `samples:` says.

- `redacted` (the default): every value becomes its shape, `<text, 17 chars>`, `<number>`,
  `<timestamp>`; field names, nesting and NULLs stay. A key can be an e-mail address, so keys
  are masked too.
- `full`: values as they are.
- `off`: nothing; `shown` answers None and the caller leaves the entry out.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

Samples = Literal["redacted", "full", "off"]


def masked(value: Any) -> Any:
    """The value's shape without its content; dicts and lists keep their structure."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(v) for v in value]
    if isinstance(value, bool):
        return "<bool>"
    if isinstance(value, (int, float, Decimal)):
        return "<number>"
    if isinstance(value, dt.datetime):
        return "<timestamp>"
    if isinstance(value, dt.date):
        return "<date>"
    text = str(value)
    return f"<text, {len(text)} chars>"


def shown(value: Any, samples: Samples) -> Any:
    """What of `value` the event log may show: masked, as it is, or None (leave it out)."""
    if samples == "off":
        return None
    return value if samples == "full" else masked(value)
