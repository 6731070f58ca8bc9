"""jobbridge_local.instances: a function's execution environments as processes (no network).

The function is written by the test into its own directory and described by a one-function
template, so each behaviour (warm reuse, concurrency, errors, timeouts) is the handler's choice.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from jobbridge_local.instances import FunctionError, FunctionInstances
from jobbridge_local.invoke import LocalFunction
from jobbridge_local.template import Template

HANDLER = '''
import os, time

def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("raise"):
        raise ValueError(event["raise"])
    if event.get("not_json"):
        return {1, 2}
    return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis(),
            "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "greeting": os.environ["GREETING"],
            "event": event}
'''


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[FunctionInstances]:
    (tmp_path / "app.py").write_text(HANDLER)
    template = Template({"Resources": {"ProbeFunction": {
        "Type": "AWS::Serverless::Function",
        "Properties": {"CodeUri": ".", "Handler": "app.handler", "Timeout": 3,
                       "Environment": {"Variables": {"GREETING": "hello"}}},
    }}}, base_dir=tmp_path)
    function = LocalFunction(template.function_spec("ProbeFunction"), "http://127.0.0.1:9")
    instances = FunctionInstances(function, max_instances=2, timeout_grace_s=0.5)
    yield instances
    instances.close()


def test_an_invocation_gets_the_function_environment_and_a_context_counting_down_from_its_timeout(pool) -> None:
    out = pool.invoke({"n": 1})

    assert out["event"] == {"n": 1}
    assert out["greeting"] == "hello" and out["function"] == "jobbridge-ProbeFunction"
    assert 0 < out["remaining_ms"] <= 3000


def test_a_warm_environment_serves_the_next_invocation(pool) -> None:
    first, second = pool.invoke({}), pool.invoke({})

    assert first["pid"] == second["pid"]
    assert pool.started == 1


def test_concurrent_invocations_run_in_separate_environments(pool) -> None:
    pids: list[int] = []
    gate = threading.Barrier(2, timeout=20)

    def call() -> None:
        gate.wait()
        pids.append(pool.invoke({"sleep": 1})["pid"])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(set(pids)) == 2
    assert pool.started == 2


def test_a_handler_error_is_the_invocations_error_and_the_environment_stays_warm(pool) -> None:
    pid = pool.invoke({})["pid"]

    with pytest.raises(FunctionError) as error:
        pool.invoke({"raise": "bad record"})

    assert (error.value.error_type, error.value.message) == ("ValueError", "bad record")
    assert pool.invoke({})["pid"] == pid


def test_a_response_that_is_not_json_is_a_marshal_error(pool) -> None:
    with pytest.raises(FunctionError) as error:
        pool.invoke({"not_json": True})

    assert error.value.error_type == "Runtime.MarshalError"


def test_an_invocation_past_the_timeout_is_ended_and_the_next_one_starts_fresh(pool) -> None:
    pid = pool.invoke({})["pid"]

    with pytest.raises(FunctionError) as error:
        pool.invoke({"sleep": 30})

    assert error.value.error_type == "Sandbox.Timedout"
    assert "3.00 seconds" in error.value.message
    assert pool.invoke({})["pid"] != pid


def test_a_closed_pool_refuses_invocations(pool) -> None:
    pool.invoke({})
    pool.close()
    pool.close()  # idempotent

    with pytest.raises(FunctionError) as error:
        pool.invoke({})

    assert error.value.error_type == "Local.Closed"


