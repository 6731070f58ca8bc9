"""From the counts of a stack run to calls per job and cost per million jobs, per route, beside the
naive design (bench.pricing)."""

from __future__ import annotations

from typing import Any

from . import pricing
from .harness import rnd

API_FUNCTION = "ApiFunction"


def _memory(function: str, memory_by_function: dict[str, int]) -> int:
    return memory_by_function.get(function, 128)


def route_figures(route: str, entry: dict[str, Any], memory: dict[str, int], queue: str,
                  architecture: str = "arm64") -> dict[str, Any]:
    """Calls per job and cost per job of one route's phase (``entry`` from bench.stack_run)."""
    n = entry["jobs"]
    delta = entry["delta"]
    calls: dict[str, dict[str, float]] = delta["calls"]
    per = lambda value: value / n  # noqa: E731

    # API Gateway and the API function: every request the API served in the phase (tenants'
    # submits and, on the private route, the agent's /agent/* calls); the bench's own reads come later.
    api_requests = {key: row for key, row in delta["requests"].items()}
    api_n = sum(row["n"] for row in api_requests.values())
    api_ms = sum(row["ms"] for row in api_requests.values())
    invocations = {fn: dict(row) for fn, row in delta["invocations"].items()}
    if api_n:
        invocations[API_FUNCTION] = {"n": api_n, "ms": api_ms}

    # SQS: what concerns this route's queue (sends, receives, deletes, visibility), wherever it was made.
    sqs = {"send": 0.0, "receive": 0.0, "receive_empty": 0.0, "delete": 0.0, "change_visibility": 0.0}
    sqs_chunks = 0.0
    other_sqs = 0.0
    dynamo_reads: dict[str, float] = {}
    rru = 0.0
    failed_writes = 0.0
    failed_wru = 0.0
    batch_api = 0.0
    stream_reads = 0.0
    for key, row in calls.items():
        role, _, call = key.partition("|")
        service_op, _, target = call.partition("@")
        service, _, op = service_op.partition(".")
        if service == "sqs":
            if target != queue:
                other_sqs += row["n"]  # other queues' pollers (DLQs, the other routes): at rest, not per job
                continue
            kind = {"SendMessageBatch": "send", "SendMessage": "send", "ReceiveMessage": "receive",
                    "DeleteMessageBatch": "delete", "DeleteMessage": "delete",
                    "ChangeMessageVisibility": "change_visibility",
                    "ChangeMessageVisibilityBatch": "change_visibility"}.get(op)
            if kind is None:
                continue
            sqs[kind] += row["n"]
            if kind == "receive":
                sqs["receive_empty"] += row.get("empty", 0)
            sqs_chunks += max(row["n"], -(-row.get("payload_bytes", 0) // pricing.SQS_CHUNK_BYTES))
        elif service == "dynamodb":
            if op in ("GetItem", "Query", "Scan", "BatchGetItem"):
                if role.startswith("poller:SweeperFunction"):
                    continue  # the sweeper reads on its schedule, jobs or not
                dynamo_reads[op] = dynamo_reads.get(op, 0) + row["n"]
                rru += row.get("rru", 0)
            elif op in ("PutItem", "UpdateItem", "DeleteItem") and row.get("failed"):
                failed_writes += row.get("failed_ConditionalCheckFailedException", 0)
                failed_wru += max(row.get("failed_ConditionalCheckFailedException", 0),
                                  -(-row.get("failed_item_bytes", 0) // 1024))
        elif service == "batch":
            batch_api += row["n"]
        elif service == "dynamodbstreams":
            stream_reads += row["n"]

    writes = [w for job in entry["writes"] for w in job]
    by_purpose: dict[str, float] = {}
    for w in writes:
        by_purpose[w["purpose"]] = by_purpose.get(w["purpose"], 0) + 1
    wru = sum(w["wru"] for w in writes) + failed_wru
    mean_wru = (sum(w["wru"] for w in writes) / len(writes)) if writes else 1.0

    lambda_gb_s = {fn: pricing.billed_gb_seconds(row["ms"] / row["n"], _memory(fn, memory)) * row["n"]
                   for fn, row in invocations.items()}
    cost = {
        "api_gateway": api_n * pricing.API_GATEWAY_HTTP_PER_REQUEST,
        "lambda": sum(pricing.lambda_cost(row["n"], lambda_gb_s[fn], architecture) for fn, row in invocations.items()),
        "sqs": sqs_chunks * pricing.SQS_PER_REQUEST,
        "dynamodb": wru * pricing.DYNAMODB_PER_WRU + rru * pricing.DYNAMODB_PER_RRU,
    }

    # The naive design on the same route: the API writes the record and sends one message; the
    # consumer receives and deletes one message at a time; four status writes (of our records' mean
    # size); no stream, no bridge. The job's own execution (the worker's or Batch submitter's
    # invocations, the agent's calls to the API) is the same as ours.
    execution = {fn: row for fn, row in invocations.items() if fn not in (API_FUNCTION, "BridgeFunction")}
    submit_ms = api_requests.get("POST /jobs 202", {"ms": 0.0, "n": 1})
    submit_ms = submit_ms["ms"] / max(1, submit_ms["n"])
    agent_requests = api_n - n  # requests other than the n submits: the agent's, on the private route
    agent_ms = (api_ms - submit_ms * n) / agent_requests if agent_requests > 0 else 0.0
    naive_api = {"n": n + max(0, agent_requests), "ms": submit_ms * n + agent_ms * max(0, agent_requests)}
    naive_invocations = {**execution, API_FUNCTION: naive_api}
    naive_cost = {
        "api_gateway": naive_api["n"] * pricing.API_GATEWAY_HTTP_PER_REQUEST,
        "lambda": sum(pricing.lambda_cost(row["n"], pricing.billed_gb_seconds(row["ms"] / row["n"], _memory(fn, memory))
                                          * row["n"], architecture) for fn, row in naive_invocations.items()),
        "sqs": 3 * n * pricing.SQS_PER_REQUEST,
        "dynamodb": pricing.NAIVE_STATUS_WRITES * n * mean_wru * pricing.DYNAMODB_PER_WRU + rru * pricing.DYNAMODB_PER_RRU,
    }
    million = 1e6 / n
    ours_total = sum(cost.values()) * million
    naive_total = sum(naive_cost.values()) * million
    return {
        "calls_per_job": {
            "api_requests": rnd(per(api_n), 3),
            "api_requests_by_route": {k: rnd(per(v["n"]), 3) for k, v in api_requests.items()},
            "lambda_invocations": {fn: rnd(per(row["n"]), 3) for fn, row in invocations.items()},
            "lambda_ms_per_invocation": {fn: rnd(row["ms"] / row["n"], 1) for fn, row in invocations.items()},
            "dynamodb_writes": {k: rnd(per(v), 3) for k, v in sorted(by_purpose.items())},
            "dynamodb_failed_conditional_writes": rnd(per(failed_writes), 3),
            "dynamodb_wru": rnd(per(wru), 3),
            "dynamodb_reads": {k: rnd(per(v), 3) for k, v in dynamo_reads.items()},
            "dynamodb_rru": rnd(per(rru), 3),
            "sqs": {k: rnd(per(v), 3) for k, v in sqs.items()},
            "sqs_billed_requests": rnd(per(sqs_chunks), 3),
            "batch_api": rnd(per(batch_api), 3),
            "stream_reads_free": rnd(per(stream_reads), 3),
            "other_queues_at_rest": rnd(per(other_sqs), 3),
        },
        "cost_per_million_usd": rnd(ours_total, 3),
        "cost_breakdown_per_million_usd": {k: rnd(v * million, 3) for k, v in cost.items()},
        "naive_cost_per_million_usd": rnd(naive_total, 3),
        "naive_breakdown_per_million_usd": {k: rnd(v * million, 3) for k, v in naive_cost.items()},
        "cost_ratio_vs_naive": rnd(ours_total / naive_total, 3) if naive_total else None,
        "mean_wru_per_write": rnd(mean_wru, 3),
    }
