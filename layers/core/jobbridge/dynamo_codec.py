"""Job <-> DynamoDB item, by hand: the record's shape is known, so this is faster and stricter than
boto3's TypeSerializer (no Decimal round trips, no resource layer).

``params`` and ``result`` are client JSON: stored as JSON text, because DynamoDB documents refuse
floats as binary, NaN, and nesting past 32 levels, and the server never queries inside them.
The text is UTF-8 as it is (an emoji costs its 4 bytes, not the 12 of a ``\\ud83d\\ude80`` escape):
DynamoDB counts an item's size in UTF-8 bytes, and ``item_size`` counts as it does.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
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
    """Compact JSON text.

    allow_nan=False: NaN/Infinity are not JSON; refuse them at the door rather than store them.
    ensure_ascii=False: stored as UTF-8 text, its size is the body's. Escaped, non-ASCII text grew
    up to 3x ("ü" -> "\\u00fc"), and a 256 KiB body passed DynamoDB's 400 KB item limit (a 500)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def json_size(value: Any) -> int:
    """The UTF-8 bytes of ``value`` stored as JSON text (what DynamoDB counts for it).

    Raises ValueError for what cannot be stored: NaN or Infinity, or a lone surrogate (JSON text
    may write "\\ud800" alone; it is no Unicode character, and neither UTF-8 nor a JSON answer
    can carry it), as UnicodeEncodeError."""
    return len(dump_json(value).encode("utf-8"))


# --- item size, as DynamoDB counts it -------------------------------------------------------------
# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html:
# an item's size is the sum of its attribute names' and values' lengths: strings and names in UTF-8
# bytes, binary in raw bytes, a number about 1 byte per two significant digits + 1, null and boolean
# 1 byte, a list or map 3 bytes + its elements + 1 byte per element.


def item_size(item: dict[str, Any]) -> int:
    """The size of ``item`` (an item in DynamoDB's wire form, ``{name: {"S": ...}}``) in bytes."""
    return sum(_utf8(name) + value_size(attr) for name, attr in item.items())


def value_size(attr: dict[str, Any]) -> int:
    (kind, value), = attr.items()
    if kind == "S":
        return _utf8(value)
    if kind == "N":
        return _number_size(value)
    if kind == "B":
        return len(_raw_bytes(value))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_utf8(v) for v in value)
    if kind == "NS":
        return sum(_number_size(v) for v in value)
    if kind == "BS":
        return sum(len(_raw_bytes(v)) for v in value)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in value)
    if kind == "M":
        return 3 + sum(1 + _utf8(k) + value_size(v) for k, v in value.items())
    raise TypeError(f"unexpected DynamoDB type {kind}")


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def _number_size(text: str) -> int:
    digits = format(abs(Decimal(str(text))), "f").replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def _raw_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else base64.b64decode(value)


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
