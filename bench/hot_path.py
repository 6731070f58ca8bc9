"""Warm hot path: the CPU one request costs once the function is warm, through the real Lambda
entry point (the Mangum handler) with real-shaped API Gateway events from events/, beside the
floor app (bench/floors/api_floor) doing one PutItem (submit) or one GetItem (read).

Both apps are loaded in one process and their requests alternate (ours, floor, floor, ours, ...),
so the load of a shared machine falls on both alike. AWS is answered in process by botocore's
Stubber (no network): what is measured is the app, FastAPI, pydantic and botocore building and
parsing the request. CPU per request is time.process_time() around each handler call (the whole
process: FastAPI runs a route's blocking work in a thread pool, which thread_time would miss).
Log lines go to /dev/null.

``bulk`` measures ours with events/api_jobs_batch.json (POST /jobs:batch, 25 jobs, 25 PutItems),
the floor app beside it doing its single submit; bench.__main__ sets it against our own POST /jobs.

Run by bench.__main__ in a fresh process per route:
``python -m bench.hot_path --route submit|get|bulk --n 3000 --out FILE``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "job_00000000000000000000000000"  # the id in events/api_get_job.json


def _load(app: str, code_dir: str | None = None):
    if app == "ours":
        code, layers = Path(code_dir) if code_dir else ROOT / "functions" / "api", [ROOT / "layers" / "core"]
    else:
        code, layers = ROOT / "bench" / "floors" / "api_floor", []
    for entry in reversed([code, *layers]):
        if str(entry) not in sys.path:
            sys.path.insert(0, str(entry))
    spec = importlib.util.spec_from_file_location(f"hot_{app}", code / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Context:
    function_name = "ApiFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = "512"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/ApiFunction"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


class App:
    """One app with its stubbed DynamoDB client and the request it is measured with."""

    def __init__(self, name: str, module, client, route: str, stored_item: dict | None) -> None:
        from botocore.stub import Stubber

        self.name, self.module, self.route = name, module, route
        self.stub = Stubber(client)
        self.stub.activate()
        self.samples: list[float] = []
        self.calls_per_request = 1
        submit = json.loads((ROOT / "events" / "api_submit_job.json").read_text())
        if route == "bulk":
            bulk = json.loads((ROOT / "events" / "api_jobs_batch.json").read_text())
            self.event, self.operation, self.answer, self.expected = bulk, "put_item", {}, 200
            self.calls_per_request = len(json.loads(bulk["body"])["jobs"])
        elif route == "submit":
            self.event, self.operation, self.answer, self.expected = submit, "put_item", {}, 202
        else:
            get = (ROOT / "events" / "api_get_job.json").read_text().replace(PLACEHOLDER, stored_item["job_id"]["S"])
            self.event, self.operation, self.answer, self.expected = json.loads(get), "get_item", {"Item": stored_item}, 200

    def queue(self, count: int) -> None:
        for _ in range(count * self.calls_per_request):
            self.stub.add_response(self.operation, self.answer)

    def request(self, keep: bool) -> None:
        context = Context()
        t0 = time.process_time()
        response = self.module.handler(self.event, context)
        t1 = time.process_time()
        if response["statusCode"] != self.expected:
            raise SystemExit(f"{self.name} {self.route}: status {response['statusCode']}: {response.get('body')}")
        if keep:
            self.samples.append((t1 - t0) * 1e6)
        self.response_bytes = len(response.get("body") or "")


def _our_stored_item(module, client) -> dict:
    """The item our submit writes for events/api_submit_job.json: what both apps' GET read back."""
    from botocore.stub import Stubber

    captured: dict = {}

    def capture(params, **_):  # returns None: a value returned here would replace the params
        captured.setdefault("item", params["Item"])

    client.meta.events.register("provide-client-params.dynamodb.PutItem", capture)
    with Stubber(client) as stub:
        stub.add_response("put_item", {})
        response = module.handler(json.loads((ROOT / "events" / "api_submit_job.json").read_text()), Context())
    client.meta.events.unregister("provide-client-params.dynamodb.PutItem", capture)
    assert response["statusCode"] == 202, response
    return captured["item"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--route", choices=["submit", "get", "bulk"], required=True)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--out", required=True)
    parser.add_argument("--code", help="another copy of functions/api (A/B of a change)")
    args = parser.parse_args()

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "JOBBRIDGE_AUTH_MODE": "gateway", "JOBBRIDGE_TABLE_NAME": "jobbridge-JobsTable",
                       "POWERTOOLS_SERVICE_NAME": "jobbridge", "AWS_LAMBDA_FUNCTION_NAME": "ApiFunction"})
    os.environ.pop("AWS_ENDPOINT_URL", None)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # our one JSON log line per accepted job costs what it costs, off the terminal

    ours_module = _load("ours", args.code)
    floor_module = _load("floor")
    from jobbridge import aws

    ours_client = aws.client("dynamodb")  # the one the store uses (built once per process)
    item = _our_stored_item(ours_module, ours_client)
    apps = [App("ours", ours_module, ours_client, args.route, item),
            App("floor", floor_module, floor_module.client(), "submit" if args.route == "bulk" else args.route, item)]
    for app in apps:
        app.queue(args.warmup + args.n)
    gc.collect()
    for i in range(args.warmup + args.n):
        for app in (apps if i % 2 else reversed(apps)):
            app.request(keep=i >= args.warmup)
    Path(args.out).write_text(json.dumps({app.name: {"cpu_us": app.samples, "response_bytes": app.response_bytes}
                                          for app in apps}))


if __name__ == "__main__":
    main()
