"""AWS list prices used by make bench, us-east-1, on-demand, as published on the services' pricing
pages (https://aws.amazon.com/api-gateway/pricing/, /lambda/pricing/, /sqs/pricing/,
/dynamodb/pricing/on-demand/) and checked on 2026-11-22. First-tier prices, no free tier.
docs/PERFORMANCE.md states them beside the results."""

PRICES_CHECKED = "2026-11-22"
REGION = "us-east-1"

API_GATEWAY_HTTP_PER_REQUEST = 1.00 / 1e6  # HTTP API, first 300 M requests a month
LAMBDA_PER_REQUEST = 0.20 / 1e6
LAMBDA_PER_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}  # first 6 billion GB-s a month
SQS_PER_REQUEST = 0.40 / 1e6  # standard queue, after the first million; each 64 KB chunk is a request
SQS_CHUNK_BYTES = 64 * 1024
DYNAMODB_PER_WRU = 0.625 / 1e6  # on-demand write request unit: 1 KB of item, rounded up
DYNAMODB_PER_RRU = 0.125 / 1e6  # on-demand read request unit: 4 KB strongly consistent, 2x4 KB eventually
# Lambda reading a DynamoDB stream is free (GetRecords by an event source mapping is not billed);
# AWS service events (Batch Job State Change) on the default event bus are free.
# Not counted: CloudWatch Logs ingestion, data transfer, and the compute of the job itself
# (Lambda GB-s of the job are counted; a Batch job's Fargate/EC2 time and the agent's machine are not).

NAIVE_STATUS_WRITES = 4  # the naive design's QUEUED, DISPATCHED, RUNNING, SUCCEEDED writes


def lambda_cost(invocations: float, gb_seconds: float, architecture: str = "arm64") -> float:
    return invocations * LAMBDA_PER_REQUEST + gb_seconds * LAMBDA_PER_GB_S[architecture]


def billed_gb_seconds(duration_ms: float, memory_mb: int) -> float:
    """Lambda bills duration rounded up to the millisecond, at the configured memory."""
    return (-(-duration_ms // 1)) / 1000 * memory_mb / 1024
