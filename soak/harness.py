"""The soak: submit jobs across the three routes through the API of a local stack whose processes
inject faults into their AWS calls, let it drain, then account for every job from the table itself.

Every submit carries an Idempotency-Key, so a job's id is known before the answer comes
(``idempotent_job_id(tenant, key)``) and a retry after a 5xx or a timeout can never make a second
job. A submit never answered definitively is resolved by listing its tenant's jobs.

What must hold (the exit status): no accepted job without a final state after the drain (lost), no
job with more than one final transition in its history (duplicate final), no job in the table
that no submit accounts for (unexpected), no FAILED job that never ran or was dead-lettered (failed
without running), every over-limit payload refused with a 413 problem, and every accepted payload
read back as it was sent.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from jobbridge.batch import parse_batch_job_name
from jobbridge.dynamo_codec import json_size
from jobbridge.ids import idempotent_job_id
from jobbridge.limits import PARAMS_MAX_BYTES
from jobbridge_local.local_batch import DROPPED_EVENT_MARKER

from .stack import SoakStack

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# Log lines of a write the conditions refused: fenced out by a newer attempt (runner, API agent routes,
# agent), or a settle that found the job already final (its own earlier write, answered too late).
STALE_MARKERS = ("fenced out: another attempt owns the job", "heartbeat refused: lease lost", "heartbeat fenced",
                 "lease lost; abandoning", "the lease belongs to another", "job settled elsewhere")
REDISPATCH_MARKERS = ("re-dispatched a job the stream missed", "sent a waiting job's message again")
# Payloads of ``echo`` jobs (Plan.payload): non-ASCII text well under the params' share, just under
# it (accepted: the record budget is measured in UTF-8, as DynamoDB measures it), just over (a 413).
PAYLOADS = ("non_ascii", "near_limit", "over_limit")
PAYLOAD_TEXT = "😀🚀🧪 日本語の文字と漢字 한국어 Ünïcödé çàéîõ ß Ωμέγα "
PAYLOAD_BYTES = {"non_ascii": 2048, "near_limit": PARAMS_MAX_BYTES - 64, "over_limit": PARAMS_MAX_BYTES + 64}
# A FAILED job that never ran is ours to explain, unless its queue-wait deadline passed.
DEADLINE_ERRORS = ("QueueWaitExpired",)


@dataclass
class Plan:
    """One logical submit: what is sent, and what it should end as."""

    index: int
    tenant: str
    key: str
    route: str  # lambda | batch | private
    kind: str  # ok | fail | cancel
    body: dict[str, Any]
    cancel_after_s: float | None = None
    payload: str | None = None  # one of PAYLOADS (an ``ok`` echo job), or None: small ASCII params

    @property
    def job_id(self) -> str:
        return idempotent_job_id(self.tenant, self.key)


@dataclass
class Outcome:
    status: int | None = None  # the last answer's status; None: no answer (timeout, connection error)
    attempts: int = 0
    route: str | None = None
    cancel_status: int | None = None
    content_type: str | None = None  # the last answer's
    errors: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def rejected(self) -> bool:
        return self.status is not None and 400 <= self.status < 500


def payload_params(i: int, run_id: str, size: int) -> dict[str, Any]:
    """Echo params of exactly ``size`` bytes as the record stores them (UTF-8 JSON text, measured
    as the API measures them): emoji, CJK, Hangul, accented Latin and Greek, padded with ASCII."""
    params = {"i": i, "run": run_id, "text": ""}
    room = size - json_size(params)
    chars, used = [], 0
    while True:
        char = PAYLOAD_TEXT[len(chars) % len(PAYLOAD_TEXT)]
        width = len(char.encode("utf-8"))
        if used + width > room:
            break
        chars.append(char)
        used += width
    params["text"] = "".join(chars) + "." * (room - used)
    return params


def make_plans(jobs: int, tenants: int, mix: dict[str, float], fail_fraction: float, cancel_fraction: float,
               seed: int, run_id: str, payload_fraction: float = 0.0) -> list[Plan]:
    rng = random.Random(seed)
    routes, weights = zip(*mix.items())
    plans = []
    payloads = 0  # the kinds take turns: even a short run has some of each
    for i in range(jobs):
        route = rng.choices(routes, weights)[0]
        draw = rng.random()
        kind = "fail" if draw < fail_fraction else "cancel" if draw < fail_fraction + cancel_fraction else "ok"
        payload = None
        if kind == "ok" and rng.random() < payload_fraction:
            payload, payloads = PAYLOADS[payloads % len(PAYLOADS)], payloads + 1
        body: dict[str, Any]
        if payload:
            body = {"type": "echo", "params": payload_params(i, run_id, PAYLOAD_BYTES[payload])}
        elif kind == "ok":
            body = {"type": "echo", "params": {"i": i, "run": run_id}}
        elif kind == "fail":
            # Half retryable (retried with backoff, then FAILED), half not (FAILED at once).
            body = {"type": "fail", "params": {"message": f"soak {i}", "retryable": rng.random() < 0.5}}
        else:
            body = {"type": "sleep", "params": {"seconds": 4.0, "steps": 8}}
        body["target"] = "private" if route == "private" else "public"
        if route == "batch":
            body["requirements"] = {"gpu": True}  # public work that needs a GPU runs in AWS Batch
        plans.append(Plan(i, f"soak-{i % tenants}", f"{run_id}-{i}", route, kind, body,
                          cancel_after_s=rng.uniform(0.0, 6.0) if kind == "cancel" else None, payload=payload))
    return plans


class Submitter:
    """Submits the plans from ``concurrency`` threads, retrying a 5xx or a timeout with the same key."""

    def __init__(self, stack: SoakStack, plans: list[Plan], concurrency: int, retries: int = 3,
                 timeout_s: float = 15.0) -> None:
        self.stack = stack
        self.plans = plans
        self.concurrency = concurrency
        self.retries = retries
        self.timeout_s = timeout_s
        self.outcomes: dict[int, Outcome] = {}
        self.submitted_at: dict[int, float] = {}
        self._tokens = {t: stack.token(t) for t in {p.tenant for p in plans}}
        self._local = threading.local()
        self._cancels: list[tuple[float, Plan]] = []
        self._lock = threading.Lock()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.stack.api_url, timeout=self.timeout_s)
        return client

    def _headers(self, plan: Plan, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens[plan.tenant]}", **extra}

    def submit(self, plan: Plan) -> None:
        outcome = Outcome()
        self.submitted_at[plan.index] = time.time()
        for attempt in range(1, self.retries + 2):
            outcome.attempts = attempt
            try:
                # UTF-8 on the wire, as the record measures it (\u-escaped, 160 KiB of emoji would
                # be ~480 KiB: over the API's 256 KiB body limit before the params are looked at).
                response = self._client().post(
                    "/jobs", content=json.dumps(plan.body, ensure_ascii=False).encode("utf-8"),
                    headers=self._headers(plan, **{"Idempotency-Key": plan.key, "Content-Type": "application/json"}))
                outcome.status = response.status_code
                outcome.content_type = response.headers.get("content-type")
                if response.status_code < 500:
                    if response.status_code < 300:
                        outcome.route = response.json().get("route")
                    else:
                        outcome.errors.append(response.text[:200])
                    break
                outcome.errors.append(f"{response.status_code}")
            except httpx.HTTPError as exc:
                outcome.status = None
                outcome.errors.append(type(exc).__name__)
            time.sleep(min(2.0, 0.2 * 2 ** attempt))
        self.outcomes[plan.index] = outcome
        if outcome.accepted and plan.cancel_after_s is not None:
            with self._lock:
                self._cancels.append((time.monotonic() + plan.cancel_after_s, plan))

    def cancel_due(self, flush: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = [(t, p) for t, p in self._cancels if flush or t <= now]
            self._cancels = [(t, p) for t, p in self._cancels if not (flush or t <= now)]
        for _, plan in due:
            for _ in range(self.retries + 1):
                try:
                    response = self._client().post(f"/jobs/{plan.job_id}/cancel", headers=self._headers(plan))
                except httpx.HTTPError:
                    continue
                self.outcomes[plan.index].cancel_status = response.status_code
                if response.status_code < 500:
                    break

    def run(self) -> float:
        started = time.monotonic()
        stop = threading.Event()

        def canceller() -> None:
            while not stop.is_set():
                self.cancel_due()
                stop.wait(0.2)

        thread = threading.Thread(target=canceller, daemon=True)
        thread.start()
        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(self.submit, self.plans))
        # Let the remaining cancels come due as planned (they are at most a few seconds out).
        deadline = time.monotonic() + 10
        while self._cancels and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join()
        self.cancel_due(flush=True)
        return time.monotonic() - started

    def read_job(self, plan: Plan) -> dict[str, Any] | None:
        """The job as ``GET /jobs/{id}`` answers it (None when it cannot be read)."""
        for _ in range(5):
            try:
                response = self._client().get(f"/jobs/{plan.job_id}", headers=self._headers(plan))
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            time.sleep(1)
        return None

    def listed_ids(self, tenant: str) -> set[str]:
        """Every job id the API lists for ``tenant`` (how an indeterminate submit is resolved)."""
        ids: set[str] = set()
        cursor = None
        token = {"Authorization": f"Bearer {self._tokens[tenant]}"}
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            for _ in range(5):
                try:
                    response = self._client().get("/jobs", params=params, headers=token)
                    if response.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            else:
                raise RuntimeError(f"could not list the jobs of {tenant}")
            page = response.json()
            ids.update(item["job_id"] for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return ids


class ApiOutage:
    """The API the agents call, stopped (SIGSTOP of its process) for ``duration_s``, first
    ``start_after_s`` into the run, then every ``every_s`` (0: once) until ``stop()``. The agents'
    claims, heartbeats and settles time out meanwhile, as an on-prem agent sees an API outage; the
    soak's own clients meet it too, and retry with their Idempotency-Key."""

    def __init__(self, pid_of: Any, duration_s: float, start_after_s: float, every_s: float = 0.0,
                 progress: Any = None) -> None:
        self.pid_of = pid_of
        self.duration_s = duration_s
        self.start_after_s = start_after_s
        self.every_s = every_s
        self.progress = progress
        self.outages: list[float] = []  # each one's length in seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-outage", daemon=True)

    def start(self) -> "ApiOutage":
        if self.duration_s > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the outage in progress (the API always continues) and schedule no more."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        if self._stop.wait(self.start_after_s):
            return
        while True:
            pid = self.pid_of()
            if self.progress:
                self.progress(f"API outage {len(self.outages) + 1}: stopping the API (pid {pid}) for {self.duration_s:.0f}s")
            os.kill(pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                self._stop.wait(self.duration_s)
            finally:
                os.kill(pid, signal.SIGCONT)
                self.outages.append(round(time.monotonic() - stopped_at, 1))
            if self.every_s <= 0 or self._stop.wait(max(0.0, self.every_s - self.duration_s)):
                return

    def summary(self) -> dict[str, Any]:
        return {"count": len(self.outages), "seconds": round(sum(self.outages), 1), "each_s": self.outages,
                "planned": {"duration_s": self.duration_s, "start_after_s": self.start_after_s, "every_s": self.every_s}}


def check_payloads(submitter: Submitter, plans: list[Plan]) -> dict[str, Any]:
    """Read every accepted payload job back through the API: its params, and once SUCCEEDED its
    result (echo returns its params), must be exactly what was sent."""
    read, changed = 0, []
    for plan in plans:
        if plan.payload in (None, "over_limit") or not submitter.outcomes[plan.index].accepted:
            continue
        job = submitter.read_job(plan)
        read += 1
        sent = plan.body["params"]
        if job is None or job.get("params") != sent or (job.get("state") == "SUCCEEDED" and job.get("result") != sent):
            changed.append(plan.job_id)
    return {"read": read, "changed": len(changed), "examples": changed[:10]}


def scan_table(stack: SoakStack, states_only: bool = False) -> list[dict[str, Any]]:
    """The whole table, read beside the system (no faults in this process); ``states_only``: just
    each job's id and state (the drain's cheap poll: the emulator serves the stack meanwhile)."""
    from boto3.dynamodb.types import TypeDeserializer

    ddb = stack.aws("dynamodb")
    plain = TypeDeserializer()
    items, start = [], None
    projection = ({"ProjectionExpression": "job_id, #s", "ExpressionAttributeNames": {"#s": "state"}}
                  if states_only else {})
    while True:
        page = ddb.scan(TableName=stack.info["table"], ConsistentRead=True, **projection,
                        **({"ExclusiveStartKey": start} if start else {}))
        items += [{k: plain.deserialize(v) for k, v in item.items()} for item in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def drain(stack: SoakStack, expected: set[str], timeout_s: float, progress: Any = None) -> tuple[list[dict[str, Any]], float]:
    """Wait until every expected job is final (or the timeout); returns the table and the time taken."""
    started = time.monotonic()
    while True:
        if stack.process.poll() is not None:
            raise RuntimeError(f"the stack stopped during the soak (exit {stack.process.returncode}); "
                               f"see {stack.state_dir / 'stack.log'} and {stack.logs}")
        states = scan_table(stack, states_only=True)
        final = sum(1 for i in states if i["job_id"] in expected and i.get("state") in FINAL)
        if progress:
            progress(f"drain: {final}/{len(expected)} final after {time.monotonic() - started:.0f}s")
        if final >= len(expected) or time.monotonic() - started > timeout_s:
            return scan_table(stack), time.monotonic() - started
        time.sleep(15)  # every scan is work for the emulator the stack is waiting on


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def _count_log_lines(logs: Path, markers: tuple[str, ...]) -> int:
    total = 0
    for path in logs.rglob("*.log"):  # the Batch containers' logs are in logs/batch/
        with path.open(errors="replace") as fh:
            for line in fh:
                if any(m in line for m in markers):
                    total += 1
    return total


def _dropped_event_jobs(logs: Path) -> list[tuple[str, str]]:
    """(job id, Batch status) of every state change event the local Batch dropped (its log lines)."""
    found = []
    for path in logs.rglob("*.log"):
        with path.open(errors="replace") as fh:
            for line in fh:
                if DROPPED_EVENT_MARKER not in line:
                    continue
                match = re.search(r"dropped the (\w+) event of Batch job (\S+?)[\s\"]", line + " ")
                parsed = parse_batch_job_name(match[2]) if match else None
                if parsed:
                    found.append((parsed[0], match[1]))
    return found


def _failed_without_running(item: dict[str, Any]) -> bool:
    """FAILED, and either never claimed or failed by a dead letter: a failure of ours, not the
    job's (unless its queue-wait deadline passed, a failure the user asked for)."""
    if item.get("state") != "FAILED":
        return False
    error_type = (item.get("error") or {}).get("type")
    if error_type in DEADLINE_ERRORS:
        return False
    never_claimed = not any(h.get("event") == "claimed" for h in item.get("history") or [])
    return never_claimed or error_type == "DeadLettered"


def _payload_outcomes(plans: list[Plan], outcomes: dict[int, Outcome], owed: list[Plan],
                      by_id: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per payload kind: planned, accepted (owed), final states; for the over-limit ones, how each
    submit was answered (a 413 problem is right; anything else, a 5xx above all, is not)."""
    owed_ids = {p.job_id for p in owed}
    out: dict[str, Any] = {}
    for kind in PAYLOADS:
        mine = [p for p in plans if p.payload == kind]
        finals = Counter(by_id.get(p.job_id, {}).get("state") or "absent" for p in mine if p.job_id in owed_ids)
        out[kind] = {"planned": len(mine), "accepted": sum(1 for p in mine if p.job_id in owed_ids),
                     "bytes": PAYLOAD_BYTES[kind], "states": dict(sorted(finals.items()))}
    answers: Counter[str] = Counter()
    for plan in (p for p in plans if p.payload == "over_limit"):
        outcome = outcomes[plan.index]
        problem = (outcome.content_type or "").startswith("application/problem+json")
        answers["413 problem" if outcome.status == 413 and problem else str(outcome.status)] += 1
    out["over_limit"]["answers"] = dict(sorted(answers.items()))
    out["over_limit"]["not_413"] = sum(n for k, n in answers.items() if k != "413 problem")
    return out


def _fault_totals(directory: Path) -> dict[str, Any]:
    injected: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    processes = 0
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        processes += 1
        injected.update(data.get("counts", {}))
        calls.update(data.get("calls", {}))
    return {"processes": processes, "injected": dict(sorted(injected.items())), "calls": dict(sorted(calls.items()))}


def report(stack: SoakStack, plans: list[Plan], submitter: Submitter, items: list[dict[str, Any]],
           config: dict[str, Any], submit_s: float, drain_s: float, drained: bool,
           payload_check: dict[str, Any] | None = None, outage: dict[str, Any] | None = None) -> dict[str, Any]:
    outcomes = submitter.outcomes
    by_id = {i["job_id"]: i for i in items}
    expected_ids = {p.job_id: p for p in plans}
    accepted = [p for p in plans if outcomes[p.index].accepted]
    rejected = [p for p in plans if outcomes[p.index].rejected]
    indeterminate = [p for p in plans if not outcomes[p.index].accepted and not outcomes[p.index].rejected]
    found_by_listing = []
    for tenant in sorted({p.tenant for p in indeterminate}):
        listed = submitter.listed_ids(tenant)
        found_by_listing += [p for p in indeterminate if p.tenant == tenant and p.job_id in listed]
    owed = accepted + found_by_listing  # every job the system owes a final state
    lost = [p.job_id for p in owed if by_id.get(p.job_id, {}).get("state") not in FINAL]
    unexpected = sorted(set(by_id) - set(expected_ids))
    # A rejected submit must have made nothing; a job of one must be reported too.
    made_by_rejected = [p.job_id for p in rejected if p.job_id in by_id]

    final_by_state: Counter[str] = Counter()
    duplicate_final = []
    executions = []
    latencies = []
    wrong_final: Counter[str] = Counter()
    sweeper_lease_recoveries = 0
    dead_lettered = 0
    failed_without_running = []
    for plan in owed:
        item = by_id.get(plan.job_id)
        if not item:
            continue
        history = item.get("history") or []
        finals = [h for h in history if h.get("state") in FINAL]
        if len(finals) > 1:
            duplicate_final.append(plan.job_id)
        executions.append(sum(1 for h in history if h.get("event") == "claimed"))
        sweeper_lease_recoveries += sum(1 for h in history if h.get("event") == "lease_expired")
        state = item.get("state")
        if state in FINAL:
            final_by_state[state] += 1
            latencies.append((_parse(item["finished_at"]) - _parse(item["created_at"])).total_seconds())
            intended = {"ok": {"SUCCEEDED"}, "fail": {"FAILED"}, "cancel": {"CANCELLED", "SUCCEEDED"}}[plan.kind]
            if state not in intended:
                wrong_final[f"{plan.kind}->{state}"] += 1
        if (item.get("error") or {}).get("type") == "DeadLettered":
            dead_lettered += 1
        if _failed_without_running(item):
            failed_without_running.append(plan.job_id)
    routes = Counter(by_id[p.job_id]["route"] for p in owed if p.job_id in by_id)
    route_final: dict[str, dict[str, int]] = {}
    for plan in owed:
        item = by_id.get(plan.job_id)
        if item:
            route_final.setdefault(item["route"], Counter())[item.get("state")] += 1

    # Still not final when the drain ended, by route and state (the lost ones, where they stand).
    not_final = Counter(f"{by_id[j]['route']} {by_id[j].get('state')}" if j in by_id else "absent" for j in lost)
    dropped = _dropped_event_jobs(stack.logs)
    dropped_jobs: Counter[str] = Counter()
    for job_id in {j for j, _ in dropped}:
        item = by_id.get(job_id, {})
        dropped_jobs[item.get("state") if item.get("state") in FINAL else "not final"] += 1
        if any(h.get("event") == "lease_expired" for h in item.get("history") or []):
            dropped_jobs["lease recovered"] += 1
    payload_check = payload_check or {"read": 0, "changed": 0, "examples": []}

    sqs = stack.aws("sqs")
    dlq_messages = 0
    for logical_id, url in stack.info["queues"].items():
        if logical_id.endswith("DLQ"):
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                            "ApproximateNumberOfMessagesNotVisible"])
            dlq_messages += sum(int(v) for v in attrs["Attributes"].values())

    result = {
        "submitted": len(plans),
        "accepted": len(accepted),
        "rejected": len(rejected),
        "indeterminate": len(indeterminate),
        "indeterminate_found_by_listing": len(found_by_listing),
        "submit_retries": sum(outcomes[p.index].attempts - 1 for p in plans),
        "owed_final": len(owed),
        "final_by_state": dict(sorted(final_by_state.items())),
        "final_by_route": {r: dict(sorted(c.items())) for r, c in sorted(route_final.items())},
        "jobs_by_route": dict(sorted(routes.items())),
        "lost": len(lost),
        "duplicate_final": len(duplicate_final),
        "unexpected": len(unexpected) + len(made_by_rejected),
        "final_not_as_intended": dict(sorted(wrong_final.items())),
        "not_final_at_drain_end": dict(sorted(not_final.items())),
        "failed_without_running": len(failed_without_running),
        "payloads": _payload_outcomes(plans, outcomes, owed, by_id),
        "payloads_read_back": payload_check,
        "api_outages": outage or {"count": 0, "seconds": 0.0},
        "batch_events_dropped": {"events": len(dropped), "by_status": dict(sorted(Counter(s for _, s in dropped).items())),
                                 "jobs": dict(sorted(dropped_jobs.items()))},
        "executions_per_job_mean": round(statistics.fmean(executions), 3) if executions else None,
        "executions_per_job_max": max(executions) if executions else None,
        "stale_writes_rejected": _count_log_lines(stack.logs, STALE_MARKERS),
        "sweeper_recoveries": sweeper_lease_recoveries + _count_log_lines(stack.logs, REDISPATCH_MARKERS),
        "sweeper_lease_recoveries": sweeper_lease_recoveries,
        "dlq_messages": dlq_messages,
        "dead_lettered_jobs": dead_lettered,
        "p50_submit_to_final_s": _round(_percentile(latencies, 50)),
        "p95_submit_to_final_s": _round(_percentile(latencies, 95)),
        "p99_submit_to_final_s": _round(_percentile(latencies, 99)),
        "submit_phase_s": round(submit_s, 1),
        "drain_s": round(drain_s, 1),
        "drained": drained,
        "over_limit_not_413": 0,  # set below, from "payloads"
        "payloads_changed": payload_check["changed"],
        "faults": _fault_totals(stack.state_dir / "faults"),
        "config": config,
        "examples": {"lost": lost[:10], "duplicate_final": duplicate_final[:10], "unexpected": unexpected[:10],
                     "made_by_rejected": made_by_rejected[:10], "failed_without_running": failed_without_running[:10],
                     "batch_events_dropped": sorted({j for j, _ in dropped})[:10],
                     "rejected": [outcomes[p.index].errors[-1:] for p in rejected[:5]]},
    }
    result["over_limit_not_413"] = result["payloads"]["over_limit"]["not_413"]
    result["ok"] = not any(result[k] for k in CHECKS)
    return result


# What must all be 0 for the soak to pass (the exit status), with how each is named in the table.
CHECKS = {"lost": "lost", "duplicate_final": "duplicate_final", "unexpected": "unexpected",
          "failed_without_running": "failed_without_running", "over_limit_not_413": "over-limit not 413",
          "payloads_changed": "payloads changed"}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def table(result: dict[str, Any]) -> str:
    faults = result["faults"]["injected"]
    rows = [
        ("submitted", result["submitted"]),
        ("accepted (2xx)", result["accepted"]),
        ("rejected (4xx)", result["rejected"]),
        ("indeterminate (5xx or timeout)", f"{result['indeterminate']} (found by listing: "
                                           f"{result['indeterminate_found_by_listing']})"),
        ("submit retries (same key)", result["submit_retries"]),
        ("final by state", ", ".join(f"{k} {v}" for k, v in result["final_by_state"].items()) or "-"),
        ("final by route", "; ".join(f"{r}: " + ", ".join(f"{k} {v}" for k, v in c.items())
                                     for r, c in result["final_by_route"].items()) or "-"),
        ("final not as intended", ", ".join(f"{k} {v}" for k, v in result["final_not_as_intended"].items()) or "0"),
        ("LOST (accepted, not final)", result["lost"]),
        ("  not final at the drain's end", _counts(result["not_final_at_drain_end"]) or "-"),
        ("DUPLICATE final states", result["duplicate_final"]),
        ("UNEXPECTED jobs", result["unexpected"]),
        ("FAILED WITHOUT RUNNING (never claimed, or dead-lettered)", result["failed_without_running"]),
        *[(f"{name} payloads, {p['bytes']} B (planned / accepted: final)",
           f"{p['planned']} / {p['accepted']}: {_counts(p['states']) or '-'}")
          for name, p in ((n, result["payloads"][n]) for n in ("non_ascii", "near_limit"))],
        ("over_limit payloads, {} B (planned: answers)".format(result["payloads"]["over_limit"]["bytes"]),
         f"{result['payloads']['over_limit']['planned']}: {_counts(result['payloads']['over_limit']['answers']) or '-'}"),
        ("PAYLOADS CHANGED (read back by GET / changed)",
         f"{result['payloads_read_back']['read']} / {result['payloads_read_back']['changed']}"),
        ("API outages for the agents (count / seconds)",
         f"{result['api_outages']['count']} / {result['api_outages']['seconds']}"),
        ("Batch events dropped (by status; their jobs)",
         f"{result['batch_events_dropped']['events']} ({_counts(result['batch_events_dropped']['by_status']) or '-'}; "
         f"{_counts(result['batch_events_dropped']['jobs']) or '-'})"),
        ("executions per job (mean / max)", f"{result['executions_per_job_mean']} / {result['executions_per_job_max']}"),
        ("stale writes rejected", result["stale_writes_rejected"]),
        ("sweeper recoveries (leases / re-dispatches)",
         f"{result['sweeper_recoveries']} ({result['sweeper_lease_recoveries']} / "
         f"{result['sweeper_recoveries'] - result['sweeper_lease_recoveries']})"),
        ("DLQ messages / dead-lettered jobs", f"{result['dlq_messages']} / {result['dead_lettered_jobs']}"),
        ("submit->final p50 / p95 / p99 (s)", f"{result['p50_submit_to_final_s']} / {result['p95_submit_to_final_s']} / "
                                              f"{result['p99_submit_to_final_s']}"),
        ("submit phase / drain (s)", f"{result['submit_phase_s']} / {result['drain_s']}"
                                     + ("" if result["drained"] else " (drain timed out)")),
        ("faults injected", f"{sum(faults.values())} in {result['faults']['processes']} processes"),
    ]
    rows += [(f"  {name}", count) for name, count in faults.items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':-<{width + 30}}", *(f"{name:<{width}}  {value}" for name, value in rows), f"{'':-<{width + 30}}",
             "PASS: nothing lost, nothing final twice, nothing unexpected, nothing failed without running, "
             "payloads as sent" if result["ok"]
             else "FAIL: " + ", ".join(name for key, name in CHECKS.items() if result[key])]
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


__all__ = ["Plan", "Submitter", "make_plans", "drain", "report", "table", "write", "asdict"]
