"""The local stack (`make run`) under load: AWS calls per job by route, what they cost, latency
from submit to final, the CPU our processes spend per job, and the agent at rest.

Every process of the stack is counted by bench/aws_counter/sitecustomize.py (AWS calls, Lambda
invocations with their durations, API requests with theirs), and its CPU is read from
/proc/<pid>/stat (utime + stime, and cutime + cstime of children that ended: the local Batch's
containers). moto server, the emulator, is left out of both.

Phases, one route at a time so every call of a phase belongs to that route's jobs:

1. idle: the stack at rest for ``idle_s`` (the agent's long polls, the pollers' and the sweeper's
   background calls, the idle CPU);
2. per route (lambda, batch, private): ``warm`` jobs first, uncounted, so that the functions'
   execution environments are warm as under a steady flow (cold starts are bench.cold_start's);
   then ``n`` no-op ``echo`` jobs submitted at ``rate`` a second through the API; the phase ends
   when every job is final (read from DynamoDB by the bench itself, which is not counted);
3. then each job's timestamps are read through the API (GET /jobs/{id}), and the table's stream is
   read for every write's item size (DynamoDB bills a write by the larger of the item before and
   after, in 1 KB units).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jobbridge_local.stack_process import StackProcess, start_stack_process

from .harness import BENCH, PYTHON, clean_environ, log, pct, rnd

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROUTE_BODIES = {  # the same no-op job to each route
    "lambda": {"type": "echo", "params": {"n": 1}, "target": "public"},
    "batch": {"type": "echo", "params": {"n": 1}, "target": "public", "requirements": {"gpu": True}},
    "private": {"type": "echo", "params": {"n": 1}, "target": "private"},
}
ROUTE_QUEUES = {"lambda": "jobbridge-public-lambda", "batch": "jobbridge-public-batch", "private": "jobbridge-private"}
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def role_of(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if "moto.server" in text or "moto_server" in text or "jobbridge_local.motoserver" in text:
        return "emulator:moto"
    if "jobbridge_local batch" in text:
        return "batch-api"  # the local Batch API; its children are the job containers
    if "uvicorn" in text:
        return "api"
    if "jobbridge_local.instances" in text:
        return "fn:" + cmdline[-1].split("-env-")[0]
    if "jobbridge_local poll" in text:
        return "poller:" + cmdline[cmdline.index("poll") + 1]
    if "batch_entrypoint" in text:
        return "batch-container"
    if " agent " in f" {text} ":
        return "agent"
    if "jobbridge_local run" in text:
        return "stack-cli"
    return "other:" + (cmdline[0].rsplit("/", 1)[-1] if cmdline else "?")


@dataclass
class Proc:
    pid: int
    ppid: int
    role: str
    own: float  # s of CPU, this process
    children: float  # s of CPU of its ended, waited-for children
    rss_kb: int


def process_tree(root: int) -> dict[int, Proc]:
    """Every live descendant of ``root`` (and root), from /proc."""
    procs: dict[int, Proc] = {}
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, ValueError):
            continue
    wanted = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid in wanted:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
            rss = 0
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        procs[pid] = Proc(pid, int(fields[1]), role_of(cmdline), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK, rss)
    for proc in procs.values():
        parent = procs.get(proc.ppid)
        if parent is not None and parent.role == "agent" and proc.role != "agent":
            proc.role = "agent-job"  # the agent runs each job in a child process of its own
        elif parent is not None and parent.role == "batch-api":
            proc.role = "batch-container"  # also an ended, not yet reaped one (no command line left)
    return procs


def cpu_between(before: dict[int, Proc], after: dict[int, Proc]) -> dict[str, float]:
    """CPU seconds per role spent between two snapshots; the emulator is left out, and the local
    Batch API's own CPU too (its ended children, the containers, are ours and counted)."""
    out: dict[str, float] = {}
    for pid, proc in after.items():
        old = before.get(pid)
        own = proc.own - (old.own if old else 0.0)
        kids = proc.children - (old.children if old else 0.0)
        if proc.role.startswith("emulator"):
            continue
        if proc.role == "batch-api":
            out["batch-container"] = out.get("batch-container", 0.0) + kids
            out["batch-api"] = out.get("batch-api", 0.0) + own
            continue
        out[proc.role] = out.get(proc.role, 0.0) + own + kids
    return out


