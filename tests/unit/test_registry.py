"""The job type registry: registration, lookup, params validation, operator modules."""

from __future__ import annotations

import sys
from typing import Any, Iterator

import pytest
from pydantic import BaseModel, ConfigDict, Field

from jobbridge.config import Settings
from jobbridge.errors import InvalidParams, UnknownJobType
from jobbridge.models import DataClassification, Route, Target
from jobbridge.registry import REGISTRY, Backoff, Registry, job_type, load_registry

BUILTIN = {"echo", "sleep", "fail", "transcode", "genome_align"}
OPERATOR_MODULE = "fixtures_jobs.custom_jobs"


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = Field(ge=1)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: Inner


def noop(params: Any, ctx: Any) -> None:
    """Do nothing.

    A second paragraph that the description leaves out."""


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def operator_module_unloaded() -> Iterator[None]:
    """The process registry and sys.modules as they were: the operator's type is gone afterwards."""
    before = set(REGISTRY.names())
    yield
    for name in set(REGISTRY.names()) - before:
        REGISTRY._types.pop(name)  # no public unregister: types live as long as the process
    sys.modules.pop(OPERATOR_MODULE, None)


# --- registration ----------------------------------------------------------------------------------


def test_a_decorated_function_is_registered_with_its_settings(registry: Registry) -> None:
    job_type("probe", params=Params, placements=[Route.LAMBDA, "private"], timeout_s=30, max_attempts=5,
             backoff=Backoff(1, 8), registry=registry)(noop)

    jt = registry.get("probe")
    assert jt.func is noop
    assert jt.params_model is Params
    assert jt.placements == {Route.LAMBDA, Route.PRIVATE}
    assert (jt.timeout_s, jt.max_attempts, jt.backoff) == (30, 5, Backoff(1, 8))
    assert jt.description == "Do nothing."
    assert jt.allowed_targets == [Target.AUTO, Target.PUBLIC, Target.PRIVATE]
    assert registry.names() == ["probe"] and len(registry) == 1


def test_the_decorator_returns_the_function_unchanged(registry: Registry) -> None:
    assert job_type("probe", params=Params, placements=[Route.LAMBDA], registry=registry)(noop) is noop


def test_a_second_function_under_a_taken_name_is_refused(registry: Registry) -> None:
    job_type("probe", params=Params, placements=[Route.LAMBDA], registry=registry)(noop)

    def other(params: Any, ctx: Any) -> None: ...

    with pytest.raises(ValueError, match="'probe' is already registered"):
        job_type("probe", params=Params, placements=[Route.LAMBDA], registry=registry)(other)
    assert registry.get("probe").func is noop


def test_registering_the_same_function_again_is_harmless(registry: Registry) -> None:
    # a module imported twice (e.g. under reload) registers the same function again
    for _ in range(2):
        job_type("probe", params=Params, placements=[Route.LAMBDA], registry=registry)(noop)
    assert len(registry) == 1


def test_a_type_without_placements_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match="at least one placement"):
        job_type("probe", params=Params, placements=[], registry=registry)


@pytest.mark.parametrize("classification", [DataClassification.CONFIDENTIAL, DataClassification.RESTRICTED])
def test_a_sensitive_type_that_could_leave_private_is_refused(registry: Registry, classification) -> None:
    with pytest.raises(ValueError, match="may only run on private"):
        job_type("probe", params=Params, placements=[Route.PRIVATE, Route.BATCH],
                 data_classification=classification, registry=registry)


@pytest.mark.parametrize(
    "placements, targets",
    [
        ({Route.PRIVATE}, [Target.AUTO, Target.PRIVATE]),
        ({Route.BATCH}, [Target.AUTO, Target.PUBLIC]),
        ({Route.LAMBDA, Route.BATCH, Route.PRIVATE}, [Target.AUTO, Target.PUBLIC, Target.PRIVATE]),
    ],
)
def test_allowed_targets_follow_placements(registry: Registry, placements, targets) -> None:
    job_type("probe", params=Params, placements=placements, registry=registry)(noop)
    assert registry.get("probe").allowed_targets == targets


