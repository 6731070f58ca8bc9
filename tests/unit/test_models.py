"""The edge models (what a client may send and see) and job ids."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobbridge.errors import InvalidParams
from jobbridge.ids import PREFIX, idempotent_job_id, is_job_id, iso, new_job_id, parse_iso, utcnow
from jobbridge.models import Job, JobCreate, JobPublic, JobSummary, Route, State, Target
from jobbridge.registry import load_registry
from jobbridge.service import JobService, request_hash

SERVER_OWNED = ["job_id", "state", "tenant", "attempt", "max_attempts", "route", "lease_owner", "lease_expires_at",
                "cancel_requested", "result", "error", "created_at", "dispatched_at", "started_at", "finished_at",
                "version", "history", "request_hash", "expires_at"]


# --- JobCreate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", SERVER_OWNED)
def test_job_create_refuses_a_server_owned_field_naming_it(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate({"type": "echo", field: "x"})
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [((field,), "extra_forbidden")]


def test_job_create_defaults() -> None:
    request = JobCreate(type="echo")
    assert request.params == {}
    assert request.target is Target.AUTO
    assert request.priority == 0
    assert request.data_classification is None
    assert request.requirements.gpu is False


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"type": ""}, ("type",)),
        ({"type": "has space"}, ("type",)),
        ({"type": "x" * 129}, ("type",)),
        ({"type": "echo", "target": "hybrid"}, ("target",)),
        ({"type": "echo", "priority": 101}, ("priority",)),
        ({"type": "echo", "requirements": {"memory_mb": 64}}, ("requirements", "memory_mb")),
        ({"type": "echo", "requirements": {"cpus": 4}}, ("requirements", "cpus")),
        ({"type": "echo", "data_classification": "secret"}, ("data_classification",)),
        ({"type": "echo", "params": [1, 2]}, ("params",)),
    ],
)
def test_job_create_validates_each_field(body: dict[str, Any], loc: tuple) -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(body)
    assert caught.value.errors()[0]["loc"] == loc


def test_public_views_leave_out_internal_fields() -> None:
    job = Job(job_id=new_job_id(), tenant="acme", type="echo", route=Route.LAMBDA, state=State.QUEUED,
              created_at=iso(utcnow()), lease_owner="w1", request_hash="h", expires_at=1)
    public = JobPublic.of(job).model_dump()
    assert {"tenant", "lease_owner", "request_hash", "expires_at", "version"}.isdisjoint(public)
    assert JobSummary.of(job).job_id == job.job_id


def test_request_hash_ignores_key_order_of_the_json_body() -> None:
    a = JobCreate.model_validate({"type": "echo", "params": {"x": 1}, "priority": 2})
    b = JobCreate.model_validate({"priority": 2, "params": {"x": 1}, "type": "echo"})
    c = JobCreate.model_validate({"type": "echo", "params": {"x": 2}, "priority": 2})
    assert request_hash(a) == request_hash(b) != request_hash(c)


# --- NaN and Infinity never get stored ------------------------------------------------------------------


class RefusingStore:
    """A store that fails the test if anything reaches it."""

    def clock(self):
        raise AssertionError("the store was reached")

    def create(self, job):
        raise AssertionError("the store was reached")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_infinity_in_params_is_refused_before_the_store(bad: float) -> None:
    service = JobService(RefusingStore(), load_registry())  # type: ignore[arg-type]
    with pytest.raises(InvalidParams) as caught:
        service.submit("acme", JobCreate(type="echo", params={"deep": [{"value": bad}]}))
    assert caught.value.errors[0]["loc"] == ["body", "params"]


# --- ids ------------------------------------------------------------------------------------------------


def test_new_job_ids_are_valid_and_unique() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(is_job_id(i) and i.startswith(PREFIX) and len(i) == 30 for i in ids)


def test_new_job_ids_sort_by_creation_time() -> None:
    times = [1_600_000_000_000, 1_600_000_000_001, 1_700_000_000_000, 4_000_000_000_000]
    ids = [new_job_id(ms) for ms in times]
    assert sorted(ids) == ids
    assert sorted(reversed(ids)) == ids


@pytest.mark.parametrize("value", ["", "job_", "job_" + "0" * 25, "job_" + "0" * 27, "JOB_" + "0" * 26,
                                   "job_" + "0" * 25 + "u", "job_" + "0" * 25 + "/", "../etc/passwd"])
def test_is_job_id_refuses_what_a_job_id_cannot_be(value: str) -> None:
    assert not is_job_id(value)


def test_idempotent_ids_are_stable_per_tenant_and_key() -> None:
    first = idempotent_job_id("acme", "order-1")
    assert first == idempotent_job_id("acme", "order-1")
    assert is_job_id(first)


@pytest.mark.parametrize("other", [("globex", "order-1"), ("acme", "order-2"), ("acmeo", "rder-1")])
def test_idempotent_ids_differ_across_tenants_and_keys(other: tuple[str, str]) -> None:
    assert idempotent_job_id("acme", "order-1") != idempotent_job_id(*other)


def test_idempotent_ids_cannot_collide_with_generated_ids() -> None:
    # generated ids start with the 48-bit time: a leading 'k' would be a time past the year 10889
    assert idempotent_job_id("acme", "x")[len(PREFIX)] == "k"
    assert new_job_id()[len(PREFIX)] != "k"


def test_iso_timestamps_round_trip_and_sort_lexically() -> None:
    now = utcnow()
    text = iso(now)
    assert text.endswith("Z") and len(text) == len("2025-01-01T00:00:00.000Z")
    assert abs((parse_iso(text) - now).total_seconds()) < 0.001
    assert iso(parse_iso("2025-01-01T00:00:09.999Z")) < iso(parse_iso("2025-01-01T00:00:10.000Z"))
