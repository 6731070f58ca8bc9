"""What every part of the bench shares: percentiles, the moto server with template.yaml's
resources, each function's environment as the local stack resolves it, and a stand-in for the
AWS Batch API (SubmitJob answers at once; nothing runs)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
EVENTS = ROOT / "events"
PYTHON = sys.executable

FUNCTIONS = {  # short name -> template logical id
    "api": "ApiFunction",
    "bridge": "BridgeFunction",
    "worker": "WorkerFunction",
    "dead_letter": "DeadLetterFunction",
    "sweeper": "SweeperFunction",
    "batch_submit": "BatchSubmitFunction",
    "batch_events": "BatchEventsFunction",
}


def pct(values: Iterable[float], p: float) -> float | None:
    """The p-th percentile (0-100), linear between the closest ranks; None for no values."""
    data = sorted(values)
    if not data:
        return None
    k = (len(data) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: Iterable[float]) -> float | None:
    return pct(values, 50)


def ratio(ours: float | None, base: float | None) -> float | None:
    if ours is None or not base:
        return None
    return ours / base


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))


def aws_env(endpoint_url: str | None) -> dict[str, str]:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return env


def clean_environ() -> dict[str, str]:
    """This process's environment without what would point boto3 elsewhere."""
    env = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "PYTHONPATH",
                 "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    return env


@dataclass
class FunctionInfo:
    name: str
    logical_id: str
    handler_file: str
    path: list[str]  # code dir, then layer dirs
    memory_mb: int
    timeout_s: float
    environment: dict[str, str]  # the function's, the runtime's and the emulator's


class Emulator:
    """moto server on a free loopback port with template.yaml's tables and queues."""

    def __init__(self) -> None:
        from jobbridge_local.motoserver import MotoServer, free_port

        self.moto = MotoServer(port=free_port(), log_file=None)
        self.batch: FakeBatch | None = None
        self.resources = None
        self.template = None

    def start(self) -> "Emulator":
        from jobbridge_local.resources import create_resources
        from jobbridge_local.template import LocalContext, load_template

        self.moto.start()
        self.template = load_template(ROOT / "template.yaml")
        self.resources = create_resources(self.endpoint_url, self.template, LocalContext(endpoint_url=self.endpoint_url))
        self.batch = FakeBatch().start()
        return self

    def stop(self) -> None:
        if self.batch is not None:
            self.batch.stop()
        self.moto.stop()

    @property
    def endpoint_url(self) -> str:
        return self.moto.endpoint_url

    @property
    def table_name(self) -> str:
        return next(iter(self.resources.tables.values())).name

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def function(self, name: str) -> FunctionInfo:
        from jobbridge_local.invoke import function_environment
        from jobbridge_local.template import LocalContext

        context = LocalContext(endpoint_url=self.endpoint_url, attributes=self.resources.attributes())
        spec = self.template.function_spec(FUNCTIONS[name], context)
        env = function_environment(spec, self.endpoint_url)
        if name == "batch_submit":
            env["AWS_ENDPOINT_URL_BATCH"] = self.batch.endpoint_url
        return FunctionInfo(name, spec.logical_id, str(spec.handler_file),
                            [str(spec.code_dir), *map(str, spec.layer_dirs)], spec.memory_size, spec.timeout, env)

    def floor(self, kind: str) -> FunctionInfo:
        """The floor app of ``kind`` (``api`` or ``queue``), with the same environment as ours."""
        api = self.function("api" if kind == "api" else "worker")
        code = BENCH / "floors" / f"{kind}_floor"
        env = {**api.environment, "AWS_LAMBDA_FUNCTION_NAME": f"floor-{kind}"}
        return FunctionInfo(f"{kind}_floor", f"{kind}_floor", str(code / "app.py"), [str(code)],
                            api.memory_mb, api.timeout_s, env)


class FakeBatch:
    """The AWS Batch API as far as a submitter needs it: SubmitJob returns a job id at once,
    ListJobs and DescribeJobs find nothing. Stands in for Batch's control plane in cold starts so
    that no container runs while a handler is being timed."""

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "FakeBatch":
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.endswith("/submitjob"):
                    job_id = str(uuid.uuid4())
                    out = {"jobArn": f"arn:aws:batch:us-east-1:123456789012:job/{job_id}",
                           "jobName": body.get("jobName", ""), "jobId": job_id}
                elif self.path.endswith("/listjobs"):
                    out = {"jobSummaryList": []}
                else:
                    out = {"jobs": []}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class ReplayProxy:
    """An AWS endpoint on loopback that answers from a recording.

    moto server is a faithful emulator but a slow one: on this machine an UpdateItem with an
    expression takes 20-200 ms, where DynamoDB takes a few. A cold start that makes two calls would
    be charged twice the emulator's slowness. So each target's first event is recorded once
    against moto (``record()``: requests forwarded, answers kept per operation, in order), and the
    timed runs are answered from that recording (``replay()``), over real HTTP, in about a
    millisecond. A request the recording has no answer left for is forwarded to moto (counted in
    ``misses``)."""

    def __init__(self, upstream: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.recording: list[tuple[str, int, list[tuple[str, str]], bytes]] | None = None
        self.script: dict[str, list[tuple[int, list[tuple[str, str]], bytes]]] = {}
        self.misses = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "ReplayProxy":
        import http.client

        proxy = self
        hop = {"connection", "keep-alive", "transfer-encoding", "date", "server", "content-length"}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                key = self.headers.get("x-amz-target") or f"{self.command} {self.path.split('?')[0]}"
                answer = proxy._answer(key)
                if answer is None:
                    conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                    conn.request(self.command, self.path, body=body,
                                 headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                    resp = conn.getresponse()
                    answer = (resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in hop], resp.read())
                    conn.close()
                    proxy._forwarded(key, answer)
                status, headers, data = answer
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self) -> None:
        with self._lock:
            self.recording, self.script = [], {}

    def replay(self, recording: list[tuple[str, int, list[tuple[str, str]], bytes]]) -> None:
        with self._lock:
            self.recording = None
            self.script = {}
            for key, status, headers, data in recording:
                self.script.setdefault(key, []).append((status, headers, data))

    def take_recording(self) -> list[tuple[str, int, list[tuple[str, str]], bytes]]:
        with self._lock:
            out, self.recording = self.recording or [], None
            return out

    def _answer(self, key: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
        with self._lock:
            if self.recording is not None:
                return None
            queue = self.script.get(key)
            if queue:
                return queue.pop(0)
            self.misses += 1
            return None

    def _forwarded(self, key: str, answer: tuple[int, list[tuple[str, str]], bytes]) -> None:
        with self._lock:
            if self.recording is not None:
                self.recording.append((key, *answer))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
