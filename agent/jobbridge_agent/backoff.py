"""Exponential backoff with full jitter, for every retry the agent makes (API calls, SQS
receives, message deletes): the n-th retry waits uniform(0, min(cap, base * 2**(n-1))).
Full jitter spreads a fleet of agents that all lost the same dependency at once, so they do not
come back in lockstep (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 = the first retry)."""
        exponent = min(max(0, retry - 1), 62)  # no float overflow after a long outage
        return min(self.cap_s, self.base_s * (2 ** exponent))

    def delay(self, retry: int) -> float:
        return self.rng() * self.ceiling(retry)
