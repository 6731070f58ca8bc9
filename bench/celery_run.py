"""The Celery + Redis baseline: the same no-op job, at the same rate, on the same machine.

redis-server (Debian's package; installed with apt-get when missing) on a free loopback port with
persistence off; a Celery worker (prefork pool, one process per core, otherwise Celery's
defaults); the bench itself is the producer. Measured like jobbridge's stack: the CPU of the
worker's processes (utime + stime from /proc, the pool's children included) over the phase, plus
the CPU the producer spends in ``apply_async`` (the equivalent of jobbridge's API handling a
submit). Redis, the broker, is left out as moto is on our side. Latency from submit to started
(the task records it) and to final (the result's ``date_done``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .harness import PYTHON, ROOT, clean_environ, log, pct, rnd
from .stack_run import cpu_between, process_tree


def ensure_redis() -> str:
    """The path of redis-server, installing Debian's package if it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("redis-server is missing and this is not root: apt-get install redis-server")
    log("installing redis-server (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "redis-server"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("apt-get installed redis-server but it is not on PATH")
    return found


def _start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    out = open(log_path, "w")
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(process: subprocess.Popen | None, grace_s: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(n: int, rate: float, workdir: Path, warm: int = 10) -> dict[str, Any]:
    from jobbridge_local.motoserver import free_port

    redis_path = ensure_redis()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    workdir.mkdir(parents=True, exist_ok=True)
    redis = worker = None
    try:
        redis = _start([redis_path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", str(workdir)], clean_environ(), workdir / "redis.log")
        env = {**clean_environ(), "JOBBRIDGE_BENCH_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        cores = os.cpu_count() or 1
        worker = _start([PYTHON, "-m", "celery", "-A", "bench.celery_app", "worker", "--concurrency", str(cores),
                         "--loglevel", "WARNING"], env, workdir / "celery-worker.log")
        os.environ["JOBBRIDGE_BENCH_REDIS_URL"] = url
        from . import celery_app

        celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = url
        _wait_worker(celery_app.app)
        if warm:
            _wait_all(_submit(celery_app.echo, warm, rate)[0], timeout_s=120)
        p0, t0 = process_tree(worker.pid), time.monotonic()
        results, producer_cpu_s, submitted_at = _submit(celery_app.echo, n, rate)
        done = _wait_all(results, timeout_s=120 + n / rate * 3)
        p1, t1 = process_tree(worker.pid), time.monotonic()
        cpu = cpu_between(p0, p1)
        spans: dict[str, list[float]] = {"running": [], "final": []}
        for result, at in zip(results, submitted_at):
            if result.successful():
                spans["running"].append(result.result["started"] - at)
                spans["final"].append(result.date_done.timestamp() - at)
        worker_cpu = sum(cpu.values())
        return {
            "jobs": n, "final": done, "seconds": round(t1 - t0, 2), "rate_per_s": rate, "warm": warm,
            "worker_processes": len(p1), "cpu_s": {k: round(v, 4) for k, v in cpu.items()},
            "producer_cpu_s": round(producer_cpu_s, 4),
            "cpu_ms_per_job": rnd((worker_cpu + producer_cpu_s) * 1000 / n, 3),
            "latency_s": {name: {"p50": rnd(pct(v, 50), 3), "p99": rnd(pct(v, 99), 3), "n": len(v)}
                          for name, v in spans.items()},
            "versions": _versions(),
        }
    finally:
        _stop(worker)
        _stop(redis)


def _wait_worker(app, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if app.control.ping(timeout=1.0):
                return
        except Exception:  # noqa: BLE001 - the broker or the worker is still starting
            time.sleep(0.5)
    raise RuntimeError("the Celery worker did not answer a ping")


def _submit(task, n: int, rate: float):
    results, submitted_at = [], []
    cpu = 0.0
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        submitted_at.append(time.time())
        c0 = time.thread_time()
        results.append(task.apply_async(args=[{"n": 1}]))
        cpu += time.thread_time() - c0
    return results, cpu, submitted_at


def _wait_all(results, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    pending = list(results)
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if not r.ready()]
        if pending:
            time.sleep(0.25)
    return len(results) - len(pending)


def _versions() -> dict[str, str]:
    import celery
    import kombu
    import redis

    out = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"], capture_output=True, text=True)
    return {"celery": celery.__version__, "kombu": kombu.__version__, "redis-py": redis.__version__,
            "redis-server": out.stdout.split()[2].removeprefix("v=") if out.stdout else "?"}
