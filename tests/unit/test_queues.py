"""A failed SQS record comes back after a short, jittered, growing backoff (jobbridge.queues): by
ChangeMessageVisibility for a record that failed (its receive counted), or as a fresh copy for an
outage of ours (no receive spent)."""

from __future__ import annotations

from typing import Any

import pytest

from jobbridge.errors import DependencyUnavailable
from jobbridge.messages import JobMessage
from jobbridge.models import Route
from jobbridge.queues import RETURN_CAP_S, Queue, return_delay_s


class FakeSqs:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def send_message(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("send_message", kw))
        return {"MessageId": "m"}

    def change_message_visibility(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("change_message_visibility", kw))
        if self.fail:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://sqs")
        return {}


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_the_backoff_grows_with_each_return_is_jittered_and_capped(draw: float) -> None:
    delays = [return_delay_s(n, rng=lambda: draw) for n in range(1, 12)]
    ceilings = [min(RETURN_CAP_S, 2 * 2 ** (n - 1)) for n in range(1, 12)]
    # equal jitter: between half the ceiling and the ceiling, never zero, never past the cap
    assert all(max(1, c / 2) <= d <= c for d, c in zip(delays, ceilings))
    assert delays == sorted(delays) and delays[-1] <= RETURN_CAP_S


def test_a_first_failure_costs_seconds_not_the_queues_visibility_timeout() -> None:
    sqs = FakeSqs()
    delay = Queue("url", client=sqs).return_soon("rh", receives=1)
    assert delay is not None and 1 <= delay <= 2
    assert sqs.calls == [("change_message_visibility", {"QueueUrl": "url", "ReceiptHandle": "rh",
                                                         "VisibilityTimeout": delay})]


def test_when_sqs_is_out_too_the_record_comes_back_after_its_visibility_timeout() -> None:
    assert Queue("url", client=FakeSqs(fail=True)).return_soon("rh", receives=3) is None


def test_a_fresh_copy_counts_its_returns_and_waits_longer_each_time() -> None:
    sqs = FakeSqs()
    queue = Queue("url", client=sqs)
    message = JobMessage(job_id="job_1", route=Route.BATCH, attempt=2, timeout_s=60)
    delays = []
    for returns in range(1, 5):
        delays.append(queue.send_again(message))
        message = JobMessage.model_validate_json(sqs.calls[-1][1]["MessageBody"])
        assert (message.returns, message.attempt) == (returns, 2)
        assert sqs.calls[-1][1]["DelaySeconds"] == delays[-1]
    assert all(max(1, 2 ** n / 2) <= d <= 2 ** n for n, d in enumerate(delays, start=1))


def test_a_fresh_copy_that_cannot_be_sent_is_unavailable() -> None:
    class Refusing(FakeSqs):
        def send_message(self, **kw: Any) -> dict[str, Any]:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://sqs")

    with pytest.raises(DependencyUnavailable):
        Queue("url", client=Refusing()).send_again(JobMessage(job_id="job_1", route=Route.LAMBDA, attempt=0))


def test_the_lambda_worker_sends_a_fresh_copy_when_dynamodb_refuses_its_claim() -> None:
    from jobbridge.runner import Outcome, RunResult
    from jobbridge.worker import QueueWorker

    class Unavailable:  # the runner, when the claim's UpdateItem was throttled through its retries
        def run(self, job_id: str, **kw: Any) -> RunResult:
            return RunResult(Outcome.UNSETTLED, job_id, detail="dynamodb: ThrottlingException")

    sqs = FakeSqs()
    worker = QueueWorker(Unavailable(), Queue("url", client=sqs))  # type: ignore[arg-type]
    message = JobMessage(job_id="job_1", route=Route.LAMBDA, attempt=0, timeout_s=60)

    result = worker.process(message, "rh", remaining_s=900)

    # acknowledged (no receive spent on our outage), and a copy comes back after a short delay
    assert result.outcome is Outcome.HANDED_BACK
    ((operation, sent),) = sqs.calls
    assert operation == "send_message" and 1 <= sent["DelaySeconds"] <= 2
    assert JobMessage.model_validate_json(sent["MessageBody"]).returns == 1
