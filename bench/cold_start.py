"""Cold starts: each function's handler imported and its first event served in a fresh ``python``
process, beside the floors (bench/floors) in the same run, runs interleaved so that drift in the
machine's load falls on every target alike.

Each run is a new process (bench/cold_child.py) with the function's environment from
template.yaml; the time is taken inside the child with time.perf_counter from before its first
import to after the handler returns (``cold_start_ms``), and by the parent around the whole
process (``process_ms``, which adds the interpreter's own start-up). The first event's AWS calls go
to the bench's moto server (and a stand-in Batch API); before each run the items the event refers
to are put back as the event expects them, so every run takes the same path.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .harness import (BENCH, PYTHON, Emulator, FunctionInfo, ReplayProxy, clean_environ, load_event, log, median, pct,
                      ratio, rnd)

LAMBDA_JOB = "job_01kak3r0mvb7x2q9f4c8d6e5ha"  # the job of the worker, bridge and dead-letter events
BATCH_JOB = "job_01kak3r0mvb7x2q9f4c8d6e5hb"  # the job of the Batch events

# Which floor each function is measured against: the API against a bare FastAPI + Mangum app, every
# other function against a bare Powertools SQS batch handler (the bridge, the sweeper and
# batch_events are not SQS-triggered; the same floor is the nearest bare Powertools handler).
FLOOR_OF = {"api": "api_floor", "worker": "queue_floor", "bridge": "queue_floor", "dead_letter": "queue_floor",
            "sweeper": "queue_floor", "batch_submit": "queue_floor", "batch_events": "queue_floor"}
QUEUE_FUNCTIONS = ["worker", "bridge", "dead_letter", "batch_submit", "sweeper", "batch_events"]


def _first_record(event: dict[str, Any]) -> dict[str, Any]:
    # One record: the worker's BatchSize is 1 (template.yaml), so a first invocation gets one job.
    return {**event, "Records": event["Records"][:1]}


class Targets:
    """What each target runs and what its first event needs to find in the table."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.ddb = emulator.client("dynamodb")
        self.table = emulator.table_name
        insert = load_event("bridge_stream_insert")["Records"][0]["dynamodb"]["NewImage"]
        self.lambda_item = copy.deepcopy(insert)
        self.batch_item = {**copy.deepcopy(insert), "job_id": {"S": BATCH_JOB}, "route": {"S": "batch"},
                           "requirements": {"M": {"gpu": {"BOOL": True}}}}

    def events(self) -> dict[str, tuple[dict[str, Any], Callable[[], None]]]:
        from jobbridge.batch import parse_batch_job_name

        failed = load_event("batch_state_change_failed")
        name = failed["detail"]["jobName"]
        _, expected = parse_batch_job_name(name)
        reserved = {**self.batch_item, "attempt": {"N": str(expected)}, "batch_attempt": {"N": str(expected)},
                    "batch_job_name": {"S": name}, "batch_token": {"S": "t"}, "dispatched_at": self.batch_item["created_at"]}
        return {
            "api": (load_event("api_submit_job"), lambda: None),
            "api_floor": (load_event("api_submit_job"), lambda: None),
            "worker": (_first_record(load_event("sqs_worker_batch")), lambda: self._put(self.lambda_item)),
            "queue_floor": (_first_record(load_event("sqs_worker_batch")), lambda: self._put(self.lambda_item)),
            "bridge": (load_event("bridge_stream_insert"), lambda: self._put(self.lambda_item)),
            "dead_letter": (_first_record(load_event("sqs_dead_letter")), lambda: self._put(self.lambda_item)),
            "sweeper": (load_event("schedule_sweeper"), self._empty_table),
            "batch_submit": (_first_record(load_event("sqs_batch_submit")), lambda: self._put(self.batch_item)),
            "batch_events": (failed, lambda: self._put(reserved)),
        }

    def info(self, target: str) -> FunctionInfo:
        if target.endswith("_floor"):
            return self.emu.floor(target.removesuffix("_floor"))
        return self.emu.function(target)

    def _put(self, item: dict[str, Any]) -> None:
        self.ddb.put_item(TableName=self.table, Item=item)

    def _empty_table(self) -> None:
        # The sweeper's first event then finds nothing due: its common case, and the same each run.
        for page in self.ddb.get_paginator("scan").paginate(TableName=self.table, ProjectionExpression="job_id"):
            for item in page.get("Items", []):
                self.ddb.delete_item(TableName=self.table, Key={"job_id": item["job_id"]})


def _ok(target: str, response: Any) -> bool:
    if target.startswith("api"):
        return isinstance(response, dict) and response.get("statusCode") == 202
    if isinstance(response, dict) and "batchItemFailures" in response:
        return response["batchItemFailures"] == []
    return response is not None


