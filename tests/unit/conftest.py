"""Unit-tier fixtures: no network. AWS is moto's in-process ``mock_aws``; the table and queues are
built from template.yaml's own resource properties (jobbridge_local.resources), so the tests
cannot drift from what is deployed.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import boto3
import pytest
from moto import mock_aws

from jobbridge import aws
from jobbridge.config import get_settings
from jobbridge.ids import iso, new_job_id
from jobbridge.models import HistoryEntry, Job, Route, State
from jobbridge.store import JobStore

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def _offline_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dummy credentials, one region, no endpoint override, no cached clients or settings:
    nothing here can reach a real AWS account or a server another test started."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    aws.reset_clients()
    get_settings.cache_clear()
    yield
    aws.reset_clients()
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit tier's one rule: no network. An IP connection attempt fails the test loudly."""
    real_connect = socket.socket.connect

    def refuse(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"unit tests must not use the network (tried to connect to {address!r})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# --- AWS built from template.yaml, in process ---------------------------------------------------


@dataclass(frozen=True)
class Resources:
    table_name: str
    stream_arn: str | None
    queue_urls: dict[Route, str]


_session = boto3.session.Session(region_name=REGION)  # one session: clients share its loaded models


@lru_cache(maxsize=1)
def _template() -> Any:
    from jobbridge_local.template import load_template

    return load_template()  # parsed once per session: creating from it is then ~50 ms a test


def _local_stack() -> tuple[Any, Any] | None:
    try:
        from jobbridge_local import resources
        from jobbridge_local.template import LocalContext
    except ImportError:  # the local stack is optional for the unit tier
        return None
    return resources, LocalContext


def _create_table(stack_name: str) -> str:
    local = _local_stack()
    if local is None:
        return _create_table_from_yaml(stack_name)
    resources, context = local
    resolver = _template().resolver(context(stack_name=stack_name, region=REGION))
    return resources.create_table(_session.client("dynamodb"), resolver, "JobsTable").name


def _create_all(stack_name: str) -> Resources:
    local = _local_stack()
    if local is None:
        return _create_all_by_hand(stack_name)
    resources, context = local
    made = resources.create_resources(
        "http://moto.in-process.invalid",  # only names queue URLs in resolved env; mock_aws intercepts
        template=_template(),
        context=context(stack_name=stack_name, region=REGION),
        client_factory=lambda service: _session.client(service),
    )
    table = made.table("JobsTable")
    return Resources(
        table_name=table.name,
        stream_arn=table.stream_arn,
        queue_urls={
            Route.LAMBDA: made.queue("PublicLambdaQueue").url,
            Route.BATCH: made.queue("PublicBatchQueue").url,
            Route.PRIVATE: made.queue("PrivateQueue").url,
        },
    )


def _create_table_from_yaml(stack_name: str) -> str:
    """Fallback without jobbridge_local: JobsTable's Properties read with a CloudFormation-tag
    aware YAML loader (intrinsics sit only in properties CreateTable does not take)."""
    from pathlib import Path

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: {suffix: None})
    template = yaml.load((Path(__file__).resolve().parents[2] / "template.yaml").read_text(), Loader=Loader)
    props = template["Resources"]["JobsTable"]["Properties"]
    name = f"{stack_name}-JobsTable"
    _session.client("dynamodb").create_table(
        TableName=name,
        BillingMode=props["BillingMode"],
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
        StreamSpecification={"StreamEnabled": True, **props["StreamSpecification"]},
    )
    return name


def _create_all_by_hand(stack_name: str) -> Resources:
    ddb = _session.client("dynamodb")
    name = f"{stack_name}-JobsTable"
    if name not in ddb.list_tables()["TableNames"]:
        _create_table_from_yaml(stack_name)
    sqs = _session.client("sqs")
    urls = {route: sqs.create_queue(QueueName=f"{stack_name}-{suffix}")["QueueUrl"]
            for route, suffix in ((Route.LAMBDA, "public-lambda"), (Route.BATCH, "public-batch"),
                                  (Route.PRIVATE, "private"))}
    return Resources(name, ddb.describe_table(TableName=name)["Table"].get("LatestStreamArn"), urls)


