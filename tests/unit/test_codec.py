"""Job <-> DynamoDB item (jobbridge.dynamo_codec)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from jobbridge.dynamo_codec import decode_item, dump_json, encode_item, from_attr, to_attr
from jobbridge.ids import iso, new_job_id, utcnow
from jobbridge.models import Job, JobError, Progress, Route, State

FLOATS = [0.1, 1e-7, 1e300, -2.5, 1.0, 123456789.123456789, 2.0**-1074]


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, -17, 2**63, "", "plain", "ünïcødé ✓ 日本語 🚀",
        *FLOATS,
        {"a": {"b": [1, 2.5, "three", None, {"c": False}]}},
        [[], {}, [[[]]]],
    ],
)
def test_attribute_values_round_trip(value: Any) -> None:
    assert from_attr(to_attr(value)) == value


def test_floats_keep_their_type_and_exact_value() -> None:
    for value in FLOATS:
        back = from_attr(to_attr(value))
        assert isinstance(back, float) and back == value


def test_integers_stay_integers() -> None:
    assert isinstance(from_attr(to_attr(3)), int)
    assert isinstance(from_attr(to_attr(-3)), int)


def test_values_dynamodb_cannot_hold_are_refused() -> None:
    with pytest.raises(TypeError):
        to_attr({1, 2})
    with pytest.raises(TypeError):
        to_attr(object())


PARAMS = {
    "title": "Tōkyō ナイト 🌃",
    "ratio": 0.1,
    "tiny": 1e-300,
    "nested": {"list": [1, 2.25, {"deeper": [None, True]}], "empty": {}},
    "big": 2**70,
}


def record(**extra: Any) -> dict[str, Any]:
    now = iso(utcnow())
    job = Job(job_id=new_job_id(), tenant="acme", type="echo", params=PARAMS, route=Route.LAMBDA,
              state=State.RUNNING, created_at=now, progress=Progress(fraction=0.25, message="a quarter"),
              error=JobError(type="Boom", message="é", retryable=True, attempt=1), result={"out": [0.5, "ü"]},
              **extra)
    return job.model_dump(mode="json", exclude_none=True)


def test_a_job_record_round_trips_through_an_item() -> None:
    original = record()
    assert decode_item(encode_item(original)) == original
    assert Job.model_validate(decode_item(encode_item(original))) == Job.model_validate(original)


def test_params_and_result_are_stored_as_json_text() -> None:
    item = encode_item(record())
    assert set(item["params"]) == {"S"} and json.loads(item["params"]["S"]) == PARAMS
    assert set(item["result"]) == {"S"}
    # the rest is native DynamoDB types (queryable, projectable)
    assert item["progress"] == {"M": {"fraction": {"N": "0.25"}, "message": {"S": "a quarter"}}}
    assert item["state"] == {"S": "RUNNING"}


def test_none_values_are_left_out_not_stored_as_null() -> None:
    item = encode_item({"job_id": "j", "lease_owner": None, "progress": None})
    assert item == {"job_id": {"S": "j"}}


def test_params_nested_past_dynamodb_depth_limit_still_round_trip() -> None:
    # DynamoDB documents stop at 32 levels; JSON text does not
    deep: Any = "bottom"
    for _ in range(60):
        deep = {"d": deep}
    item = encode_item({"job_id": "j", "params": deep})
    assert decode_item(item)["params"] == deep


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_as_json(bad: float) -> None:
    with pytest.raises(ValueError):
        dump_json({"x": [bad]})
    with pytest.raises(ValueError):
        encode_item({"job_id": "j", "params": {"x": bad}})


def test_unicode_is_kept_verbatim_in_json_text() -> None:
    assert json.loads(dump_json({"k": "日本語 🚀"})) == {"k": "日本語 🚀"}
