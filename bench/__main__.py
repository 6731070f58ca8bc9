"""``make bench`` / ``make bench-quick``: every figure beside its baseline, one table, and
bench/results.json. See docs/PERFORMANCE.md.

    python -m bench [--quick] [--only cold,hot,stack,celery] [--out bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import pricing
from .harness import BENCH, PYTHON, ROOT, log, pct, ratio, rnd

PARTS = ("cold", "hot", "stack", "celery")
GOALS = {"cold": 1.15, "hot": 1.2, "cost": 0.5}
# Rates the local stack sustains on a shared 2-core machine (at 5 jobs/s it fell behind and the
# latencies measured the backlog); Celery gets the lambda route's rate.
FULL = {"cold_runs": 12, "hot_n": 3000, "stack_n": {"lambda": 60, "batch": 20, "private": 60},
        "rate": {"lambda": 2.0, "batch": 1.0, "private": 2.0}, "warm": 6, "idle_s": 60, "celery_n": 60}
QUICK = {"cold_runs": 5, "hot_n": 800, "stack_n": {"lambda": 15, "batch": 6, "private": 15},
         "rate": {"lambda": 2.0, "batch": 1.0, "private": 2.0}, "warm": 4, "idle_s": 25, "celery_n": 15}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and jobs (make bench-quick)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--out", default=str(BENCH / "results.json"))
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(args.quick, plan)}
    raw: dict[str, Any] = {}

    if "cold" in parts:
        from . import cold_start
        from .harness import Emulator

        log(f"cold starts: {plan['cold_runs']} runs of each function and floor")
        emulator = Emulator().start()
        try:
            raw["cold"] = cold_start.measure(emulator, runs=plan["cold_runs"])
        finally:
            emulator.stop()
        results.update(cold_start.summarize(raw["cold"]))
    if "hot" in parts:
        log(f"warm hot path: {plan['hot_n']} requests of each app per route")
        results.update(_hot(plan["hot_n"]))
    if "stack" in parts:
        results.update(_stack(plan))
    if "celery" in parts:
        from . import celery_run

        log(f"Celery + Redis: {plan['celery_n']} no-op tasks at {plan['rate']['lambda']}/s")
        with tempfile.TemporaryDirectory(prefix="jobbridge-bench-celery-") as tmp:
            celery = celery_run.run(plan["celery_n"], plan["rate"]["lambda"], Path(tmp), warm=plan["warm"])
        results["celery_cpu_ms_per_job"] = celery["cpu_ms_per_job"]
        results["celery_latency_s"] = celery["latency_s"]
        results["celery_detail"] = celery
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["meta"]["load_average_end"] = os.getloadavg()
    _goals(results)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(render(results))
    log(f"wrote {args.out} in {results['meta']['seconds']:.0f}s")
    return 0


def _meta(quick: bool, plan: dict[str, Any]) -> dict[str, Any]:
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick, "plan": plan,
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average_start": os.getloadavg(),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                  text=True).stdout.strip()}


def _hot(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    detail = {}
    for route, prefix in (("submit", "submit"), ("get", "get")):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            proc = subprocess.run([PYTHON, "-m", "bench.hot_path", "--route", route, "--n", str(n), "--out", tmp.name],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"hot path {route}: {proc.stderr[-3000:]}")
            data = json.loads(Path(tmp.name).read_text())
        ours, floor = data["ours"]["cpu_us"], data["floor"]["cpu_us"]
        for q in (50, 99):
            out[f"{prefix}_cpu_us_p{q}"] = rnd(pct(ours, q), 1)
            out[f"{prefix}_cpu_floor_us_p{q}"] = rnd(pct(floor, q), 1)
            out[f"{prefix}_cpu_ratio" + ("" if q == 50 else "_p99")] = rnd(ratio(pct(ours, q), pct(floor, q)), 3)
        detail[route] = {"n": len(ours), "response_bytes": {k: v["response_bytes"] for k, v in data.items()}}
    out.update(_bulk(max(50, n // 10), out, detail))
    out["hot_path_detail"] = detail
    return out


BULK_JOBS = 25  # the jobs of events/api_jobs_batch.json


def _bulk(n: int, single: dict[str, Any], detail: dict[str, Any]) -> dict[str, Any]:
    """POST /jobs:batch (25 jobs a request) beside our own POST /jobs, per job: the CPU of the API
    function, and what API Gateway and Lambda bill per request (the jobs' own writes, messages and
    runs are the same either way)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        proc = subprocess.run([PYTHON, "-m", "bench.hot_path", "--route", "bulk", "--n", str(n), "--out", tmp.name],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"hot path bulk: {proc.stderr[-3000:]}")
        ours = json.loads(Path(tmp.name).read_text())["ours"]["cpu_us"]
    detail["bulk"] = {"n": len(ours), "jobs_per_request": BULK_JOBS}
    per_job = pct(ours, 50) / BULK_JOBS
    per_request_usd = (pricing.API_GATEWAY_HTTP_PER_REQUEST + pricing.LAMBDA_PER_REQUEST) * 1e6
    return {"bulk_cpu_us_per_job_p50": rnd(per_job, 1),
            "bulk_cpu_ratio_vs_single": rnd(ratio(per_job, single["submit_cpu_us_p50"]), 3),
            "bulk_requests_usd_per_million_jobs": rnd(per_request_usd / BULK_JOBS, 4),
            "single_requests_usd_per_million_jobs": rnd(per_request_usd, 4)}


