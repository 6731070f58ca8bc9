"""Exponential backoff with full jitter: every delay is within [0, min(cap, base * 2**(n-1))]."""

from __future__ import annotations

import random

import pytest

from jobbridge_agent.backoff import Backoff


@pytest.mark.parametrize(("retry", "ceiling"), [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (500, 30.0)])
def test_ceiling_doubles_up_to_the_cap(retry: int, ceiling: float) -> None:
    assert Backoff(0.5, 30.0).ceiling(retry) == ceiling


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    assert Backoff(1.0, 8.0, rng=lambda: 0.0).delay(4) == 0.0
    assert Backoff(1.0, 8.0, rng=lambda: 0.999999).delay(4) == pytest.approx(8.0, rel=1e-5)
    assert Backoff(1.0, 8.0, rng=lambda: 0.5).delay(3) == 2.0


def test_random_delays_stay_in_bounds_and_spread() -> None:
    backoff = Backoff(0.5, 10.0, rng=random.Random(7).random)
    for retry in range(1, 12):
        delays = [backoff.delay(retry) for _ in range(200)]
        assert all(0.0 <= d <= backoff.ceiling(retry) for d in delays)
        # jittered: not all the same, and the spread covers most of the range
        assert max(delays) - min(delays) > 0.5 * backoff.ceiling(retry)