@dataclass
class Counts:
    """The counters of every process, summed by key, with the role of each process kept apart."""

    calls: dict[str, dict[str, float]] = field(default_factory=dict)  # "role|service.Op@queue" -> totals
    invocations: dict[str, dict[str, float]] = field(default_factory=dict)  # function -> totals
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # "METHOD /path status" -> totals

    @classmethod
    def read(cls, directory: Path) -> "Counts":
        out = cls()
        for path in directory.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            role = role_of(data.get("argv", []))
            for table, prefix in (("calls", role + "|"), ("invocations", ""), ("requests", "")):
                target = getattr(out, table)
                for key, row in data.get(table, {}).items():
                    total = target.setdefault(prefix + key, {})
                    for name, value in row.items():
                        total[name] = total.get(name, 0) + value
        return out

    def minus(self, earlier: "Counts") -> "Counts":
        def sub(a: dict, b: dict) -> dict:
            out = {}
            for key, row in a.items():
                base = b.get(key, {})
                diff = {name: value - base.get(name, 0) for name, value in row.items()}
                if diff.get("n", 0) > 0:
                    out[key] = diff
            return out

        return Counts(sub(self.calls, earlier.calls), sub(self.invocations, earlier.invocations),
                      sub(self.requests, earlier.requests))


class Stack:
    """`python -m jobbridge_local run` in a subprocess, on free ports, counted."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.counts_dir = workdir / "counts"
        self.site_dir = workdir / "site"
        self.running: StackProcess | None = None

    def start(self, timeout_s: float = 120) -> "Stack":
        self.counts_dir.mkdir(parents=True, exist_ok=True)
        self.site_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(BENCH / "aws_counter" / "sitecustomize.py", self.site_dir / "sitecustomize.py")
        (self.site_dir / "count_dir").write_text(str(self.counts_dir))
        env = {**clean_environ(), "PYTHONPATH": str(self.site_dir), "JOBBRIDGE_BENCH_COUNT_DIR": str(self.counts_dir)}
        for name in ("JOBBRIDGE_LOCAL_FUNCTIONS", "JOBBRIDGE_LOCAL_AGENTS", "JOBBRIDGE_LOCAL_PARAMS"):
            env.pop(name, None)
        self.running = start_stack_process(self.workdir, env, timeout_s=timeout_s, python=PYTHON)
        return self

    @property
    def process(self) -> subprocess.Popen:
        assert self.running is not None, "the stack is not started"
        return self.running.process

    @property
    def api_url(self) -> str:
        return self.running.api_url if self.running else ""

    @property
    def endpoint_url(self) -> str:
        return self.running.endpoint_url if self.running else ""

    @property
    def info(self) -> dict[str, Any]:
        return self.running.info if self.running else {}

    def token(self, tenant: str = "bench") -> str:
        assert self.running is not None, "the stack is not started"
        return self.running.token(tenant)

    def aws(self, service: str):
        assert self.running is not None, "the stack is not started"
        return self.running.aws(service)

    def wait_for_agents(self, timeout_s: float = 60) -> None:
        """Until the agent has made its start-up checks (a call counts once it returns: its first
        long poll shows only when it ends)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = Counts.read(self.counts_dir)
            if any(key.startswith("agent|") for key in counts.calls):
                return
            time.sleep(0.5)
        log("no agent call seen; the private route may not work")

    def snapshot(self) -> tuple[dict[int, Proc], float]:
        return process_tree(self.process.pid), time.monotonic()

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(timeout_s=40)


