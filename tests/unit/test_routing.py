"""Every rule of jobbridge.routing, in the order the module applies them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from jobbridge.errors import PlacementNotAllowed
from jobbridge.models import DataClassification, JobCreate, Requirements, Route, Target
from jobbridge.registry import JobType, PlacementHint, load_registry
from jobbridge.routing import (
    FARGATE_MAX_MEMORY_MB,
    LAMBDA_MAX_MEMORY_MB,
    LAMBDA_MAX_RUNTIME_S,
    WORKER_START_MARGIN_S,
    LambdaWorker,
    choose_placement,
    merge_requirements,
    needs_batch,
)

ANYWHERE = frozenset({Route.LAMBDA, Route.BATCH, Route.PRIVATE})


class AnyParams(BaseModel):
    model_config = ConfigDict(extra="allow")


def job_type(placements: set[Route] | frozenset[Route] = ANYWHERE, **kw: Any) -> JobType:
    return JobType(name=kw.pop("name", "probe"), func=lambda params, ctx: None, params_model=AnyParams,
                   placements=frozenset(placements), **kw)


def place(jt: JobType, worker: LambdaWorker | None = None, **request: Any):
    req = JobCreate(type=jt.name, **request)
    if worker is None:
        return choose_placement(jt, req, jt.parse_params(req.params))
    return choose_placement(jt, req, jt.parse_params(req.params), worker)


@pytest.fixture(scope="module")
def builtin():
    return load_registry()


# --- rule 1: confidential and restricted data never leave private -----------------------------------


@pytest.mark.parametrize("classification", ["confidential", "restricted"])
def test_sensitive_data_on_a_type_that_runs_anywhere_is_placed_on_private(classification: str) -> None:
    # given a type that could run anywhere, when the request classifies its data as sensitive
    placement = place(job_type(), data_classification=classification, requirements={"gpu": True})
    # then it runs on private, even though a GPU would otherwise send it to Batch
    assert placement.route is Route.PRIVATE
    assert placement.data_classification.value == classification


@pytest.mark.parametrize("classification", ["confidential", "restricted"])
def test_sensitive_data_with_target_public_is_refused_naming_the_reason(classification: str) -> None:
    with pytest.raises(PlacementNotAllowed) as caught:
        place(job_type(), data_classification=classification, target="public")
    assert f"classified {classification}" in caught.value.reason
    assert "never leaves private" in caught.value.reason
    assert caught.value.field == "target"


def test_sensitive_data_on_a_type_that_cannot_run_private_is_refused() -> None:
    jt = job_type({Route.LAMBDA, Route.BATCH})
    with pytest.raises(PlacementNotAllowed) as caught:
        place(jt, data_classification="restricted")
    assert "must run on private" in caught.value.reason
    assert "'probe' cannot run there" in caught.value.reason
    assert caught.value.field == "data_classification"


@pytest.mark.parametrize("classification", ["public", "internal"])
def test_public_and_internal_data_may_leave_private(classification: str) -> None:
    assert place(job_type(), data_classification=classification).route is Route.LAMBDA


# --- classification floor -----------------------------------------------------------------------


def test_a_request_cannot_lower_the_type_classification(builtin) -> None:
    # given genome_align, whose data is restricted
    jt = builtin.get("genome_align")
    # when a request claims its data is public
    placement = place(jt, params={"sample_id": "S1"}, data_classification="public")
    # then the type's classification stands, and so does the private placement
    assert placement.data_classification is DataClassification.RESTRICTED
    assert placement.route is Route.PRIVATE


def test_a_request_may_raise_the_type_classification() -> None:
    jt = job_type(data_classification=DataClassification.PUBLIC)
    placement = place(jt, data_classification="confidential")
    assert placement.data_classification is DataClassification.CONFIDENTIAL
    assert placement.route is Route.PRIVATE


def test_without_a_request_classification_the_type_default_applies() -> None:
    placement = place(job_type(data_classification=DataClassification.PUBLIC))
    assert placement.data_classification is DataClassification.PUBLIC


def test_a_restricted_type_asked_to_run_public_is_refused(builtin) -> None:
    with pytest.raises(PlacementNotAllowed) as caught:
        place(builtin.get("genome_align"), params={"sample_id": "S1"}, target="public")
    assert "never leaves private" in caught.value.reason


# --- rule 3: what Lambda cannot run goes to Batch -----------------------------------------------------


@pytest.mark.parametrize(
    "requirements, route",
    [
        ({}, Route.LAMBDA),
        ({"gpu": True}, Route.BATCH),
        # the worker starts a job only with its margin to spare: 900 s of work never fits a 900 s Lambda
        ({"expected_runtime_s": LAMBDA_MAX_RUNTIME_S - WORKER_START_MARGIN_S}, Route.LAMBDA),
        ({"expected_runtime_s": LAMBDA_MAX_RUNTIME_S - WORKER_START_MARGIN_S + 1}, Route.BATCH),
        ({"memory_mb": LAMBDA_MAX_MEMORY_MB}, Route.LAMBDA),
        ({"memory_mb": LAMBDA_MAX_MEMORY_MB + 1}, Route.BATCH),
    ],
    ids=["nothing", "gpu", "runtime-890", "runtime-891", "memory-10240", "memory-10241"],
)
@pytest.mark.parametrize("target", ["auto", "public"])
def test_public_work_goes_to_lambda_unless_lambda_cannot_run_it(requirements, route, target) -> None:
    assert place(job_type(), requirements=requirements, target=target).route is route


def test_needs_batch_names_why() -> None:
    assert needs_batch(Requirements()) is None
    assert needs_batch(Requirements(gpu=True)) == "it needs a GPU"
    assert "901s" in needs_batch(Requirements(expected_runtime_s=901))
    assert "10241 MB" in needs_batch(Requirements(memory_mb=10241))


DEPLOYED = LambdaWorker(timeout_s=300, memory_mb=1024)  # template parameters WorkerTimeout, WorkerMemorySize


@pytest.mark.parametrize(
    "requirements, route",
    [
        ({"expected_runtime_s": 300 - WORKER_START_MARGIN_S}, Route.LAMBDA),
        ({"expected_runtime_s": 300 - WORKER_START_MARGIN_S + 1}, Route.BATCH),
        ({"expected_runtime_s": 600}, Route.BATCH),  # within Lambda's 900 s, past the deployed worker
        ({"memory_mb": 1024}, Route.LAMBDA),
        ({"memory_mb": 1025}, Route.BATCH),  # within Lambda's 10,240 MB, past the deployed worker
    ],
    ids=["runtime-290", "runtime-291", "runtime-600", "memory-1024", "memory-1025"],
)
def test_public_work_past_the_deployed_worker_goes_to_batch(requirements, route) -> None:
    assert place(job_type(), DEPLOYED, requirements=requirements, target="public").route is route


def test_needs_batch_names_the_deployed_worker() -> None:
    assert "WorkerTimeout 300s" in needs_batch(Requirements(expected_runtime_s=600), DEPLOYED)
    assert "WorkerMemorySize 1024 MB" in needs_batch(Requirements(memory_mb=2048), DEPLOYED)


def test_cpu_work_past_fargates_largest_size_is_refused_for_public_and_says_why() -> None:
    with pytest.raises(PlacementNotAllowed) as caught:
        place(job_type({Route.LAMBDA, Route.BATCH}), requirements={"memory_mb": FARGATE_MAX_MEMORY_MB + 1},
              target="public")
    assert caught.value.field == "requirements" and str(FARGATE_MAX_MEMORY_MB) in caught.value.reason
    # with a GPU it goes to the EC2 GPU queue, which Fargate's limit does not bind
    assert place(job_type(), requirements={"memory_mb": FARGATE_MAX_MEMORY_MB + 1, "gpu": True}).route is Route.BATCH


def test_a_lambda_only_type_that_needs_batch_is_refused_naming_the_requirement() -> None:
    with pytest.raises(PlacementNotAllowed) as caught:
        place(job_type({Route.LAMBDA}), requirements={"gpu": True}, target="public")
    assert "can only run on Lambda" in caught.value.reason
    assert "needs a GPU" in caught.value.reason
    assert caught.value.field == "requirements"


def test_auto_falls_back_to_private_when_the_public_route_cannot_take_the_job() -> None:
    jt = job_type({Route.LAMBDA, Route.PRIVATE})
    assert place(jt, requirements={"gpu": True}).route is Route.PRIVATE


def test_a_batch_only_type_runs_on_batch_even_for_small_work() -> None:
    assert place(job_type({Route.BATCH})).route is Route.BATCH


def test_requirements_merge_takes_the_larger_of_asked_and_inferred() -> None:
    merged = merge_requirements(Requirements(memory_mb=2048, expected_runtime_s=10),
                                Requirements(gpu=True, memory_mb=16384))
    assert merged == Requirements(gpu=True, memory_mb=16384, expected_runtime_s=10)
    assert merge_requirements(Requirements(), Requirements()) == Requirements()


# --- targets the job type forbids ---------------------------------------------------------------------


def test_target_private_on_a_public_only_type_is_refused_with_the_allowed_targets() -> None:
    with pytest.raises(PlacementNotAllowed) as caught:
        place(job_type({Route.LAMBDA, Route.BATCH}), target="private")
    assert "does not allow target 'private'" in caught.value.reason
    assert "(allowed: public)" in caught.value.reason
    assert caught.value.field == "target"


def test_target_public_on_a_private_only_type_is_refused_with_the_allowed_targets() -> None:
    with pytest.raises(PlacementNotAllowed) as caught:
        place(job_type({Route.PRIVATE}), target="public")
    assert "does not allow target 'public'" in caught.value.reason
    assert "(allowed: private)" in caught.value.reason


def test_auto_uses_the_type_default_target() -> None:
    assert place(job_type(default_target=Target.PRIVATE)).route is Route.PRIVATE
    assert place(job_type(default_target=Target.PUBLIC)).route is Route.LAMBDA


def test_an_explicit_target_beats_the_type_hint() -> None:
    jt = job_type(plan=lambda params: PlacementHint(target=Target.PRIVATE))
    assert place(jt).route is Route.PRIVATE
    assert place(jt, target="public").route is Route.LAMBDA


# --- the example types' own plans -------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, target, route",
    [
        ({"video_id": "v", "resolution": "8K"}, "auto", Route.BATCH),
        ({"video_id": "v", "resolution": "1080p", "hdr": True}, "auto", Route.BATCH),
        ({"video_id": "v", "resolution": "4K"}, "auto", Route.PRIVATE),
        ({"video_id": "v"}, "auto", Route.PRIVATE),
        ({"video_id": "v", "resolution": "4K"}, "public", Route.BATCH),
        ({"video_id": "v", "resolution": "8K"}, "private", Route.PRIVATE),
    ],
    ids=["8K", "HDR", "4K", "default-1080p", "4K-public", "8K-private"],
)
def test_transcode_routes_by_resolution_and_hdr(builtin, params, target, route) -> None:
    placement = place(builtin.get("transcode"), params=params, target=target)
    assert placement.route is route


def test_transcode_8k_carries_the_inferred_gpu_requirement(builtin) -> None:
    placement = place(builtin.get("transcode"), params={"video_id": "v", "resolution": "8K"})
    assert placement.requirements.gpu is True
    assert placement.requirements.memory_mb == 16384


@pytest.mark.parametrize("seconds, route", [(10, Route.LAMBDA), (889, Route.LAMBDA), (890, Route.BATCH), (7200, Route.BATCH)])
def test_sleep_infers_its_runtime_from_its_params(builtin, seconds, route) -> None:
    # the plan asks for seconds + 1; a 900 s worker starts at most 890 s of work (its start margin),
    # so 890 s of sleep is past it (before, 899 s went to Lambda, timed out there and retried in vain)
    assert place(builtin.get("sleep"), params={"seconds": seconds}).route is route