def test_backoff_ceiling_doubles_up_to_its_maximum() -> None:
    backoff = Backoff(base_s=2, max_s=10)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


# --- lookup ---------------------------------------------------------------------------------------


def test_an_unknown_type_error_lists_the_known_names(registry: Registry) -> None:
    for name in ("zeta", "alpha"):
        job_type(name, params=Params, placements=[Route.LAMBDA], registry=registry)(lambda p, c: None)

    with pytest.raises(UnknownJobType) as caught:
        registry.get("nope")
    assert caught.value.name == "nope"
    assert caught.value.known == ["alpha", "zeta"]
    assert "known types: alpha, zeta" in str(caught.value)


def test_the_builtin_types_are_loaded() -> None:
    assert BUILTIN <= set(load_registry().names())


# --- params --------------------------------------------------------------------------------------------


def test_params_errors_carry_field_paths_under_body_params(registry: Registry) -> None:
    job_type("probe", params=Params, placements=[Route.LAMBDA], registry=registry)(noop)

    with pytest.raises(InvalidParams) as caught:
        registry.get("probe").parse_params({"inner": {"depth": 0}, "extra": 1})

    locs = {tuple(e["loc"]): e["type"] for e in caught.value.errors}
    assert locs == {
        ("body", "params", "name"): "missing",
        ("body", "params", "inner", "depth"): "greater_than_equal",
        ("body", "params", "extra"): "extra_forbidden",
    }
    assert caught.value.job_type == "probe"
    assert all(set(e) == {"loc", "msg", "type"} for e in caught.value.errors)  # no input echoed back


def test_valid_params_parse_into_the_type_model(registry: Registry) -> None:
    job_type("probe", params=Params, placements=[Route.LAMBDA], registry=registry)(noop)
    parsed = registry.get("probe").parse_params({"name": "n", "inner": {"depth": 2}})
    assert parsed == Params(name="n", inner=Inner(depth=2))


def test_transcode_rejects_an_unknown_resolution_naming_the_field() -> None:
    with pytest.raises(InvalidParams) as caught:
        load_registry().get("transcode").parse_params({"video_id": "v", "resolution": "16K"})
    assert [e["loc"] for e in caught.value.errors] == [["body", "params", "resolution"]]


# --- operator modules (JOBBRIDGE_JOB_MODULES) -------------------------------------------------------------


def test_job_modules_setting_splits_a_comma_separated_list() -> None:
    settings = Settings.from_env({"JOBBRIDGE_JOB_MODULES": " a.b , c ,, "})
    assert settings.job_modules == ("a.b", "c")


@pytest.mark.usefixtures("operator_module_unloaded")
def test_an_operator_module_named_in_the_environment_registers_its_types() -> None:
    # given an operator's module named the way the template passes it
    settings = Settings.from_env({"JOBBRIDGE_JOB_MODULES": OPERATOR_MODULE})
    assert "custom_resize" not in REGISTRY.names()

    # when the registry is loaded with the configured modules
    registry = load_registry(settings.job_modules)

    # then its type sits next to the built-in ones and validates its own params
    assert {"custom_resize", *BUILTIN} <= set(registry.names())
    jt = registry.get("custom_resize")
    assert jt.placements == {Route.LAMBDA, Route.PRIVATE}
    assert jt.timeout_s == 120
    with pytest.raises(InvalidParams) as caught:
        jt.parse_params({"image": "a.png", "width": 0})
    assert caught.value.errors[0]["loc"] == ["body", "params", "width"]


def test_loading_the_operator_module_twice_is_harmless(operator_module_unloaded) -> None:
    load_registry([OPERATOR_MODULE])
    count = len(REGISTRY)
    load_registry([OPERATOR_MODULE])
    assert len(REGISTRY) == count


def test_a_module_that_does_not_exist_gives_an_import_error_naming_it_and_the_setting() -> None:
    with pytest.raises(ImportError) as caught:
        load_registry(["no_such_operator.jobs"])
    message = str(caught.value)
    assert "'no_such_operator.jobs'" in message
    assert "JOBBRIDGE_JOB_MODULES" in message
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
