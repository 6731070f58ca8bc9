"""moto's DynamoDB made as strict as DynamoDB about item size.

DynamoDB refuses a write whose item would exceed 400 KB (409,600 bytes, attribute names plus
values in UTF-8), whole: PutItem with "Item size has exceeded the maximum allowed size",
UpdateItem with "Item size to update has exceeded the maximum allowed size", both
ValidationException, and the item is left as it was.
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items

moto (5.x) measures items its own way (numbers as their text, no list or map overhead, a limit of
405,000) and applies an UpdateItem's actions one by one, so an oversized update is refused only
after its first actions changed the item: a record flipped to SUCCEEDED with no result. ``install``
replaces both: every put and every update expression is measured as DynamoDB measures
(``jobbridge.dynamo_codec.item_size``), and an update that does not fit is rolled back before moto
records it in the stream.

DynamoDB applies a conditional write atomically: of concurrent writes with one condition, one
applies and the others fail their condition. moto checks the condition, then applies the write,
with nothing held in between, so under load two claims of one attempt could both succeed (the soak
saw a job claimed twice and FAILED twice). ``install`` makes each write (put, update, delete,
transaction) one step: a lock around moto's backend methods, held from the condition to the write.
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html

The moto server of the local stack runs with it (``python -m jobbridge_local.motoserver``), and the
unit tier installs it in moto's in-process mock, so every tier meets DynamoDB's behaviour.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any, Callable

from jobbridge.dynamo_codec import item_size
from jobbridge.limits import DYNAMODB_MAX_ITEM_BYTES

_installed = False
# Writes of the emulated DynamoDB, one at a time (reads need no lock: an item is replaced or changed
# under the lock, and DynamoDB's own reads are no more isolated than that).
_WRITES = threading.RLock()
_WRITE_METHODS = ("put_item", "update_item", "delete_item", "transact_write_items")


def _one_at_a_time(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return method(*args, **kwargs)

    return locked


def install() -> None:
    """Patch moto's DynamoDB in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.parsing.executors import UpdateExpressionExecutor

    # moto's own check, attribute by attribute with its own measure: replaced by the whole-item
    # checks below.
    LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[method-assign,assignment]

    put_item = Table.put_item

    def strict_put_item(self: Any, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if item_size(item_attrs) > DYNAMODB_MAX_ITEM_BYTES:
            raise ItemSizeTooLarge()
        return put_item(self, item_attrs, *args, **kwargs)

    execute = UpdateExpressionExecutor.execute

    def strict_execute(self: Any, node: Any = None) -> None:
        if node is not None:  # execute() recurses through the expression's nodes: measure once, at the top
            return execute(self, node)
        before = copy.deepcopy(self.item)
        try:
            execute(self)
            if item_size(self.item.to_json()["Attributes"]) > DYNAMODB_MAX_ITEM_BYTES:
                raise ItemSizeTooLarge()
        except ItemSizeTooLarge:
            self.item.attrs = before.attrs  # refused whole; moto's update_item answers ItemSizeToUpdateTooLarge
            raise
        return None

    Table.put_item = strict_put_item  # type: ignore[method-assign]
    UpdateExpressionExecutor.execute = strict_execute  # type: ignore[method-assign]
    for name in _WRITE_METHODS:  # each from its condition check to its last change, atomic
        setattr(DynamoDBBackend, name, _one_at_a_time(getattr(DynamoDBBackend, name)))
    _installed = True
