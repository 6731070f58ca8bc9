"""One cold start, in a fresh interpreter: import a handler module, serve its first event.

Run by bench.cold_start as ``python bench/cold_child.py SPEC.json``; nothing but the standard
library is imported before the clock starts, and nothing of the bench is imported at all. The
spec names the handler file, the directories to put first on sys.path (the function's code and
its layers, as Lambda does), the event file, the Lambda context's facts and where to write the
result. The process's environment is the function's (set by the parent).
"""

import time

T0 = time.perf_counter()
C0 = time.process_time()

import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402


class LambdaContext:
    """The attributes handlers read (https://docs.aws.amazon.com/lambda/latest/dg/python-context.html)."""

    def __init__(self, name: str, memory_mb: int, timeout_s: float) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = str(memory_mb)
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = f"2025/11/22/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    for entry in reversed(spec["path"]):  # code first, then layers (/var/task before /opt/python)
        sys.path.insert(0, entry)
    module_spec = importlib.util.spec_from_file_location(spec["module"], spec["file"])
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[spec["module"]] = module
    module_spec.loader.exec_module(module)
    t_import = time.perf_counter()
    handler = getattr(module, spec.get("attr", "handler"))
    with open(spec["event"], encoding="utf-8") as fh:
        event = json.load(fh)
    context = LambdaContext(spec["function_name"], spec["memory_mb"], spec["timeout_s"])
    response = handler(event, context)
    t_end = time.perf_counter()
    c_end = time.process_time()
    with open(spec["result"], "w", encoding="utf-8") as fh:
        json.dump({
            "import_ms": (t_import - T0) * 1000,
            "invoke_ms": (t_end - t_import) * 1000,
            "total_ms": (t_end - T0) * 1000,
            "cpu_ms": (c_end - C0) * 1000,  # CPU of the same span (all threads): steadier than wall time under load
            "process_cpu_ms": c_end * 1000,  # CPU since the process began, interpreter start-up included
            "modules": len(sys.modules),
            "response": response if isinstance(response, (dict, list, str, int, float, type(None))) else repr(response),
        }, fh, default=str)


main()