def run_once(info: FunctionInfo, event_file: Path, workdir: Path, target: str) -> dict[str, Any]:
    spec = {"path": info.path, "module": f"coldstart_{target}", "file": info.handler_file, "event": str(event_file),
            "function_name": info.logical_id, "memory_mb": info.memory_mb, "timeout_s": info.timeout_s,
            "result": str(workdir / f"{target}.result.json")}
    spec_file = workdir / f"{target}.spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**clean_environ(), **info.environment}
    started = time.perf_counter()
    proc = subprocess.run([PYTHON, str(BENCH / "cold_child.py"), str(spec_file)], env=env, cwd=workdir,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    process_ms = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{target}: cold start exited {proc.returncode}:\n{proc.stderr.decode()[-3000:]}")
    result = json.loads(Path(spec["result"]).read_text())
    result["process_ms"] = process_ms
    result["ok"] = _ok(target, result.get("response"))
    return result


def measure(emulator: Emulator, runs: int = 15, names: list[str] | None = None) -> dict[str, Any]:
    """Median figures per target; ``names`` defaults to the API, every other function and both floors."""
    targets = Targets(emulator)
    events = targets.events()
    names = names or ["api", "api_floor", "queue_floor", *QUEUE_FUNCTIONS]
    proxy = ReplayProxy(emulator.endpoint_url).start()
    infos = {name: targets.info(name) for name in names}
    for info in infos.values():
        info.environment["AWS_ENDPOINT_URL"] = proxy.endpoint_url
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    recordings: dict[str, list] = {}
    try:
        _rounds(names, infos, events, samples, recordings, proxy, runs)
    finally:
        proxy.stop()
    if proxy.misses:
        log(f"cold start: {proxy.misses} AWS calls were not in the recording (answered by moto)")
    return _summary_rows(samples, infos)


def _rounds(names, infos, events, samples, recordings, proxy: ReplayProxy, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="jobbridge-bench-cold-") as tmp:
        workdir = Path(tmp)
        event_files = {}
        for name in names:
            event_files[name] = workdir / f"{name}.event.json"
            event_files[name].write_text(json.dumps(events[name][0]))
        for run in range(runs + 1):  # run 0 records the AWS answers and warms the page cache; not counted
            for name in names:
                events[name][1]()
                if run == 0:
                    proxy.record()
                else:
                    proxy.replay(recordings[name])
                sample = run_once(infos[name], event_files[name], workdir, name)
                if run == 0:
                    recordings[name] = proxy.take_recording()
                else:
                    samples[name].append(sample)
            log(f"cold start round {run}/{runs}: " + ", ".join(f"{n} {samples[n][-1]['total_ms']:.0f}" for n in names if samples[n]))


def _summary_rows(samples, infos) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rows in samples.items():
        out[name] = {
            "cold_start_ms": rnd(median(r["total_ms"] for r in rows), 1),
            "import_ms": rnd(median(r["import_ms"] for r in rows), 1),
            "first_invoke_ms": rnd(median(r["invoke_ms"] for r in rows), 1),
            "process_ms": rnd(median(r["process_ms"] for r in rows), 1),
            "cold_start_p90_ms": rnd(pct((r["total_ms"] for r in rows), 90), 1),
            "cpu_ms": rnd(median(r["cpu_ms"] for r in rows), 1),
            "modules": rows[0]["modules"] if rows else None,
            "runs": len(rows),
            "ok": all(r["ok"] for r in rows),
            "memory_mb": infos[name].memory_mb,
        }
    return out


def summarize(cold: dict[str, Any]) -> dict[str, Any]:
    """The keys of bench/results.json for cold starts."""
    api, api_floor = cold["api"], cold["api_floor"]
    functions = {}
    for name in QUEUE_FUNCTIONS:
        if name not in cold:
            continue
        ours, floor = cold[name], cold[FLOOR_OF[name]]
        functions[name] = {
            "cold_start_ms": ours["cold_start_ms"], "floor_ms": floor["cold_start_ms"],
            "ratio": rnd(ratio(ours["cold_start_ms"], floor["cold_start_ms"]), 3),
            "process_ms": ours["process_ms"], "floor_process_ms": floor["process_ms"],
            "process_ratio": rnd(ratio(ours["process_ms"], floor["process_ms"]), 3),
            "cpu_ms": ours["cpu_ms"], "floor_cpu_ms": floor["cpu_ms"], "cpu_ratio": rnd(ratio(ours["cpu_ms"], floor["cpu_ms"]), 3),
            "import_ms": ours["import_ms"], "first_invoke_ms": ours["first_invoke_ms"],
            "floor": FLOOR_OF[name], "ok": ours["ok"],
        }
    return {
        "api_cold_start_ms": api["cold_start_ms"],
        "api_cold_start_floor_ms": api_floor["cold_start_ms"],
        "api_cold_start_ratio": rnd(ratio(api["cold_start_ms"], api_floor["cold_start_ms"]), 3),
        "api_cold_start_process_ms": api["process_ms"],
        "api_cold_start_floor_process_ms": api_floor["process_ms"],
        "api_cold_start_process_ratio": rnd(ratio(api["process_ms"], api_floor["process_ms"]), 3),
        "api_cold_start_cpu_ms": api["cpu_ms"],
        "api_cold_start_floor_cpu_ms": api_floor["cpu_ms"],
        "api_cold_start_cpu_ratio": rnd(ratio(api["cpu_ms"], api_floor["cpu_ms"]), 3),
        "functions": functions,
        "cold_start_detail": cold,
    }