def _parse(ts: str | None) -> float | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def submit_jobs(stack: Stack, route: str, n: int, rate: float) -> list[dict[str, Any]]:
    import httpx

    headers = {"Authorization": f"Bearer {stack.token()}"}
    submitted = []
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as client:
        start = time.monotonic()
        for i in range(n):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            response = client.post("/jobs", json=ROUTE_BODIES[route])
            elapsed = time.perf_counter() - t0
            if response.status_code != 202 or response.json()["route"] != route:
                raise RuntimeError(f"submit to {route}: {response.status_code} {response.text[:300]}")
            submitted.append({"job_id": response.json()["job_id"], "submit_s": elapsed})
    return submitted


def wait_final(stack: Stack, job_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Poll the table directly (the bench's own reads are not counted): job id -> final state."""
    ddb = stack.aws("dynamodb")
    table = stack.info["table"]
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    pending = list(job_ids)
    while pending and time.monotonic() < deadline:
        for start in range(0, len(pending), 100):
            keys = [{"job_id": {"S": j}} for j in pending[start:start + 100]]
            out = ddb.batch_get_item(RequestItems={table: {"Keys": keys, "ProjectionExpression": "job_id, #s",
                                                           "ExpressionAttributeNames": {"#s": "state"}}})
            for item in out["Responses"].get(table, []):
                states[item["job_id"]["S"]] = item["state"]["S"]
        pending = [j for j in job_ids if states.get(j) not in FINAL]
        if pending:
            time.sleep(0.25)
    return states


def read_jobs(stack: Stack, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    import httpx

    out = {}
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token()}"}, timeout=30) as client:
        for job_id in job_ids:
            response = client.get(f"/jobs/{job_id}")
            if response.status_code == 200:
                out[job_id] = response.json()
    return out


def latencies(jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds from submit (created_at) to dispatched, running and final, p50 and p99."""
    spans: dict[str, list[float]] = {"dispatched": [], "running": [], "final": []}
    for job in jobs.values():
        created = _parse(job.get("created_at"))
        marks = {"dispatched": job.get("dispatched_at"), "running": job.get("started_at"), "final": job.get("finished_at")}
        if created is None:
            continue
        for name, ts in marks.items():
            at = _parse(ts)
            if at is not None:
                spans[name].append(at - created)
    return {name: {"p50": rnd(pct(values, 50), 3), "p99": rnd(pct(values, 99), 3), "n": len(values)}
            for name, values in spans.items()}


def read_stream(stack: Stack) -> list[dict[str, Any]]:
    streams = stack.aws("dynamodbstreams")
    arn = stack.info["stream_arn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"].get("Shards", []):
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        empty = 0
        while iterator and empty < 2:
            out = streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(out.get("Records", []))
            empty = empty + 1 if not out.get("Records") else 0
            iterator = out.get("NextShardIterator")
    return records


def item_size(item: dict[str, Any] | None) -> int:
    """DynamoDB's item size (the same rules as aws_counter/sitecustomize.py):
    https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html"""

    def value_size(value: dict[str, Any]) -> int:
        (kind, v), = value.items()
        if kind == "S":
            return len(v.encode())
        if kind == "N":
            digits = len(v.lstrip("-").replace(".", "").strip("0")) or 1
            return (digits + 1) // 2 + 1
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "L":
            return 3 + sum(1 + value_size(x) for x in v)
        if kind == "M":
            return 3 + sum(1 + len(k.encode()) + value_size(x) for k, x in v.items())
        if kind == "B":
            return len(v)
        return sum(len(str(x)) for x in v)

    return sum(len(name.encode()) + value_size(value) for name, value in (item or {}).items())


def write_purpose(record: dict[str, Any]) -> str:
    event = record["eventName"]
    if event == "INSERT":
        return "submit"
    if event == "REMOVE":
        return "delete"
    old, new = record["dynamodb"].get("OldImage") or {}, record["dynamodb"].get("NewImage") or {}
    old_history = len((old.get("history") or {}).get("L", []))
    new_history = (new.get("history") or {}).get("L", [])
    if len(new_history) > old_history:
        names = [h["M"]["event"]["S"] for h in new_history[old_history:]]
        return {"claimed": "claim", "succeeded": "complete", "failed": "fail", "retry_scheduled": "retry",
                "cancelled": "cancel"}.get(names[-1], names[-1])
    if "batch_job_id" in new and "batch_job_id" not in old:
        return "batch_record"
    if new.get("batch_token") != old.get("batch_token"):
        return "batch_reserve"
    if "dispatched_at" in new and "dispatched_at" not in old:
        return "dispatch"
    if new.get("heartbeat_at") != old.get("heartbeat_at"):
        return "heartbeat"
    return "other"


def writes_by_job(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        images = record["dynamodb"]
        job_id = images["Keys"]["job_id"]["S"]
        size = max(item_size(images.get("OldImage")), item_size(images.get("NewImage")))
        out.setdefault(job_id, []).append({"purpose": write_purpose(record), "bytes": size,
                                           "wru": max(1, -(-size // 1024))})
    return out


def run_routes(n: dict[str, int], rate: dict[str, float], idle_s: float, routes: list[str], workdir: Path,
               warm: int = 10) -> dict[str, Any]:
    stack = Stack(workdir).start()
    log(f"stack up (api {stack.api_url}); waiting for the agent")
    result: dict[str, Any] = {"routes": {}, "n_per_route": n, "warm_per_route": warm, "rate_per_s": rate}
    try:
        stack.wait_for_agents()
        time.sleep(2)  # start-up calls settle
        # 1. at rest
        c0, (p0, t0) = Counts.read(stack.counts_dir), stack.snapshot()
        time.sleep(idle_s)
        time.sleep(1.0)
        c1, (p1, t1) = Counts.read(stack.counts_dir), stack.snapshot()
        duration = t1 - t0
        idle = c1.minus(c0)
        result["idle"] = {"seconds": round(duration, 1), "calls": idle.calls, "requests": idle.requests,
                          "cpu_s": {k: round(v, 3) for k, v in cpu_between(p0, p1).items()},
                          "agent_rss_kb": [p.rss_kb for p in p1.values() if p.role == "agent"]}
        log(f"idle {duration:.0f}s: " + ", ".join(f"{k} {v['n']:.0f}" for k, v in idle.calls.items()))
        # 2. one route at a time
        all_ids: dict[str, list[str]] = {}
        for route in routes:
            if warm:  # warm execution environments first, as a steady flow of jobs keeps them
                warm_ids = [s["job_id"] for s in submit_jobs(stack, route, warm, rate[route])]
                wait_final(stack, warm_ids, timeout_s=120 + warm / rate[route] * 3)
                time.sleep(1.0)
            c0, (p0, t0) = Counts.read(stack.counts_dir), stack.snapshot()
            submitted = submit_jobs(stack, route, n[route], rate[route])
            ids = [s["job_id"] for s in submitted]
            states = wait_final(stack, ids, timeout_s=120 + n[route] / rate[route] * 3)
            p1, t1 = stack.snapshot()
            time.sleep(1.5)  # the counters flush twice a second
            c1 = Counts.read(stack.counts_dir)
            done = [j for j in ids if states.get(j) in FINAL]
            result["routes"][route] = {
                "jobs": len(ids), "final": len(done),
                "states": {s: list(states.values()).count(s) for s in set(states.values())},
                "seconds": round(t1 - t0, 2),
                "delta": c1.minus(c0).__dict__,
                "cpu_s": {k: round(v, 4) for k, v in cpu_between(p0, p1).items()},
                "submit_http_ms_p50": rnd(pct((s["submit_s"] * 1000 for s in submitted), 50), 2),
            }
            all_ids[route] = ids
            log(f"{route}: {len(done)}/{len(ids)} final in {t1 - t0:.1f}s")
        # 3. what each job went through
        stream = writes_by_job(read_stream(stack))
        for route, ids in all_ids.items():
            jobs = read_jobs(stack, ids)
            entry = result["routes"][route]
            entry["latency_s"] = latencies(jobs)
            entry["writes"] = [stream.get(j, []) for j in ids]
        # the agent once more, at rest after work (its resident memory has grown to its working size)
        result["agent_rss_kb"] = [p.rss_kb for p in stack.snapshot()[0].values() if p.role == "agent"]
    finally:
        stack.stop()
    return result
