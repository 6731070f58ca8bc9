"""The soak's accounting (soak.harness.report) on a made-up table: it must see a lost job, a job
final twice, a job nobody submitted, a rejected submit that made a job anyway, and resolve an
indeterminate submit by listing. Otherwise a green soak would prove nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from soak import harness
from soak.__main__ import default_faults

from jobbridge_faults import parse_spec


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
    def __init__(self, outcomes: dict[int, harness.Outcome], listed: set[str]) -> None:
        self.outcomes = outcomes
        self.listed = listed

    def listed_ids(self, tenant: str) -> set[str]:
        return self.listed


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
    assert harness.table(result).endswith("PASS: nothing lost, nothing final twice, nothing unexpected")


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
    assert {r.kind for r in rules} == {"throttle", "5xx", "timeout", "timeout_final", "duplicate"}
