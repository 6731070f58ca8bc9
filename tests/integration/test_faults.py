"""The fault-injection layer (jobbridge_faults) against moto server: each kind does to a real boto3
call what it says, counts what it did, repeats under a seed, and reaches child processes through
its sitecustomize bootstrap. Then the store under those faults: a lost response never makes a
second job, and a claim whose response was lost is fenced, not doubled."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

import jobbridge_faults
from jobbridge.errors import DependencyUnavailable, InvalidTransition
from jobbridge.ids import iso, new_job_id, utcnow
from jobbridge.models import HistoryEntry, Job, Route, State
from jobbridge.store import JobStore
from jobbridge_faults import FaultInjector, parse_spec
from jobbridge_local.resources import DUMMY_CREDENTIALS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _client(endpoint: str, service: str, attempts: int = 3):
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}), **DUMMY_CREDENTIALS)


@pytest.fixture
def table(moto_server) -> str:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    ddb = _client(moto_server.endpoint_url, "dynamodb")
    ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    return name


@pytest.fixture
def queue(moto_server) -> str:
    return _client(moto_server.endpoint_url, "sqs").create_queue(QueueName=f"faults-{uuid.uuid4().hex[:8]}")["QueueUrl"]


def _exists(endpoint: str, table: str, key: str) -> bool:
    return "Item" in _client(endpoint, "dynamodb").get_item(TableName=table, Key={"k": {"S": key}}, ConsistentRead=True)


def test_spec_parses_rates_limits_and_wildcards():
    rules = parse_spec("dynamodb.PutItem:throttle=0.05, sqs.*:duplicate=1/2")
    assert [str(r) for r in rules] == ["dynamodb.PutItem:throttle=0.05", "sqs.*:duplicate=1/2"]
    assert rules[1].matches("sqs", "ReceiveMessage") and not rules[1].matches("dynamodb", "ReceiveMessage")
    for bad in ("dynamodb.PutItem:explode=0.1", "dynamodb.PutItem:throttle=2", "PutItem=0.1"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_throttle_fails_every_attempt_and_writes_nothing(moto_server, table):
    with FaultInjector.from_spec("dynamodb.PutItem:throttle=1") as faults:
        ddb = _client(moto_server.endpoint_url, "dynamodb", attempts=3)
        with pytest.raises(ClientError) as caught:
            ddb.put_item(TableName=table, Item={"k": {"S": "a"}})
    assert caught.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert faults.counts == {"dynamodb.PutItem:throttle": 3}  # three attempts in all, each refused
    assert not _exists(moto_server.endpoint_url, table, "a")


def test_5xx_is_retried_by_botocore(moto_server, table):
    with FaultInjector.from_spec("dynamodb.PutItem:5xx=1/1") as faults:
        _client(moto_server.endpoint_url, "dynamodb").put_item(TableName=table, Item={"k": {"S": "b"}})
    assert faults.counts == {"dynamodb.PutItem:5xx": 1}
    assert _exists(moto_server.endpoint_url, table, "b")  # the retry went through


def test_5xx_without_retries_left_reaches_the_caller(moto_server, table):
    with FaultInjector.from_spec("dynamodb.PutItem:5xx=1"):
        with pytest.raises(ClientError) as caught:
            _client(moto_server.endpoint_url, "dynamodb", attempts=1).put_item(TableName=table, Item={"k": {"S": "c"}})
    assert caught.value.response["Error"]["Code"] in ("InternalServerError", "ServiceUnavailable")
    assert not _exists(moto_server.endpoint_url, table, "c")


def test_timeout_lets_the_write_through_then_times_out(moto_server, table):
    with FaultInjector.from_spec("dynamodb.PutItem:timeout=1") as faults:
        with pytest.raises(ReadTimeoutError):
            _client(moto_server.endpoint_url, "dynamodb", attempts=1).put_item(TableName=table, Item={"k": {"S": "d"}})
    assert faults.counts == {"dynamodb.PutItem:timeout": 1}
    assert _exists(moto_server.endpoint_url, table, "d")


def test_timeout_then_retry_meets_its_own_conditional_write(moto_server, table):
    with FaultInjector.from_spec("dynamodb.PutItem:timeout=1/1"):
        with pytest.raises(ClientError) as caught:
            _client(moto_server.endpoint_url, "dynamodb").put_item(
                TableName=table, Item={"k": {"S": "e"}}, ConditionExpression="attribute_not_exists(k)")
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"


def test_timeout_final_reaches_the_caller_after_success(moto_server, table):
    with FaultInjector.from_spec("dynamodb.PutItem:timeout_final=1") as faults:
        with pytest.raises(ReadTimeoutError):
            _client(moto_server.endpoint_url, "dynamodb").put_item(TableName=table, Item={"k": {"S": "f"}})
    assert faults.counts == {"dynamodb.PutItem:timeout_final": 1}
    assert _exists(moto_server.endpoint_url, table, "f")


def test_duplicate_receive_repeats_a_message(moto_server, queue):
    sqs = _client(moto_server.endpoint_url, "sqs")
    sqs.send_message(QueueUrl=queue, MessageBody="one")
    with FaultInjector.from_spec("sqs.ReceiveMessage:duplicate=1") as faults:
        got = _client(moto_server.endpoint_url, "sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    assert [m["Body"] for m in got["Messages"]] == ["one", "one"]
    assert got["Messages"][0]["MessageId"] == got["Messages"][1]["MessageId"]
    assert faults.counts == {"sqs.ReceiveMessage:duplicate": 1}


def test_duplicate_send_sends_twice(moto_server, queue):
    with FaultInjector.from_spec("sqs.SendMessage:duplicate=1"):
        _client(moto_server.endpoint_url, "sqs").send_message(QueueUrl=queue, MessageBody="twice")
    sqs = _client(moto_server.endpoint_url, "sqs")
    bodies = []
    for _ in range(3):
        bodies += [m["Body"] for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])]
    assert bodies == ["twice", "twice"]


def test_a_seed_repeats_its_decisions():
    def decisions(seed: int) -> list[str | None]:
        injector = FaultInjector.from_spec("dynamodb.*:throttle=0.5", seed=seed)
        return [injector._pick("dynamodb", "PutItem", ("throttle",)) for _ in range(64)]

    assert decisions(7) == decisions(7)
    assert decisions(7) != decisions(8)
    assert 10 < decisions(7).count("throttle") < 54


def test_uninstalled_clients_are_untouched(moto_server, table):
    with FaultInjector.from_spec("dynamodb.PutItem:throttle=1"):
        pass
    _client(moto_server.endpoint_url, "dynamodb").put_item(TableName=table, Item={"k": {"S": "g"}})
    assert _exists(moto_server.endpoint_url, table, "g")


# --- the bootstrap: faults in a child process, from its environment alone ---------------------------

_CHILD = """
import boto3, sys
from botocore.config import Config
c = boto3.client("dynamodb", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="t",
                 aws_secret_access_key="t", config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
try:
    c.put_item(TableName=sys.argv[2], Item={"k": {"S": sys.argv[3]}})
    print("ok")
except Exception as exc:
    print(type(exc).__name__)
"""


def _child(tmp_path: Path, endpoint: str, table: str, key: str, **env: str) -> str:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "local/jobbridge_faults/boot"), str(ROOT / "local")]),
               "JOBBRIDGE_FAULTS": "dynamodb.PutItem:throttle=1", "JOBBRIDGE_FAULTS_DIR": str(tmp_path), **env}
    out = subprocess.run([sys.executable, "-c", _CHILD, endpoint, table, key], env=environ, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip() + out.stderr.strip()


def test_sitecustomize_installs_faults_in_a_child_and_counts_them(moto_server, table, tmp_path):
    assert _child(tmp_path, moto_server.endpoint_url, table, "h") == "ProvisionedThroughputExceededException"
    assert not _exists(moto_server.endpoint_url, table, "h")
    totals = jobbridge_faults.collect_counts(tmp_path)
    assert totals["processes"] == 1
    assert totals["injected"] == {"dynamodb.PutItem:throttle": 2}
    assert totals["calls"] == {"dynamodb.PutItem": 2}


def test_a_skipped_process_gets_no_faults(moto_server, table, tmp_path):
    assert _child(tmp_path, moto_server.endpoint_url, table, "i", JOBBRIDGE_FAULTS_SKIP=r"-c") == "ok"
    assert _exists(moto_server.endpoint_url, table, "i")
    assert jobbridge_faults.collect_counts(tmp_path)["injected"] == {}


# --- the store under faults ----------------------------------------------------------------------------


@pytest.fixture
def jobs_store(fresh_stack) -> JobStore:
    return JobStore(fresh_stack.table_name, client=_client(fresh_stack.endpoint_url, "dynamodb"))


def _job(tenant: str = "acme") -> Job:
    now = iso(utcnow())
    return Job(job_id=new_job_id(), tenant=tenant, type="echo", route=Route.LAMBDA, state=State.QUEUED, created_at=now,
               history=[HistoryEntry(at=now, state=State.QUEUED, event="submitted")])


def test_create_whose_response_was_lost_makes_one_job(fresh_stack):
    with FaultInjector.from_spec("dynamodb.PutItem:timeout=1/1") as faults:
        store = JobStore(fresh_stack.table_name, client=_client(fresh_stack.endpoint_url, "dynamodb"))
        job = _job()
        stored, created = store.create(job)
    assert faults.counts == {"dynamodb.PutItem:timeout": 1}
    # The retry met the first attempt's item: reported as existing, and it is the same job.
    assert (stored.job_id, created) == (job.job_id, False)
    items = _client(fresh_stack.endpoint_url, "dynamodb").scan(TableName=fresh_stack.table_name)["Items"]
    assert [i["job_id"]["S"] for i in items] == [job.job_id]


def test_create_under_throttling_is_unavailable_not_half_done(fresh_stack):
    with FaultInjector.from_spec("dynamodb.PutItem:throttle=1"):
        store = JobStore(fresh_stack.table_name, client=_client(fresh_stack.endpoint_url, "dynamodb"))
        with pytest.raises(DependencyUnavailable):
            store.create(_job())
    assert _client(fresh_stack.endpoint_url, "dynamodb").scan(TableName=fresh_stack.table_name)["Count"] == 0


def test_a_claim_whose_response_was_lost_is_recognised_by_its_retry_not_doubled(fresh_stack):
    plain = JobStore(fresh_stack.table_name, client=_client(fresh_stack.endpoint_url, "dynamodb"))
    job, _ = plain.create(_job())
    with FaultInjector.from_spec("dynamodb.UpdateItem:timeout=1/1") as faults:
        store = JobStore(fresh_stack.table_name, client=_client(fresh_stack.endpoint_url, "dynamodb"))
        # botocore's retry meets the job its own first try claimed: the claim token recognises it
        claimed = store.claim(job.job_id, "lambda", 60, expected_attempt=0, claim_token="tok-one-run")
    assert faults.counts == {"dynamodb.UpdateItem:timeout": 1}
    after = plain.get(job.job_id)
    assert claimed == after
    # The first try's claim took effect once: one attempt, one "claimed" entry in the history.
    assert (after.state, after.attempt) == (State.RUNNING, 1)
    assert [h.state for h in after.history] == [State.QUEUED, State.RUNNING]


def test_a_claim_whose_response_was_lost_is_refused_to_another_claimant(fresh_stack):
    plain = JobStore(fresh_stack.table_name, client=_client(fresh_stack.endpoint_url, "dynamodb"))
    job, _ = plain.create(_job())
    with FaultInjector.from_spec("dynamodb.UpdateItem:timeout_final=1/1"):
        store = JobStore(fresh_stack.table_name, client=_client(fresh_stack.endpoint_url, "dynamodb"))
        with pytest.raises(DependencyUnavailable):
            store.claim(job.job_id, "lambda", 60, expected_attempt=0, claim_token="tok-lost")
    # a duplicate of the message, on another worker of the same kind (same owner, its own token)
    with pytest.raises(InvalidTransition):
        plain.claim(job.job_id, "lambda", 60, expected_attempt=0, claim_token="tok-other")
    # the claimant itself, trying again, gets the job it claimed
    again = plain.claim(job.job_id, "lambda", 60, expected_attempt=0, claim_token="tok-lost")
    assert (again.state, again.attempt, [h.event for h in again.history]) == (State.RUNNING, 1, ["submitted", "claimed"])


# --- the runner's settle under lost answers: still exactly one final state ------------------------------


class _SplitLifecycle:
    """Claims and heartbeats through one lifecycle, settles through another (the faulted one), so a
    fault rule on UpdateItem hits the settle and not the claim."""

    def __init__(self, plain, faulted) -> None:
        self.plain, self.faulted = plain, faulted

    def claim(self, *a, **kw):
        return self.plain.claim(*a, **kw)

    def heartbeat(self, *a, **kw):
        return self.plain.heartbeat(*a, **kw)

    def complete(self, *a, **kw):
        return self.faulted.complete(*a, **kw)

    def fail(self, *a, **kw):
        return self.faulted.fail(*a, **kw)

    def acknowledge_cancel(self, *a, **kw):
        return self.faulted.acknowledge_cancel(*a, **kw)


def _run_with_faulted_settle(stack, spec: str, job_type: str = "echo", params: dict | None = None):
    from jobbridge.lifecycle import JobLifecycle
    from jobbridge.registry import load_registry
    from jobbridge.runner import Runner, RunnerConfig

    registry = load_registry()
    plain = JobStore(stack.table_name, client=_client(stack.endpoint_url, "dynamodb"))
    job = _job().model_copy(update={"type": job_type, "params": params or {"x": 1}})
    plain.create(job)
    with FaultInjector.from_spec(spec) as faults:
        faulted = JobStore(stack.table_name, client=_client(stack.endpoint_url, "dynamodb"))
        runner = Runner(_SplitLifecycle(JobLifecycle(plain, registry), JobLifecycle(faulted, registry)), registry,
                        RunnerConfig(owner="test", heartbeat_s=30, settle_retries=2), sleep=lambda s: None)
        result = runner.run(job.job_id, expected_attempt=0)
    return result, plain.get(job.job_id), faults


def _finals(job: Job) -> list[State]:
    return [h.state for h in job.history if h.state.is_final]


def test_a_completion_whose_answer_is_lost_settles_once(fresh_stack):
    from jobbridge.runner import Outcome

    result, job, faults = _run_with_faulted_settle(fresh_stack, "dynamodb.UpdateItem:timeout_final=1/1")
    assert faults.counts == {"dynamodb.UpdateItem:timeout_final": 1}
    # The runner retried its settle, met the job already final (its own write) and let it be.
    assert result.outcome is Outcome.ABANDONED
    assert (job.state, job.result, _finals(job)) == (State.SUCCEEDED, {"x": 1}, [State.SUCCEEDED])


def test_a_completion_that_keeps_failing_is_unsettled_and_changes_nothing(fresh_stack):
    from jobbridge.runner import Outcome

    result, job, faults = _run_with_faulted_settle(fresh_stack, "dynamodb.UpdateItem:throttle=1")
    assert result.outcome is Outcome.UNSETTLED  # the message is not acknowledged: it comes back
    assert (job.state, job.attempt, _finals(job)) == (State.RUNNING, 1, [])
    assert faults.counts["dynamodb.UpdateItem:throttle"] >= 3


def test_a_retry_whose_request_went_through_twice_is_scheduled_once(fresh_stack):
    result, job, faults = _run_with_faulted_settle(fresh_stack, "dynamodb.UpdateItem:timeout=1/1", job_type="fail",
                                                   params={"message": "boom", "retryable": True})
    assert faults.counts == {"dynamodb.UpdateItem:timeout": 1}
    assert job.state is State.QUEUED and job.attempt == 1
    assert [h.event for h in job.history].count("retry_scheduled") == 1
