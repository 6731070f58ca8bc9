"""make bench's accounting on made-up inputs: DynamoDB item sizes and write request units, what each
stream record was for, the cost model against the naive design, the CPU bookkeeping per process
role, the counting hook in a real subprocess, and the table with missing figures. A bench whose
arithmetic is wrong would print confident nonsense."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import costs, pricing
from bench.__main__ import _goals, render
from bench.harness import pct
from bench.stack_run import Proc, cpu_between, item_size, role_of, write_purpose, writes_by_job

ROOT = Path(__file__).resolve().parents[2]


def test_item_size_follows_dynamodb_rules() -> None:
    # name bytes + value bytes; numbers ~1 byte per 2 significant digits + 1; lists and maps 3 + 1 per element
    assert item_size({"job_id": {"S": "abc"}}) == 6 + 3
    assert item_size({"n": {"N": "123"}}) == 1 + 3
    assert item_size({"ok": {"BOOL": True}}) == 2 + 1
    assert item_size({"h": {"L": [{"S": "ab"}]}}) == 1 + 3 + 1 + 2
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 1 + 1 + 1


def _record(event: str, old: dict | None, new: dict | None) -> dict:
    images = {"Keys": {"job_id": {"S": "job_1"}}}
    if old is not None:
        images["OldImage"] = old
    if new is not None:
        images["NewImage"] = new
    return {"eventName": event, "dynamodb": images}


def _history(*events: str) -> dict:
    return {"L": [{"M": {"event": {"S": e}, "state": {"S": "X"}}} for e in events]}


def test_each_stream_record_is_named_by_what_the_write_did() -> None:
    base = {"job_id": {"S": "job_1"}, "state": {"S": "QUEUED"}, "history": _history("submitted")}
    dispatched = {**base, "dispatched_at": {"S": "t"}}
    claimed = {**dispatched, "state": {"S": "RUNNING"}, "history": _history("submitted", "claimed")}
    done = {**claimed, "state": {"S": "SUCCEEDED"}, "history": _history("submitted", "claimed", "succeeded")}
    beat = {**claimed, "heartbeat_at": {"S": "later"}}
    records = [_record("INSERT", None, base), _record("MODIFY", base, dispatched), _record("MODIFY", dispatched, claimed),
               _record("MODIFY", claimed, beat), _record("MODIFY", beat, done), _record("REMOVE", done, None)]
    assert [write_purpose(r) for r in records] == ["submit", "dispatch", "claim", "heartbeat", "complete", "delete"]


def test_a_write_costs_the_larger_image_in_whole_kilobytes() -> None:
    small = {"job_id": {"S": "job_1"}}
    big = {"job_id": {"S": "job_1"}, "params": {"S": "x" * 1100}}
    writes = writes_by_job([_record("MODIFY", big, small), _record("MODIFY", small, small)])
    assert [w["wru"] for w in writes["job_1"]] == [2, 1]


def _entry(n: int = 10) -> dict:
    """A made-up Lambda-route phase of ``n`` jobs."""
    return {
        "jobs": n,
        "delta": {
            "requests": {"POST /jobs 202": {"n": n, "ms": 20.0 * n}},
            "invocations": {"WorkerFunction": {"n": n, "ms": 100.0 * n}, "BridgeFunction": {"n": 2 * n, "ms": 20.0 * 2 * n}},
            "calls": {
                "api|dynamodb.PutItem": {"n": n},
                "poller:BridgeFunction|sqs.SendMessageBatch@q": {"n": n, "payload_bytes": 160 * n},
                "poller:WorkerFunction|sqs.ReceiveMessage@q": {"n": 2 * n, "empty": n, "payload_bytes": 160 * n},
                "poller:WorkerFunction|sqs.DeleteMessageBatch@q": {"n": n},
                "poller:DeadLetterFunction|sqs.ReceiveMessage@q-dlq": {"n": 50, "empty": 50},
                "poller:SweeperFunction|dynamodb.Query@active-index": {"n": 3, "rru": 1.5},
                "poller:BridgeFunction|dynamodb.UpdateItem": {"n": n, "failed": 2, "failed_ConditionalCheckFailedException": 2},
                "poller:BridgeFunction|dynamodbstreams.GetRecords": {"n": 40},
            },
        },
        "writes": [[{"purpose": p, "bytes": 600, "wru": 1} for p in ("submit", "dispatch", "claim", "complete")]
                   for _ in range(n)],
    }


def test_cost_per_job_counts_the_route_and_leaves_out_what_runs_at_rest() -> None:
    memory = {"ApiFunction": 512, "WorkerFunction": 1024, "BridgeFunction": 256}
    out = costs.route_figures("lambda", _entry(), memory, queue="q")
    calls = out["calls_per_job"]
    assert calls["sqs"] == {"send": 1.0, "receive": 2.0, "receive_empty": 1.0, "delete": 1.0, "change_visibility": 0.0}
    assert calls["other_queues_at_rest"] == 5.0  # the DLQ poller: not billed to the jobs
    assert calls["dynamodb_reads"] == {}  # the sweeper's scheduled query: not per job
    assert calls["dynamodb_wru"] == pytest.approx(4.2)  # 4 writes + 2 refused conditional writes over 10 jobs
    assert calls["lambda_invocations"] == {"WorkerFunction": 1.0, "BridgeFunction": 2.0, "ApiFunction": 1.0}

    gb_s = lambda ms, mb: ms / 1000 * mb / 1024  # noqa: E731
    per_job = (pricing.API_GATEWAY_HTTP_PER_REQUEST
               + 4 * pricing.LAMBDA_PER_REQUEST
               + (gb_s(20, 512) + gb_s(100, 1024) + 2 * gb_s(20, 256)) * pricing.LAMBDA_PER_GB_S["arm64"]
               + 4 * pricing.SQS_PER_REQUEST + 4.2 * pricing.DYNAMODB_PER_WRU)
    assert out["cost_per_million_usd"] == pytest.approx(per_job * 1e6, abs=0.01)
    naive = (pricing.API_GATEWAY_HTTP_PER_REQUEST + 2 * pricing.LAMBDA_PER_REQUEST
             + (gb_s(20, 512) + gb_s(100, 1024)) * pricing.LAMBDA_PER_GB_S["arm64"]
             + 3 * pricing.SQS_PER_REQUEST + 4 * pricing.DYNAMODB_PER_WRU)
    assert out["naive_cost_per_million_usd"] == pytest.approx(naive * 1e6, abs=0.01)
    assert out["cost_ratio_vs_naive"] == pytest.approx(per_job / naive, abs=0.001)


def test_cpu_leaves_out_the_emulator_and_counts_the_batch_containers() -> None:
    before = {1: Proc(1, 0, "api", 1.0, 0.0, 0), 2: Proc(2, 1, "emulator:moto", 5.0, 0.0, 0),
              3: Proc(3, 1, "batch-api", 1.0, 0.0, 0)}
    after = {1: Proc(1, 0, "api", 1.5, 0.0, 0), 2: Proc(2, 1, "emulator:moto", 9.0, 0.0, 0),
             3: Proc(3, 1, "batch-api", 1.25, 2.0, 0), 4: Proc(4, 1, "fn:WorkerFunction", 0.5, 0.0, 0)}
    assert cpu_between(before, after) == {"api": 0.5, "batch-api": 0.25, "batch-container": 2.0, "fn:WorkerFunction": 0.5}


def test_roles_come_from_the_command_line() -> None:
    assert role_of(["python", "-m", "moto.server", "-p", "1"]) == "emulator:moto"
    assert role_of(["python", "-m", "uvicorn", "jobbridge_api.main:app"]) == "api"
    assert role_of(["python", "-m", "jobbridge_local", "poll", "BridgeFunction"]) == "poller:BridgeFunction"
    assert role_of(["python", "-m", "jobbridge_local.instances", "8", "WorkerFunction-env-1"]) == "fn:WorkerFunction"
    assert role_of(["/x/bin/jobbridge", "agent", "run", "--config", "a.json"]) == "agent"


def test_the_counting_hook_counts_a_call_in_a_real_process(tmp_path: Path) -> None:
    script = """
