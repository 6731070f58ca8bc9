"""The job record's size budget (jobbridge.limits): measured as DynamoDB measures an item, and
enforced before DynamoDB has to refuse anything (docs/RELIABILITY.md, "Limits")."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from jobbridge.dynamo_codec import dump_json, encode_item, item_size, json_size
from jobbridge.limits import (
    DYNAMODB_MAX_ITEM_BYTES,
    ERROR_MESSAGE_MAX_CHARS,
    HISTORY_DETAIL_MAX_CHARS,
    HISTORY_KEEP_NEWEST,
    PARAMS_MAX_BYTES,
    RESULT_MAX_BYTES,
)
from jobbridge.lifecycle import JobLifecycle
from jobbridge.models import HistoryEntry, Job, JobError, Progress, Requirements, Route, State
from jobbridge.registry import Registry, job_type, load_registry
from jobbridge.runner import Outcome, Runner, RunnerConfig
from jobbridge.store import JobStore

WIDE = "\U0001F680"  # 4 bytes in UTF-8, the widest a character gets


# --- measuring as DynamoDB does -----------------------------------------------------------------------


@pytest.mark.parametrize("item, size", [
    ({"a": {"S": "abc"}}, 1 + 3),
    ({"é": {"S": WIDE}}, 2 + 4),                      # names and strings in UTF-8 bytes
    ({"n": {"N": "123"}}, 1 + 3),                     # 1 byte per two significant digits, + 1
    ({"n": {"N": "-1000.00"}}, 1 + 2),                # leading and trailing zeroes trimmed
    ({"b": {"BOOL": True}, "z": {"NULL": True}}, 2 + 2),
    ({"l": {"L": []}}, 1 + 3),                        # a list or map: 3 bytes ...
    ({"l": {"L": [{"S": "ab"}, {"N": "7"}]}}, 1 + 3 + (1 + 2) + (1 + 2)),   # ... + 1 per element
    ({"m": {"M": {"key": {"S": "v"}}}}, 1 + 3 + 1 + 3 + 1),
    ({"bin": {"B": b"\x00\x01\x02"}}, 3 + 3),         # binary: its raw bytes
])
def test_item_size_counts_as_dynamodb_documents(item: dict[str, Any], size: int) -> None:
    assert item_size(item) == size


def test_non_ascii_is_stored_as_utf8_not_as_escapes() -> None:
    text = dump_json({"k": "日本 " + WIDE})
    assert text == '{"k":"日本 ' + WIDE + '"}'
    assert len(text.encode()) == 8 + 6 + 1 + 4


def test_a_lone_surrogate_cannot_be_stored_and_says_so() -> None:
    with pytest.raises(ValueError):
        json_size({"s": "\ud800"})


# --- the shares add up ----------------------------------------------------------------------------------


def _widest(n_bytes: int) -> str:
    return WIDE * (n_bytes // 4)


def test_a_record_with_every_part_at_its_share_fits_dynamodb_item_limit() -> None:
    """The worst case the budget allows: every part at its limit, in 4-byte characters, and one
    history entry more than kept (the append lands before the trim)."""
    stamp = "2026-12-02T17:41:10.123Z"
    entry = HistoryEntry(at=stamp, state=State.CANCELLED, event="cancel_requested", attempt=99_999,
                         detail=WIDE * HISTORY_DETAIL_MAX_CHARS)
    job = Job(
        job_id="job_01JEXAMPLE0000000000000000", tenant="t" * 128, type="t" * 128,
        params={"p": _widest(PARAMS_MAX_BYTES - 16)}, route=Route.BATCH, state=State.SUCCEEDED, priority=-100,
        requirements=Requirements(gpu=True, memory_mb=1_048_576, expected_runtime_s=1_209_600),
        attempt=99_999, max_attempts=99_999, timeout_s=1_209_600, lease_owner="agent:" + "a" * 256,
        lease_expires_at=stamp, cancel_requested=True,
        progress=Progress(fraction=0.123456789, message=WIDE * 1024),
        result={"r": _widest(RESULT_MAX_BYTES - 16)},
        error=JobError(type="E" * 128, message=WIDE * ERROR_MESSAGE_MAX_CHARS, retryable=True, attempt=99_999),
        idempotency_key="k" * 255, request_hash="h" * 64, correlation_id="c" * 128,
        created_at=stamp, dispatched_at=stamp, not_before=stamp, started_at=stamp, heartbeat_at=stamp,
        finished_at=stamp, updated_at=stamp, version=10**9, expires_at=10**10, history_dropped=10**6,
        history=[entry] * (1 + HISTORY_KEEP_NEWEST + 1),
    )
    record = job.model_dump(mode="json", exclude_none=True)
    record.update(active_state="RUNNING", due_at=stamp, batch_attempt=99_999, batch_job_name="jb-" + "x" * 128,
                  batch_token="x" * 64, batch_reserved_at=stamp, batch_job_id="x" * 64, batch_submitted_at=stamp)

    size = item_size(encode_item(record))

    assert size <= DYNAMODB_MAX_ITEM_BYTES, f"{size} bytes: the shares exceed DynamoDB's item limit"


# --- completion: a result over its share is a clear, final failure -------------------------------------------


@pytest.fixture
def lifecycle(store: JobStore) -> JobLifecycle:
    return JobLifecycle(store, load_registry())


def test_a_result_over_its_share_fails_the_job_as_result_too_large_without_retry(store, lifecycle, make_job) -> None:
    job, _ = store.create(make_job(max_attempts=3))
    store.claim(job.job_id, "worker-1", 60)

    # 200,000 bytes of ASCII: within the old 256 KiB check, over the 160 KiB share
    final = lifecycle.complete(job.job_id, 1, {"blob": "x" * 200_000})

    assert final.state is State.FAILED and final.result is None
    assert final.error is not None
    assert (final.error.type, final.error.retryable) == ("ResultTooLarge", False)
    assert str(RESULT_MAX_BYTES) in final.error.message and "200011" in final.error.message


def test_a_result_dynamodb_refuses_on_an_old_large_record_fails_the_job_never_loses_the_write(
        store, lifecycle, make_job) -> None:
    # params stored before the budget (near the whole item): a result within its share cannot fit
    job, _ = store.create(make_job(params={"blob": "x" * 300_000}, max_attempts=3))
    store.claim(job.job_id, "worker-1", 60)

    final = lifecycle.complete(job.job_id, 1, {"blob": "y" * 150_000})

    assert final.state is State.FAILED and final.result is None
    assert final.error is not None
    assert (final.error.type, final.error.retryable) == ("ResultTooLarge", False)
    assert "DynamoDB" in final.error.message


def test_progress_an_old_record_at_the_limit_cannot_hold_is_dropped_and_the_job_still_completes(
        store, make_job, ddb, jobs_table, monkeypatch) -> None:
    crashed: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    registry = Registry()

    @job_type("chatty", params=_Anything, placements={Route.LAMBDA}, timeout_s=60, registry=registry)
    def chatty(params: Any, ctx: Any) -> dict[str, Any]:
        ctx.progress(0.5, WIDE * 1024)  # 4 KiB of progress message: more than the record has room for
        ctx.sleep(0.5)  # the heartbeat thread writes it meanwhile
        return {"ok": 1}

    job, _ = store.create(make_job(type="chatty", params={"blob": ""}))
    item = ddb.get_item(TableName=jobs_table, Key={"job_id": {"S": job.job_id}})["Item"]
    item["params"] = {"S": json.dumps({"blob": "x" * (DYNAMODB_MAX_ITEM_BYTES - item_size(item) - 1200)})}
    ddb.put_item(TableName=jobs_table, Item=item)  # written before the budget: 1,200 bytes to spare
    runner = Runner(JobLifecycle(store, registry), registry,
                    RunnerConfig(owner="lambda", heartbeat_s=0.1, progress_flush_s=0.05))

    result = runner.run(job.job_id, expected_attempt=0)

    assert result.outcome is Outcome.SUCCEEDED and store.get(job.job_id).result == {"ok": 1}
    assert crashed == []  # the heartbeat thread went on


class _Anything(BaseModel):
    pass