def _strict_dynamodb() -> None:
    """moto's DynamoDB as strict as AWS about item size (jobbridge_local.strict_dynamodb), when
    the local stack is installed."""
    try:
        from jobbridge_local.strict_dynamodb import install
    except ImportError:  # the local stack is optional for the unit tier
        return
    install()


@pytest.fixture
def stack_name() -> Iterator[str]:
    """A fresh in-process AWS (moto's mock_aws) for this test, and a unique stack name in it."""
    _strict_dynamodb()
    with mock_aws():
        yield f"unit-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def jobs_table(stack_name: str) -> str:
    """template.yaml's JobsTable, alone (what the store needs)."""
    return _create_table(stack_name)


@pytest.fixture
def aws_resources(stack_name: str, jobs_table: str) -> Resources:
    """template.yaml's table and queues (what the API and the bridge need)."""
    return _create_all(stack_name)


@pytest.fixture
def ddb(jobs_table: str) -> Any:
    return _session.client("dynamodb")


# --- observing AWS calls -------------------------------------------------------------------------


@dataclass
class CallLog:
    """Every API call a watched client made: (service, operation, params as the caller passed them)."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def operations(self, service: str | None = None) -> list[str]:
        return [op for svc, op, _ in self.calls if service is None or svc == service]

    def params(self, operation: str) -> list[dict[str, Any]]:
        return [p for _, op, p in self.calls if op == operation]

    def watch(self, client: Any) -> Any:
        service = client.meta.service_model.service_name

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.calls.append((service, model.name, dict(params)))

        # before-parameter-build carries the caller's own kwargs, before serialisation.
        client.meta.events.register(f"before-parameter-build.{service}.*", record)
        return client

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def call_log() -> CallLog:
    return CallLog()


@pytest.fixture
def watched_aws_clients(monkeypatch: pytest.MonkeyPatch, call_log: CallLog) -> CallLog:
    """Every client ``jobbridge.aws.client`` builds from now on records its calls in ``call_log``
    (the store and the dispatcher build theirs through it)."""
    original = aws.client
    seen: set[int] = set()

    def watching_client(service: str, profile: str = "default") -> Any:
        built = original(service, profile)
        if id(built) not in seen:
            seen.add(id(built))
            call_log.watch(built)
        return built

    monkeypatch.setattr(aws, "client", watching_client)
    return call_log


# --- the store with a clock the test owns ----------------------------------------------------------


class TickingClock:
    """Starts now and moves 1 ms per reading, so creation order is strict (the tenant index sorts
    on created_at); ``advance`` jumps ahead."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def store(jobs_table: str, ddb: Any, clock: TickingClock) -> JobStore:
    return JobStore(jobs_table, client=ddb, clock=clock)


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_job(clock: TickingClock, tenant: str) -> Callable[..., Job]:
    """A QUEUED job record as JobService would build it (not yet stored)."""

    def make(**overrides: Any) -> Job:
        now = clock()
        values: dict[str, Any] = {
            "job_id": new_job_id(int(now.timestamp() * 1000)),
            "tenant": tenant,
            "type": "echo",
            "params": {"message": "hi"},
            "route": Route.LAMBDA,
            "state": State.QUEUED,
            "max_attempts": 3,
            "timeout_s": 60,
            "created_at": iso(now),
            "updated_at": iso(now),
            "history": [HistoryEntry(at=iso(now), state=State.QUEUED, event="submitted", detail="lambda")],
        }
        values.update(overrides)
        return Job(**values)

    return make


@pytest.fixture
def raw_item(ddb: Any, jobs_table: str) -> Callable[[str], dict[str, Any]]:
    """The item exactly as DynamoDB holds it (to see attributes the Job model hides)."""

    def get(job_id: str) -> dict[str, Any]:
        return ddb.get_item(TableName=jobs_table, Key={"job_id": {"S": job_id}},
                            ConsistentRead=True).get("Item", {})

    return get