import boto3
from botocore.stub import Stubber
c = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
with Stubber(c) as stub:
    stub.add_response("get_item", {"Item": {"job_id": {"S": "job_1"}}})
    c.get_item(TableName="t", Key={"job_id": {"S": "job_1"}}, ConsistentRead=True)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench" / "aws_counter"), "JOBBRIDGE_BENCH_COUNT_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    (counts,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert counts["calls"] == {"dynamodb.GetItem": {"n": 1, "read_bytes": 11, "rru": 1.0}}


def test_the_hook_is_inert_without_its_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOBBRIDGE_BENCH_COUNT_DIR"}
    env["PYTHONPATH"] = str(ROOT / "bench" / "aws_counter")
    out = subprocess.run([sys.executable, "-c", "import sys; print(any(type(f).__name__ == 'Finder' for f in sys.meta_path))"],
                         env=env, check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_the_table_says_missed_and_shows_a_missing_figure_as_such() -> None:
    results = {
        "meta": {"date": "2030-01-01T00:00:00Z", "cpus": 2, "load_average_start": (1.0, 1.0, 1.0), "quick": True, "git": "x"},
        "submit_cpu_us_p50": 300.0, "submit_cpu_floor_us_p50": 100.0, "submit_cpu_ratio": 3.0,
        "submit_cpu_us_p99": 600.0, "submit_cpu_floor_us_p99": 200.0, "submit_cpu_ratio_p99": 3.0,
        "get_cpu_us_p50": 100.0, "get_cpu_floor_us_p50": 100.0, "get_cpu_ratio": 1.0,
        "get_cpu_us_p99": 100.0, "get_cpu_floor_us_p99": 100.0, "get_cpu_ratio_p99": 1.0,
        "agent_idle_requests_per_hour": None, "agent_rss_mb": None,
        "agent_detail": {"reason": "no agent process in the local stack"},
    }
    _goals(results)
    assert results["goals"]["submit_cpu_ratio"]["met"] is False and results["goals"]["get_cpu_ratio"]["met"] is True
    table = render(results)
    assert "<= 1.2 MISSED" in table and "<= 1.2 met" in table
    assert "no agent process in the local stack" in table


def test_percentiles_interpolate_between_ranks() -> None:
    assert pct([1, 2, 3, 4], 50) == 2.5
    assert pct([5], 99) == 5
    assert pct([], 50) is None
