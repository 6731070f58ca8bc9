"""Job <-> DynamoDB item, by hand: the record's shape is known, so this is faster and stricter than
boto3's TypeSerializer (no Decimal round trips, no resource layer).

``params`` and ``result`` are client JSON: stored as JSON text, because DynamoDB documents refuse
floats as binary, NaN, and nesting past 32 levels, and the server never queries inside them.
"""

from __future__ import annotations

import json
from typing import Any

_JSON_TEXT = ("params", "result")


def to_attr(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {k: to_attr(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [to_attr(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__}")


def from_attr(attr: dict[str, Any]) -> Any:
    (kind, value), = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "BOOL":
        return value
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "SS":
        return list(value)
    raise TypeError(f"unexpected DynamoDB type {kind}")


def is_unicode_text(value: Any) -> bool:
    """False if a string (value or key) anywhere in ``value`` cannot be encoded as UTF-8: a lone
    UTF-16 surrogate, which JSON's \\u escapes and ``errors="surrogateescape"`` can both produce.
    dump_json would store it escaped, and every later read that encodes it would fail."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(is_unicode_text(k) and is_unicode_text(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_unicode_text(v) for v in value)
    return True


def dump_json(value: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON; refuse them at the door rather than store them.
    # ensure_ascii=False: stored as UTF-8 text, its size is the body's. Escaped, non-ASCII text grew
    # up to 3x ("ü" -> "\\u00fc"), and a 256 KiB body passed DynamoDB's 400 KB item limit (a 500).
    return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=False, ensure_ascii=False)


def encode_item(record: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for key, value in record.items():
        if value is None:
            continue  # absent, not NULL: keeps sparse indexes sparse and items small
        if key in _JSON_TEXT:
            item[key] = {"S": dump_json(value)}
        else:
            item[key] = to_attr(value)
    return item


def decode_item(item: dict[str, Any]) -> dict[str, Any]:
    record = {key: from_attr(attr) for key, attr in item.items()}
    for key in _JSON_TEXT:
        if isinstance(record.get(key), str):
            record[key] = json.loads(record[key])
    return record
