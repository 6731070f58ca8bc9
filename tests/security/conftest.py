"""The security tier: the `make run` API in a subprocess (uvicorn, verify mode, the local stack's
own key), attacked over HTTP on loopback. No pollers run, so every job stays where the API put it
and "nothing was created or changed" can be read straight from the table."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from e2e_stack import RunningStack, start_stack


@pytest.fixture(scope="session")
def api_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = start_stack(tmp_path_factory.mktemp("security-stack"), functions="ApiFunction")
    yield stack
    stack.stop()


@pytest.fixture
def table_items(api_stack: RunningStack):
    """Every item in the jobs table, read beside the API (consistent scan)."""
    ddb = api_stack.aws("dynamodb")
    table = api_stack.info["table"]

    def scan() -> list[dict[str, Any]]:
        items, start = [], None
        while True:
            page = ddb.scan(TableName=table, ConsistentRead=True, **({"ExclusiveStartKey": start} if start else {}))
            items += page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    return scan
