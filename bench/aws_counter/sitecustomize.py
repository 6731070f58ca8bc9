"""make bench's counters, in every process of a local stack the bench starts (this directory is
put on PYTHONPATH, and Python imports ``sitecustomize`` at start-up). Inert unless
``JOBBRIDGE_BENCH_COUNT_DIR`` (or a ``count_dir`` file beside it) names a directory, and in moto
server (the emulator is not ours).

It counts, per process, without changing what is called or returned:

- every AWS call made through botocore (``BaseClient._make_api_call``): service, operation, the
  queue for SQS calls, the index for queries, conditional-check failures, and the size of the
  items a read returned (for read request units);
- every Lambda invocation the local stack makes (``jobbridge_local.invoke.LocalFunction.invoke``),
  with its duration (for GB-seconds);
- every request the API serves (``jobbridge_api.main.app``), with its duration.

The modules are patched when they are first imported (an import hook), so a process that never
imports them pays nothing. Counts are written to ``$JOBBRIDGE_BENCH_COUNT_DIR/<pid>.json`` twice a
second while they change, and at exit.
"""

import os
import sys


def _count_dir():
    # The variable, or a ``count_dir`` file beside this module: the bench runs a copy of this
    # directory per run, with that file, so that processes started with a scrubbed environment
    # (the local Batch's containers keep PYTHONPATH but not other variables) are counted too.
    found = os.environ.get("JOBBRIDGE_BENCH_COUNT_DIR")
    if found:
        return found
    pointer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "count_dir")
    if os.path.isfile(pointer):
        with open(pointer) as fh:
            return fh.read().strip() or None
    return None


_DIR = _count_dir()


def _install() -> None:
    import atexit
    import importlib.util
    import json
    import threading
    import time

    lock = threading.Lock()
    state = {"pid": os.getpid(), "argv": list(getattr(sys, "orig_argv", sys.argv))[:8], "calls": {}, "invocations": {}, "requests": {}}
    dirty = threading.Event()
    path = os.path.join(_DIR, f"{os.getpid()}.json")

    def flush() -> None:
        with lock:
            data = json.dumps(state)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def flusher() -> None:
        while True:
            dirty.wait()
            time.sleep(0.5)
            dirty.clear()
            try:
                flush()
            except OSError:
                pass

    started = []

    def bump(table: str, key: str, **adds: float) -> None:
        with lock:
            row = state[table].setdefault(key, {})
            row["n"] = row.get("n", 0) + 1
            for name, value in adds.items():
                row[name] = row.get(name, 0) + value
        if not started:
            started.append(True)
            threading.Thread(target=flusher, name="bench-counter", daemon=True).start()
        dirty.set()

    atexit.register(flush)

    def item_size(item) -> int:
        """DynamoDB's item size: names plus values (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)."""
        return sum(len(name.encode()) + value_size(value) for name, value in (item or {}).items())

    def value_size(value) -> int:
        (kind, v), = value.items()
        if kind == "S":
            return len(v.encode())
        if kind == "N":
            digits = len(v.lstrip("-").replace(".", "").strip("0")) or 1
            return (digits + 1) // 2 + 1
        if kind == "B":
            return len(v) if isinstance(v, (bytes, bytearray)) else len(v.encode())
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "L":
            return 3 + sum(1 + value_size(x) for x in v)
        if kind == "M":
            return 3 + sum(1 + len(k.encode()) + value_size(x) for k, x in v.items())
        if kind in ("SS", "NS", "BS"):
            return sum(value_size({kind[0]: x}) for x in v)
        return 0

    def patch_botocore(module) -> None:
        original = module.BaseClient._make_api_call

        def counted(self, operation_name, api_params):
            service = self.meta.service_model.service_name
            key = f"{service}.{operation_name}"
            if service == "sqs" and "QueueUrl" in api_params:
                key += "@" + str(api_params["QueueUrl"]).rsplit("/", 1)[-1]
            if operation_name == "Query" and api_params.get("IndexName"):
                key += "@" + api_params["IndexName"]
            try:
                result = original(self, operation_name, api_params)
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                old = getattr(exc, "response", {}).get("Item")
                bump("calls", key, failed=1, **({f"failed_{code}": 1}),
                     **({"failed_item_bytes": item_size(old)} if old else {}))
                raise
            extra = {}
            if service == "dynamodb":
                if operation_name == "GetItem" and result.get("Item"):
                    extra["read_bytes"] = item_size(result["Item"])
                    extra["rru"] = (-(-extra["read_bytes"] // 4096)) * (1.0 if api_params.get("ConsistentRead") else 0.5)
                elif operation_name in ("Query", "Scan"):
                    size = sum(item_size(i) for i in result.get("Items", []))
                    extra["read_bytes"] = size
                    extra["rru"] = max(1, -(-size // 4096)) * (1.0 if api_params.get("ConsistentRead") else 0.5)
                elif operation_name == "DescribeTable":
                    pass
            elif service == "sqs":
                if operation_name == "ReceiveMessage":
                    messages = result.get("Messages", [])
                    extra["messages"] = len(messages)
                    extra["payload_bytes"] = sum(len(m.get("Body", "").encode()) for m in messages)
                    if not messages:
                        extra["empty"] = 1
                elif operation_name in ("SendMessageBatch", "SendMessage"):
                    entries = api_params.get("Entries") or [api_params]
                    extra["messages"] = len(entries)
                    extra["payload_bytes"] = sum(len(e.get("MessageBody", "").encode()) for e in entries)
                elif operation_name == "DeleteMessageBatch":
                    extra["messages"] = len(api_params.get("Entries", []))
            bump("calls", key, **extra)
            return result

        module.BaseClient._make_api_call = counted

    def patch_invoke(module) -> None:
        original = module.LocalFunction.invoke

        def timed(self, event, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(self, event, *args, **kwargs)
            finally:
                records = len(event.get("Records", [])) if isinstance(event, dict) else 0
                bump("invocations", self.spec.logical_id, ms=(time.perf_counter() - start) * 1000, records=records,
                     memory_mb_x_n=int(self.spec.memory_size))

        module.LocalFunction.invoke = timed

    def patch_api(module) -> None:
        inner = module.app

        async def app(scope, receive, send):
            if scope.get("type") != "http":
                return await inner(scope, receive, send)
            start = time.perf_counter()
            status = {}

            async def send_status(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await inner(scope, receive, send_status)
            finally:
                path = scope.get("path", "")
                parts = path.strip("/").split("/")
                template = "/".join("{id}" if p.startswith("job_") else p for p in parts)
                bump("requests", f"{scope.get('method')} /{template} {status.get('code', 0)}",
                     ms=(time.perf_counter() - start) * 1000)

        module.app = app

    patches = {"botocore.client": patch_botocore, "jobbridge_local.invoke": patch_invoke,
               "jobbridge_api.main": patch_api}

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name not in patches:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return None
            exec_module = spec.loader.exec_module
            patch = patches.pop(name)

            def exec_and_patch(module):
                exec_module(module)
                patch(module)

            spec.loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, Finder())


# sys.argv lacks a -m module's name while site runs; sys.orig_argv has the whole command line.
_COMMAND = " ".join(getattr(sys, "orig_argv", sys.argv))
if _DIR and "moto.server" not in _COMMAND and "moto_server" not in _COMMAND:
    try:
        _install()
    except Exception as exc:  # noqa: BLE001 - never break the process being measured
        print(f"bench counter not installed: {exc}", file=sys.stderr)