def _stack(plan: dict[str, Any]) -> dict[str, Any]:
    from jobbridge_local.template import LocalContext, load_template

    from . import costs, stack_run

    template = load_template(ROOT / "template.yaml")
    context = LocalContext(endpoint_url="http://127.0.0.1:1")
    memory = {}
    for logical_id in ("ApiFunction", "BridgeFunction", "WorkerFunction", "DeadLetterFunction", "SweeperFunction",
                       "BatchSubmitFunction", "BatchEventsFunction"):
        memory[logical_id] = template.function_spec(logical_id, context).memory_size
    architecture = (template.function_properties("ApiFunction").get("Architectures") or ["x86_64"])[0]
    n = plan["stack_n"]
    log(f"local stack: {n} jobs per route (after {plan['warm']} warm-up jobs), {plan['idle_s']}s at rest first")
    with tempfile.TemporaryDirectory(prefix="jobbridge-bench-stack-") as tmp:
        raw = stack_run.run_routes(n, plan["rate"], plan["idle_s"], list(n), Path(tmp), warm=plan["warm"])
    out: dict[str, Any] = {"calls_per_job": {}, "cost_per_million_usd": {}, "naive_cost_per_million_usd": {},
                           "cost_ratio_vs_naive": {}, "latency_s": {}, "cpu_ms_per_job_by_route": {},
                           "lambda_memory_mb": memory, "lambda_architecture": architecture}
    detail: dict[str, Any] = {}
    for route, entry in raw["routes"].items():
        figures = costs.route_figures(route, entry, memory, stack_run.ROUTE_QUEUES[route], architecture)
        out["calls_per_job"][route] = figures["calls_per_job"]
        out["cost_per_million_usd"][route] = figures["cost_per_million_usd"]
        out["naive_cost_per_million_usd"][route] = figures["naive_cost_per_million_usd"]
        out["cost_ratio_vs_naive"][route] = figures["cost_ratio_vs_naive"]
        out["latency_s"][route] = entry["latency_s"]
        cpu = entry["cpu_s"]
        total = sum(cpu.values())
        emulation = sum(v for k, v in cpu.items() if k.startswith("poller:") or k in ("batch-api", "stack-cli"))
        out["cpu_ms_per_job_by_route"][route] = {
            "all_processes": rnd(total * 1000 / entry["jobs"], 2),
            "without_trigger_emulation": rnd((total - emulation) * 1000 / entry["jobs"], 2),
            "by_process": {k: rnd(v * 1000 / entry["jobs"], 2) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v},
        }
        detail[route] = {"jobs": entry["jobs"], "final": entry["final"], "states": entry["states"],
                         "seconds": entry["seconds"], "submit_http_ms_p50": entry["submit_http_ms_p50"],
                         "cost_breakdown_per_million_usd": figures["cost_breakdown_per_million_usd"],
                         "naive_breakdown_per_million_usd": figures["naive_breakdown_per_million_usd"],
                         "mean_wru_per_write": figures["mean_wru_per_write"]}
    out["cpu_ms_per_job"] = out["cpu_ms_per_job_by_route"].get("lambda", {}).get("all_processes")
    out["stack_detail"] = detail
    idle = raw["idle"]
    agent_calls = sum(row["n"] for key, row in idle["calls"].items() if key.startswith("agent|"))
    agent_requests = agent_calls + sum(row["n"] for key, row in idle["requests"].items() if "/agent/" in key)
    if raw.get("agent_rss_kb"):
        out["agent_idle_requests_per_hour"] = rnd(agent_requests / idle["seconds"] * 3600, 0)
        out["agent_rss_mb"] = rnd(max(raw["agent_rss_kb"]) / 1024, 1)
        out["agent_detail"] = {"idle_seconds": idle["seconds"], "idle_calls": {k: v["n"] for k, v in idle["calls"].items()
                                                                             if k.startswith("agent|")},
                               "rss_mb_at_rest_before_jobs": rnd(max(idle["agent_rss_kb"]) / 1024, 1),
                               "rss_mb_at_rest_after_jobs": rnd(max(raw["agent_rss_kb"]) / 1024, 1)}
    else:
        out["agent_idle_requests_per_hour"] = None
        out["agent_rss_mb"] = None
        out["agent_detail"] = {"reason": "no agent process in the local stack"}
    out["stack_idle"] = {"seconds": idle["seconds"], "cpu_ms_per_s": rnd(sum(idle["cpu_s"].values()) * 1000 / idle["seconds"], 2),
                         "calls": {k: v["n"] for k, v in idle["calls"].items()}}
    return out


