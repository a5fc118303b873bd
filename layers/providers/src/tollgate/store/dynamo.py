"""Marshalling between plain Python values and DynamoDB's attribute-value JSON.

Hand-written for the few types Tollgate stores (str, int, bool, lists and maps of them), because
boto3's resource layer and ``TypeSerializer`` cost more than the rest of a request's hot path.
Numbers are integers only: money and token counts never touch floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]


def to_attribute(value: Any) -> AttributeValue:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute(element) for element in value]}
    if isinstance(value, Mapping):
        return {"M": to_item(value)}
    if value is None:
        return {"NULL": True}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def to_item(values: Mapping[str, Any]) -> Item:
    """An item from a mapping; ``None`` values are left out rather than stored as NULL."""
    return {name: to_attribute(value) for name, value in values.items() if value is not None}


def from_attribute(attribute: AttributeValue) -> Any:
    ((kind, value),) = attribute.items()
    if kind == "S" or kind == "BOOL":
        return value
    if kind == "N":
        return int(value)
    if kind == "L":
        return [from_attribute(element) for element in value]
    if kind == "M":
        return from_item(value)
    if kind == "NULL":
        return None
    if kind == "SS":
        return sorted(value)
    raise TypeError(f"unexpected DynamoDB attribute type {kind}")


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: from_attribute(attribute) for name, attribute in item.items()}
