"""The soak's accounting (soak.harness.report) on a made-up table: it must see a lost job, a job
final twice, a job nobody submitted, a rejected submit that made a job anyway, a job failed without
having run, an over-limit payload not refused with a 413, a payload changed on its way, a lost Batch
event's job, and resolve an indeterminate submit by listing. Otherwise a green soak would prove
nothing. Also: the payloads are the size they claim, and the API outage stops and resumes a process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from soak import harness
from soak.__main__ import default_faults

from jobbridge.dynamo_codec import json_size
from jobbridge.errors import TooLarge
from jobbridge.limits import PARAMS_MAX_BYTES, check_params
from jobbridge_faults import parse_spec
from jobbridge_local.local_batch import DROPPED_EVENT_MARKER


def _item(plan: harness.Plan, state: str, history: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    return {"job_id": plan.job_id, "tenant": plan.tenant, "route": plan.route, "state": state,
            "created_at": "2030-01-01T00:00:00.000Z", "finished_at": "2030-01-01T00:00:10.000Z",
            "history": [{"state": s, "event": e} for s, e in history], **extra}


class FakeSqs:
    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": {"ApproximateNumberOfMessages": "2" if "dlq" in QueueUrl else "0",
                               "ApproximateNumberOfMessagesNotVisible": "0"}}


class FakeStack:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.info = {"queues": {"PublicLambdaQueue": "http://q/public-lambda", "PublicLambdaDLQ": "http://q/public-lambda-dlq"}}
        (state_dir / "logs").mkdir()
        (state_dir / "faults").mkdir()
        (state_dir / "logs" / "worker.log").write_text(
            '{"message": "fenced out: another attempt owns the job"}\nother\n'
            '{"message": "re-dispatched a job the stream missed"}\n')
        (state_dir / "faults" / "1.json").write_text('{"counts": {"dynamodb.PutItem:throttle": 3}, "calls": {}}')

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def aws(self, service: str) -> Any:
        return FakeSqs()


class FakeSubmitter:
    def __init__(self, outcomes: dict[int, harness.Outcome], listed: set[str],
                 jobs: dict[str, dict[str, Any]] | None = None) -> None:
        self.outcomes = outcomes
        self.listed = listed
        self.jobs = jobs or {}

    def listed_ids(self, tenant: str) -> set[str]:
        return self.listed

    def read_job(self, plan: harness.Plan) -> dict[str, Any] | None:
        return self.jobs.get(plan.job_id)


@pytest.fixture
def plans() -> list[harness.Plan]:
    return harness.make_plans(7, tenants=2, mix={"lambda": 1, "private": 1}, fail_fraction=0, cancel_fraction=0,
                              seed=3, run_id="t")


def test_the_report_sees_every_kind_of_failure(tmp_path, plans):
    ok, lost, twice, found, not_found, rejected, rejected_made = plans
    outcomes = {p.index: harness.Outcome(status=202) for p in plans}
    outcomes[found.index] = harness.Outcome(status=None, attempts=4)
    outcomes[not_found.index] = harness.Outcome(status=503, attempts=4)
    outcomes[rejected.index] = harness.Outcome(status=422)
    outcomes[rejected_made.index] = harness.Outcome(status=409)
    items = [
        _item(ok, "SUCCEEDED", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("SUCCEEDED", "succeeded")]),
        _item(lost, "RUNNING", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("QUEUED", "lease_expired"),
                                ("RUNNING", "claimed")]),
        _item(twice, "FAILED", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("SUCCEEDED", "succeeded"),
                                ("FAILED", "failed")], error={"type": "DeadLettered"}),
        _item(found, "SUCCEEDED", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("SUCCEEDED", "succeeded")]),
        _item(rejected_made, "QUEUED", [("QUEUED", "submitted")]),
        {"job_id": "job_knobodysubmittedthis0000", "tenant": "x", "route": "lambda", "state": "QUEUED", "history": []},
    ]
    result = harness.report(FakeStack(tmp_path), plans, FakeSubmitter(outcomes, {found.job_id}), items,
                            config={}, submit_s=1, drain_s=2, drained=False)

    assert (result["submitted"], result["accepted"], result["rejected"], result["indeterminate"]) == (7, 3, 2, 2)
    assert result["indeterminate_found_by_listing"] == 1
    assert result["lost"] == 1 and result["examples"]["lost"] == [lost.job_id]
    assert result["duplicate_final"] == 1 and result["examples"]["duplicate_final"] == [twice.job_id]
    assert result["unexpected"] == 2  # the stranger, and the job a 409'd submit made
    assert result["final_by_state"] == {"FAILED": 1, "SUCCEEDED": 2}
    assert result["final_not_as_intended"] == {"ok->FAILED": 1}
    assert (result["executions_per_job_mean"], result["executions_per_job_max"]) == (1.25, 2)
    assert result["sweeper_lease_recoveries"] == 1 and result["sweeper_recoveries"] == 2
    assert result["stale_writes_rejected"] == 1
    assert (result["dlq_messages"], result["dead_lettered_jobs"]) == (2, 1)
    assert result["p99_submit_to_final_s"] == 10.0
    assert result["faults"]["injected"] == {"dynamodb.PutItem:throttle": 3}
    assert result["ok"] is False
    assert "FAIL: lost, duplicate_final, unexpected" in harness.table(result)


def test_a_clean_run_passes(tmp_path, plans):
    outcomes = {p.index: harness.Outcome(status=202) for p in plans}
    items = [_item(p, "SUCCEEDED", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("SUCCEEDED", "succeeded")])
             for p in plans]
    result = harness.report(FakeStack(tmp_path), plans, FakeSubmitter(outcomes, set()), items, config={}, submit_s=1,
                            drain_s=2, drained=True)
    assert (result["lost"], result["duplicate_final"], result["unexpected"], result["ok"]) == (0, 0, 0, True)
    assert harness.table(result).endswith("PASS: nothing lost, nothing final twice, nothing unexpected, "
                                          "nothing failed without running, payloads as sent")


def test_plans_are_seeded_and_cover_the_routes_and_kinds():
    a = harness.make_plans(300, 3, {"lambda": 1, "batch": 1, "private": 1}, 0.1, 0.1, seed=5, run_id="r")
    b = harness.make_plans(300, 3, {"lambda": 1, "batch": 1, "private": 1}, 0.1, 0.1, seed=5, run_id="r")
    assert [p.body for p in a] == [p.body for p in b]
    assert {p.route for p in a} == {"lambda", "batch", "private"} and {p.kind for p in a} == {"ok", "fail", "cancel"}
    assert len({p.job_id for p in a}) == 300  # one id per key: a retried key is the same job
    assert all(p.body["requirements"]["gpu"] for p in a if p.route == "batch")


def test_the_default_fault_rules_parse():
    assert default_faults(0) == ""
    rules = parse_spec(default_faults(0.05))
    assert {r.kind for r in rules} == {"throttle", "5xx", "timeout", "timeout_final", "duplicate", "drop"}
    assert "batch.events:drop=0.2" in default_faults(0.05)  # the lost Batch event


PROBLEM = "application/problem+json"


def _payload_plans() -> list[harness.Plan]:
    plans = harness.make_plans(60, tenants=2, mix={"lambda": 1, "private": 1}, fail_fraction=0, cancel_fraction=0,
                               seed=3, run_id="t", payload_fraction=1.0)
    return plans


def test_payloads_are_non_ascii_and_exactly_either_side_of_the_params_share():
    plans = _payload_plans()
    by_kind = {kind: [p for p in plans if p.payload == kind] for kind in harness.PAYLOADS}

    assert all(by_kind.values())  # every kind is in the mix
    for kind, mine in by_kind.items():
        for plan in mine:
            params = plan.body["params"]
            assert json_size(params) == harness.PAYLOAD_BYTES[kind]
            assert {"😀", "日", "Ü"} <= set(params["text"])  # emoji, CJK, accented Latin
    assert harness.PAYLOAD_BYTES["near_limit"] <= PARAMS_MAX_BYTES < harness.PAYLOAD_BYTES["over_limit"]
    check_params(by_kind["near_limit"][0].body["params"])  # the API's own measure: accepted
    with pytest.raises(TooLarge):
        check_params(by_kind["over_limit"][0].body["params"])  # refused
    assert harness.make_plans(60, 2, {"lambda": 1}, 0, 0, seed=3, run_id="t")[0].payload is None  # off by default


def test_the_report_sees_failures_without_running_payloads_refused_wrongly_and_lost_batch_events(tmp_path):
    plans = [p for p in harness.make_plans(40, tenants=2, mix={"lambda": 1, "private": 1, "batch": 1}, fail_fraction=0,
                                           cancel_fraction=0, seed=3, run_id="t")]
    never_claimed, dead_lettered, deadline, ran_and_failed, dropped_done, dropped_stuck = plans[:6]
    over_413, over_500 = plans[6:8]
    over_413.payload = over_500.payload = "over_limit"
    near, changed = plans[8:10]
    near.payload = changed.payload = "near_limit"
    for plan in (near, changed):
        plan.body["params"] = {"text": "日本語"}
    rest = plans[10:]
    outcomes = {p.index: harness.Outcome(status=202) for p in plans}
    outcomes[over_413.index] = harness.Outcome(status=413, content_type=PROBLEM)
    outcomes[over_500.index] = harness.Outcome(status=500, content_type="application/json")
    done = [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("SUCCEEDED", "succeeded")]
    items = [
        _item(never_claimed, "FAILED", [("QUEUED", "submitted"), ("FAILED", "failed")], error={"type": "LeaseExpired"}),
        _item(dead_lettered, "FAILED", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("FAILED", "failed")],
              error={"type": "DeadLettered"}),
        _item(deadline, "FAILED", [("QUEUED", "submitted"), ("FAILED", "failed")], error={"type": "QueueWaitExpired"}),
        _item(ran_and_failed, "FAILED", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("FAILED", "failed")],
              error={"type": "JobFailed"}),
        _item(dropped_done, "SUCCEEDED", [("QUEUED", "submitted"), ("RUNNING", "claimed"), ("QUEUED", "lease_expired"),
                                          ("RUNNING", "claimed"), ("SUCCEEDED", "succeeded")]),
        _item(dropped_stuck, "QUEUED", [("QUEUED", "submitted")]),
        *[_item(p, "SUCCEEDED", done) for p in (near, changed, *rest)],
    ]
    stack = FakeStack(tmp_path)
    (stack.logs / "batch").mkdir()
    (stack.logs / "batch.log").write_text("".join(
        json.dumps({"message": f"{DROPPED_EVENT_MARKER}: dropped the {status} event of Batch job jb-{job}-1"}) + "\n"
        for job, status in ((dropped_done.job_id, "FAILED"), (dropped_stuck.job_id, "FAILED"),
                            (rest[0].job_id, "SUCCEEDED"))))
    sent = {p.job_id: {"state": "SUCCEEDED", "params": p.body["params"], "result": p.body["params"]} for p in plans}
    sent[changed.job_id] = {**sent[changed.job_id], "params": {"text": "???"}}  # mangled on its way
    submitter = FakeSubmitter(outcomes, set(), jobs=sent)

    payload_check = harness.check_payloads(submitter, plans)
    result = harness.report(stack, plans, submitter, items, config={}, submit_s=1, drain_s=2, drained=False,
                            payload_check=payload_check, outage={"count": 1, "seconds": 45.0})

    assert result["failed_without_running"] == 2
    assert set(result["examples"]["failed_without_running"]) == {never_claimed.job_id, dead_lettered.job_id}
    assert result["payloads"]["over_limit"]["answers"] == {"413 problem": 1, "500": 1}
    assert result["over_limit_not_413"] == 1
    assert result["payloads"]["near_limit"] == {"planned": 2, "accepted": 2, "bytes": harness.PAYLOAD_BYTES["near_limit"],
                                                "states": {"SUCCEEDED": 2}}
    assert payload_check == {"read": 2, "changed": 1, "examples": [changed.job_id]}
    assert result["payloads_changed"] == 1
    assert result["batch_events_dropped"] == {"events": 3, "by_status": {"FAILED": 2, "SUCCEEDED": 1},
                                              "jobs": {"SUCCEEDED": 2, "lease recovered": 1, "not final": 1}}
    assert result["lost"] == 1 and result["not_final_at_drain_end"] == {f"{dropped_stuck.route} QUEUED": 1}
    assert result["api_outages"] == {"count": 1, "seconds": 45.0}
    assert result["ok"] is False
    printed = harness.table(result)
    assert "FAIL: lost, failed_without_running, over-limit not 413, payloads changed" in printed
    assert "FAILED WITHOUT RUNNING (never claimed, or dead-lettered)" in printed


def _process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_the_api_outage_stops_the_process_and_always_resumes_it():
    # Given a process standing in for the API, and an outage far longer than the test
    process = subprocess.Popen(["sleep", "120"])
    try:
        outage = harness.ApiOutage(lambda: process.pid, duration_s=600, start_after_s=0).start()
        deadline = time.monotonic() + 30
        while _process_state(process.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = _process_state(process.pid)

        # When the soak ends it
        outage.stop()

        # Then the process was stopped, and runs again
        assert stopped == "T"
        assert _process_state(process.pid) != "T"
        assert outage.summary()["count"] == 1
    finally:
        os.kill(process.pid, 9)
        process.wait()
