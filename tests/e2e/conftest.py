"""The e2e tier's fixtures: the `make run` stack in a subprocess (see e2e_stack)."""

from __future__ import annotations

from typing import Iterator

import pytest

from e2e_stack import RunningStack, start_stack


@pytest.fixture(scope="session")
def hot_path_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The API and the bridge only: messages stay in their queues for the tests to read."""
    stack = start_stack(tmp_path_factory.mktemp("hot-path-stack"), functions="ApiFunction,BridgeFunction")
    yield stack
    stack.stop()


