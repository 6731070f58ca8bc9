"""Lambda event filtering (an event source mapping's ``FilterCriteria``), for the local pollers.

Lambda drops records that match none of the mapping's filters before invoking the function;
a dropped stream record counts as processed. The pattern syntax is EventBridge's subset that
Lambda documents: https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html

Supported here: literal values (string, number, null), ``prefix``, ``suffix``,
``equals-ignore-case``, ``anything-but`` (values or a prefix), ``numeric`` ranges, ``exists``,
nested objects, and ``$or``. A pattern using anything else raises ``UnsupportedFilter`` when
the poller is built, rather than silently letting records through.

Example::

    filters = [{"Pattern": '{"eventName": ["INSERT", "MODIFY"]}'}]
    matches_any(filters, {"eventName": "REMOVE", ...})   # False
"""

from __future__ import annotations

import json
import operator
from typing import Any, Iterable, Mapping

_NUMERIC_OPS = {"<": operator.lt, "<=": operator.le, "=": operator.eq, ">": operator.gt, ">=": operator.ge}
_KNOWN_MATCHERS = {"prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists"}


class UnsupportedFilter(ValueError):
    pass


def parse_filters(filters: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """``FilterCriteria.Filters`` entries (``{"Pattern": "<json>"}``) -> checked pattern dicts."""
    patterns = []
    for entry in filters or []:
        raw = entry.get("Pattern")
        pattern = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(pattern, dict):
            raise UnsupportedFilter(f"a filter pattern must be a JSON object, got {raw!r}")
        _check(pattern)
        patterns.append(pattern)
    return patterns


def matches_any(patterns: list[dict[str, Any]], event: Mapping[str, Any]) -> bool:
    """True when there are no filters or at least one pattern matches (filters are OR-ed)."""
    return not patterns or any(matches(p, event) for p in patterns)


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Every key of the pattern must match (AND); ``$or`` takes a list of alternatives."""
    for key, rule in pattern.items():
        if key == "$or":
            if not any(matches(alternative, event) for alternative in rule):
                return False
            continue
        present = isinstance(event, Mapping) and key in event
        value = event[key] if present else None
        if isinstance(rule, Mapping):
            # An absent parent makes every leaf below it absent: {"exists": false} then matches
            # (how a pattern says "this DynamoDB attribute is not in the image": {"a": {"S": [{"exists": false}]}}).
            if not matches(rule, value if present else {}):
                return False
        elif not _leaf_matches(rule, present, value):
            return False
    return True


def _leaf_matches(matchers: list[Any], present: bool, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for matcher in matchers:
        if isinstance(matcher, Mapping) and "exists" in matcher:
            if bool(matcher["exists"]) == present:
                return True
            continue
        if present and any(_one_matches(matcher, v) for v in values):
            return True
    return False


def _one_matches(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, Mapping):
        if matcher is None or value is None:
            return matcher is None and value is None
        if isinstance(matcher, (int, float)) and not isinstance(matcher, bool):
            number = _number(value)
            return number is not None and number == matcher
        return isinstance(value, str) and value == matcher
    (kind, argument), = matcher.items()
    if kind == "prefix":
        return isinstance(value, str) and value.startswith(argument)
    if kind == "suffix":
        return isinstance(value, str) and value.endswith(argument)
    if kind == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == str(argument).lower()
    if kind == "anything-but":
        if isinstance(argument, Mapping):
            return not _one_matches(argument, value)
        excluded = argument if isinstance(argument, list) else [argument]
        return not any(_one_matches(e, value) for e in excluded)
    if kind == "numeric":
        number = _number(value)
        if number is None:
            return False
        pairs = zip(argument[0::2], argument[1::2])
        return all(_NUMERIC_OPS[op](number, bound) for op, bound in pairs)
    raise UnsupportedFilter(f"filter matcher {kind!r} is not supported locally")


def _number(value: Any) -> float | None:
    # Only JSON numbers compare numerically, as in EventBridge patterns: a DynamoDB "N" value is
    # a string in the record, so {"numeric": [...]} never matches it (Lambda documents the same).
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _check(pattern: Mapping[str, Any]) -> None:
    for key, rule in pattern.items():
        if key == "$or":
            for alternative in rule:
                _check(alternative)
        elif isinstance(rule, Mapping):
            _check(rule)
        elif isinstance(rule, list):
            for matcher in rule:
                if isinstance(matcher, Mapping):
                    kinds = set(matcher)
                    if len(kinds) != 1 or not kinds <= _KNOWN_MATCHERS:
                        raise UnsupportedFilter(f"filter matcher {matcher!r} is not supported locally")
        else:
            raise UnsupportedFilter(f"filter values must be arrays, got {key}: {rule!r}")
