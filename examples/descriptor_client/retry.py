"""When to try a request again, and how long to wait first.

Overload (503, and 429 should the server ever send it), a gateway's 502/504, a body the
server timed out on (408) and connection errors are retried; any other answer is final.
The wait honours ``Retry-After`` when the answer has one (seconds or an HTTP date), plus a
little jitter so that many clients do not come back at the same instant; without it, the
wait doubles with each attempt, from ``base_s`` up to ``max_s``, with "equal jitter"
(somewhere between half and all of it).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now, or None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    """Retries after the first attempt."""
    base_s: float = 0.5
    max_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay_s(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after is not None:
            return min(retry_after, self.max_s) + self.rng.uniform(0, self.base_s)
        ceiling = min(self.max_s, self.base_s * 2**attempt)
        return self.rng.uniform(ceiling / 2, ceiling)