def _goals(results: dict[str, Any]) -> None:
    goals: dict[str, Any] = {}

    def check(name: str, value: float | None, limit: float) -> None:
        goals[name] = {"value": value, "goal": f"<= {limit}", "met": None if value is None else value <= limit}

    if "api_cold_start_ratio" in results:
        check("api_cold_start_ratio", results["api_cold_start_ratio"], GOALS["cold"])
        for name, row in results.get("functions", {}).items():
            check(f"{name}_cold_start_ratio", row["ratio"], GOALS["cold"])
    for key in ("submit_cpu_ratio", "get_cpu_ratio"):
        if key in results:
            check(key, results[key], GOALS["hot"])
    for route, value in (results.get("cost_ratio_vs_naive") or {}).items():
        check(f"cost_ratio_vs_naive_{route}", value, GOALS["cost"])
    if results.get("cpu_ms_per_job") is not None and results.get("celery_cpu_ms_per_job"):
        goals["cpu_per_job_vs_celery"] = {"value": rnd(results["cpu_ms_per_job"] / results["celery_cpu_ms_per_job"], 2),
                                          "goal": "<= 1 (ours <= Celery's)",
                                          "met": results["cpu_ms_per_job"] <= results["celery_cpu_ms_per_job"]}
    results["goals"] = goals


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _mark(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


def render(r: dict[str, Any]) -> str:
    """The one table: figure | ours | baseline | ratio | goal."""
    rows: list[tuple[str, str, str, str, str]] = []
    goals = r.get("goals", {})

    def row(name, ours, base, rat, goal_key=None, goal_text="", digits=1):
        g = goals.get(goal_key) if goal_key else None
        rows.append((name, _fmt(ours, digits), _fmt(base, digits), _fmt(rat, 2) if rat is not None else "-",
                     (f"{g['goal']} {_mark(g['met'])}" if g else goal_text)))

    if "api_cold_start_ms" in r:
        rows.append(("1. COLD START (ms, median, in-process; floor)", "", "", "", ""))
        row("api (vs FastAPI+Mangum, 1 boto3 call)", r["api_cold_start_ms"], r["api_cold_start_floor_ms"],
            r["api_cold_start_ratio"], "api_cold_start_ratio")
        row("  api, whole process / CPU", f"{_fmt(r['api_cold_start_process_ms'])} / {_fmt(r['api_cold_start_cpu_ms'])}",
            f"{_fmt(r['api_cold_start_floor_process_ms'])} / {_fmt(r['api_cold_start_floor_cpu_ms'])}",
            None, goal_text=f"ratios {_fmt(r['api_cold_start_process_ratio'], 2)} / {_fmt(r['api_cold_start_cpu_ratio'], 2)}")
        for name, f in r.get("functions", {}).items():
            row(f"{name} (vs Powertools SQS batch handler)", f["cold_start_ms"], f["floor_ms"], f["ratio"],
                f"{name}_cold_start_ratio")
    if "submit_cpu_us_p50" in r:
        rows.append(("2. WARM HOT PATH (CPU us/request; floor: 1 boto3 call)", "", "", "", ""))
        for route in ("submit", "get"):
            label = "POST /jobs" if route == "submit" else "GET /jobs/{id}"
            row(f"{label} p50", r[f"{route}_cpu_us_p50"], r[f"{route}_cpu_floor_us_p50"], r[f"{route}_cpu_ratio"],
                f"{route}_cpu_ratio", digits=0)
            row(f"{label} p99", r[f"{route}_cpu_us_p99"], r[f"{route}_cpu_floor_us_p99"], r[f"{route}_cpu_ratio_p99"],
                goal_text="(p99: shown)", digits=0)
    if "bulk_cpu_us_per_job_p50" in r:
        rows.append(("2b. BULK SUBMIT (POST /jobs:batch, 25 jobs a request; baseline: POST /jobs)", "", "", "", ""))
        row("API function CPU us per job, p50", r["bulk_cpu_us_per_job_p50"], r["submit_cpu_us_p50"],
            r["bulk_cpu_ratio_vs_single"], goal_text="(shown)", digits=0)
        row("API Gateway + Lambda requests, USD per 1M jobs", r["bulk_requests_usd_per_million_jobs"],
            r["single_requests_usd_per_million_jobs"], ratio(r["bulk_requests_usd_per_million_jobs"],
                                                             r["single_requests_usd_per_million_jobs"]),
            goal_text="(list prices)", digits=3)
    if r.get("cost_per_million_usd"):
        rows.append(("3. AWS CALLS AND COST PER 1M JOBS (USD; naive design)", "", "", "", ""))
        for route, cost in r["cost_per_million_usd"].items():
            row(f"{route} route", cost, r["naive_cost_per_million_usd"][route], r["cost_ratio_vs_naive"][route],
                f"cost_ratio_vs_naive_{route}", digits=2)
            c = r["calls_per_job"][route]
            writes = sum(c["dynamodb_writes"].values()) + c["dynamodb_failed_conditional_writes"]
            rows.append((f"  calls/job: api {_fmt(c['api_requests'], 2)}, lambda "
                         f"{_fmt(sum(c['lambda_invocations'].values()), 2)}, ddb writes {_fmt(writes, 2)} "
                         f"({_fmt(c['dynamodb_wru'], 2)} WRU), ddb reads {_fmt(sum(c['dynamodb_reads'].values()), 2)}, "
                         f"sqs {_fmt(c['sqs_billed_requests'], 2)}", "", "", "", ""))
            b = r.get("stack_detail", {}).get(route, {})
            ours_b, naive_b = b.get("cost_breakdown_per_million_usd", {}), b.get("naive_breakdown_per_million_usd", {})
            rows.append(("  $/M api gw / lambda / sqs / ddb: " + " / ".join(_fmt(ours_b.get(k), 2) for k in
                         ("api_gateway", "lambda", "sqs", "dynamodb")) + "  (naive " + " / ".join(
                         _fmt(naive_b.get(k), 2) for k in ("api_gateway", "lambda", "sqs", "dynamodb")) + ")",
                         "", "", "", ""))
    if r.get("latency_s"):
        rows.append(("4. LOCAL STACK: LATENCY (s, submit->final) AND CPU (ms/job)", "", "", "", ""))
        celery = r.get("celery_latency_s", {}).get("final", {})
        for route, lat in r["latency_s"].items():
            f = lat["final"]
            row(f"{route}: p50 / p99 (dispatched {_fmt(lat['dispatched']['p50'], 2)}, running {_fmt(lat['running']['p50'], 2)})",
                f"{_fmt(f['p50'], 3)} / {_fmt(f['p99'], 3)}",
                f"{_fmt(celery.get('p50'), 3)} / {_fmt(celery.get('p99'), 3)}" if route == "lambda" else "", None,
                goal_text="(Celery beside lambda)" if route == "lambda" else "")
        row("CPU per job, lambda route, all our processes (Celery+Redis)", r.get("cpu_ms_per_job"),
            r.get("celery_cpu_ms_per_job"), ratio(r.get("cpu_ms_per_job"), r.get("celery_cpu_ms_per_job")),
            "cpu_per_job_vs_celery")
        for route, cpu in r.get("cpu_ms_per_job_by_route", {}).items():
            rows.append((f"  {route}: all {_fmt(cpu['all_processes'])}, without trigger emulation "
                         f"{_fmt(cpu['without_trigger_emulation'])}", "", "", "", ""))
    if "agent_idle_requests_per_hour" in r:
        rows.append(("5. THE AGENT AT REST", "", "", "", ""))
        reason = r.get("agent_detail", {}).get("reason", "")
        row("requests per hour while idle (long polling)", r["agent_idle_requests_per_hour"], None, None,
            goal_text=reason or "(no baseline)", digits=0)
        row("resident memory (MB)", r["agent_rss_mb"], None, None, goal_text=reason)
    full = [x for x in rows if any(x[1:])]  # section titles and detail lines do not set the widths
    widths = [max(len(x[i]) for x in full + [("figure", "ours", "baseline", "ratio", "goal")]) for i in range(5)]
    head = ("figure", "ours", "baseline", "ratio", "goal")
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) if i < 4 else h for i, (h, w) in enumerate(zip(head, widths))),
             "  ".join("-" * w for w in widths)]
    for x in rows:
        if not any(x[1:]):
            lines.append(x[0])
            continue
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) if i < 4 else v
                               for i, (v, w) in enumerate(zip(x, widths))))
    meta = r["meta"]
    lines.append(f"({meta['date']}, {meta['cpus']} CPUs, load {', '.join(f'{x:.1f}' for x in meta['load_average_start'])}"
                 f" at start, {'quick' if meta['quick'] else 'full'} run, git {meta['git']})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
