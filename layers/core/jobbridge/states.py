"""The job state machine. Every arrow is one conditional DynamoDB write in store.JobStore.

    QUEUED ──claim──> RUNNING ──complete──> SUCCEEDED
      │                 │ ├──fail, attempts left──> QUEUED (backoff)
      │                 │ ├──fail, none left / dead-lettered / lease lost──> FAILED
      │                 │ └──cancel acknowledged (cancel_requested first)──> CANCELLED
      ├──cancel──> CANCELLED
      └──dead-lettered──> FAILED

SUCCEEDED, FAILED and CANCELLED are absorbing: nothing leaves them.
"""

from __future__ import annotations

from .models import FINAL_STATES, State

TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.QUEUED, State.FAILED, State.CANCELLED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


def can_transition(current: State, new: State) -> bool:
    return new in TRANSITIONS[current]


def sources_of(new: State) -> frozenset[State]:
    """The states a write to ``new`` may start from: the write's condition."""
    return frozenset(s for s, targets in TRANSITIONS.items() if new in targets)


assert all(not TRANSITIONS[s] for s in FINAL_STATES), "final states must be absorbing"
