"""``make soak`` / ``python -m soak``: the local stack under faults and load, then one table.

    python -m soak                                   # 2000 jobs, fault rate 0.05, every route
    python -m soak --jobs 200 --drain-timeout 1200   # the CI run
    python -m soak --fault-rate 0 --mix lambda=1     # no faults, Lambda only
    python -m soak --faults "dynamodb.UpdateItem:timeout=0.1"   # your own fault rules
    python -m soak --api-outage 0 --payload-fraction 0           # without the API outage and payloads

Exits 0 only when nothing was lost, nothing reached a final state twice, nothing unexpected is in
the table, no job failed without having run, every over-limit payload was a 413 and every payload
read back as sent. Writes soak/last.json.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import harness, stack

ROOT = Path(__file__).resolve().parents[1]
SUBMIT_TIMEOUT_S = 15.0


def default_faults(rate: float) -> str:
    """Faults at ``rate`` per call on the calls that matter, in every process under test."""
    if rate <= 0:
        return ""
    half = rate / 2
    rules = [
        # The hot path's one write: throttled (retried by botocore, else a 503 the client retries with
        # its key), or taking effect while its answer is lost (the key makes the retry a replay).
        f"dynamodb.PutItem:throttle={rate}", f"dynamodb.PutItem:timeout={half}", f"dynamodb.PutItem:timeout_final={half}",
        # Every transition: claims, heartbeats, settles, dispatch marks, cancels, sweeps.
        f"dynamodb.UpdateItem:throttle={rate}", f"dynamodb.UpdateItem:5xx={half}",
        f"dynamodb.UpdateItem:timeout={half}", f"dynamodb.UpdateItem:timeout_final={half / 2}",
        f"dynamodb.GetItem:5xx={half}", f"dynamodb.Query:throttle={half}",
        # The outbox's sends: failed (the stream retries) or sent twice (a duplicate message).
        f"sqs.SendMessageBatch:5xx={rate}", f"sqs.SendMessageBatch:duplicate={rate}",
        f"sqs.SendMessage:duplicate={rate}",
        # At-least-once delivery, and acknowledgements that fail (the message comes back).
        f"sqs.ReceiveMessage:duplicate={2 * rate}", f"sqs.ReceiveMessage:throttle={half}",
        f"sqs.DeleteMessage:5xx={half}", f"sqs.DeleteMessageBatch:5xx={half}",
        f"sqs.ChangeMessageVisibility:throttle={half}",
        # Batch: a submit whose answer is lost (botocore retries it: a second Batch job for one attempt).
        f"batch.SubmitJob:timeout={half}", f"batch.SubmitJob:throttle={half}",
        # A Batch Job State Change event lost (gone to the BatchEventsDLQ): the local Batch drops it.
        f"batch.events:drop={min(1.0, 4 * rate)}",
    ]
    return ",".join(rules)


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in ("lambda", "batch", "private"):
            raise argparse.ArgumentTypeError(f"unknown route {name!r} in --mix")
        mix[name.strip()] = float(weight or 1)
    return {k: v for k, v in mix.items() if v > 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--fault-rate", type=float, default=0.05, help="per call, on the calls that matter (0: none)")
    parser.add_argument("--faults", default=None, help="jobbridge_faults rules instead of the default set")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", type=parse_mix, default=parse_mix("lambda=0.5,private=0.35,batch=0.15"),
                        help="routes and their weights (default lambda=0.5,private=0.35,batch=0.15)")
    parser.add_argument("--fail-fraction", type=float, default=0.1, help="jobs of type fail")
    parser.add_argument("--cancel-fraction", type=float, default=0.1, help="sleep jobs cancelled after 0-6 s")
    parser.add_argument("--payload-fraction", type=float, default=0.06,
                        help="echo jobs with non-ASCII params: a third small, a third just under the params' "
                             "share (160 KiB), a third just over it (a 413)")
    parser.add_argument("--api-outage", type=float, default=45.0,
                        help="seconds the API the agents call is stopped (SIGSTOP) at a time (0: never)")
    parser.add_argument("--api-outage-at", type=float, default=5.0,
                        help="seconds into the submits of the first (the submits of a 200-job run take ~15 s)")
    parser.add_argument("--api-outage-every", type=float, default=600.0,
                        help="seconds from one outage's start to the next's (0: once)")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--submitters", type=int, default=8, help="concurrent API clients")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="Lambda worker and batch_submit MaximumConcurrency")
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--agent-concurrency", type=int, default=4)
    parser.add_argument("--drain-timeout", type=float, default=None,
                        help="seconds to wait for every job to end (default 300 + 1 per job)")
    parser.add_argument("--state-dir", type=Path, default=None, help="keep the stack's state and logs here")
    parser.add_argument("--out", type=Path, default=ROOT / "soak" / "last.json")
    args = parser.parse_args(argv)

    if args.drain_timeout is None:
        args.drain_timeout = 300.0 + 1.0 * args.jobs
    faults = args.faults if args.faults is not None else default_faults(args.fault_rate)
    run_id = f"soak{uuid.uuid4().hex[:8]}"
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(faults=faults, run_id=run_id)
    say = lambda text: print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)  # noqa: E731

    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="jobbridge-soak-"))
    parameters = {
        # A failed Lambda record comes back in 30 s, not 90 minutes (the template's 6x rule is for
        # AWS's 900 s worker; the soak's jobs take seconds).
        "PublicLambdaVisibilityTimeout": "30",
        "WorkerMaximumConcurrency": str(args.worker_concurrency),
        "BatchSubmitMaximumConcurrency": str(args.worker_concurrency),
        "MaxReceiveCount": "5",
    }
    env = {"JOBBRIDGE_SWEEP_INTERVAL_S": "5", "JOBBRIDGE_LOCAL_AGENTS": str(args.agents),
           "JOBBRIDGE_LOCAL_AGENT_CONCURRENCY": str(args.agent_concurrency), "JOBBRIDGE_AGENT_LEASE_S": "30",
           "JOBBRIDGE_AGENT_HEARTBEAT_S": "5"}
    say(f"starting the stack in {state_dir} (faults: {faults or 'none'})")
    running = stack.start(state_dir, faults=faults, seed=args.seed, parameters=parameters, env=env)
    try:
        plans = harness.make_plans(args.jobs, args.tenants, args.mix, args.fail_fraction, args.cancel_fraction,
                                   args.seed, run_id, args.payload_fraction)
        # The soak's clients share the API with the agents: enough retries (same key) to outlast an outage.
        submitter = harness.Submitter(running, plans, args.submitters,
                                      retries=3 + math.ceil(args.api_outage / SUBMIT_TIMEOUT_S), timeout_s=SUBMIT_TIMEOUT_S)
        outage = harness.ApiOutage(running.api_pid, args.api_outage, args.api_outage_at, args.api_outage_every,
                                   progress=say).start()
        try:
            say(f"submitting {len(plans)} jobs from {args.submitters} clients")
            submit_s = submitter.run()
            owed = {p.job_id for p in plans if submitter.outcomes[p.index].accepted}
            say(f"submitted in {submit_s:.0f}s ({len(owed)} accepted); draining (up to {args.drain_timeout:.0f}s)")
            items, drain_s = harness.drain(running, owed, args.drain_timeout, progress=say)
        finally:
            outage.stop()  # the API answers again before anything below asks it
        drained = all(i.get("state") in harness.FINAL for i in items if i["job_id"] in owed)
        payload_check = harness.check_payloads(submitter, plans)
        result = harness.report(running, plans, submitter, items, config, submit_s, drain_s, drained,
                                payload_check=payload_check, outage=outage.summary())
    finally:
        say("stopping the stack")
        running.stop(timeout_s=60)
    harness.write(result, args.out)
    print(harness.table(result))
    if result["ok"] and args.state_dir is None:
        shutil.rmtree(state_dir, ignore_errors=True)  # a passing run's logs are not worth the disk
        print(f"(details: {args.out})")
    else:
        print(f"(details: {args.out}; the stack's logs: {state_dir / 'logs'})")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
