"""moto's in-process DynamoDB, made fit for a load of a thousand requests from many threads.

Two limits of moto matter at that scale, neither of which real DynamoDB has:

* ``TransactWriteItems`` deep-copies every table a transaction touches, to roll back on failure.
  Every settlement touches the ledger and usage tables, so a load's cost grows with the square
  of its size (1,000 requests: two minutes).
* moto does not lock its tables, so two threads' calls interleave (a conditional write with
  another write; a read with a write: "dictionary changed size during iteration").

``exact_and_fast(monkeypatch)`` replaces the transaction with validate-then-apply (every condition
is checked first, nothing is written unless all hold: DynamoDB's all-or-nothing, without the
snapshot) and serves one DynamoDB call at a time, as moto's single-threaded server does in local
mode (``tollgate.local.runner.start_moto``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from moto.dynamodb import models, responses
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)

_CALLS = threading.RLock()


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _CALLS:
            return method(*args, **kwargs)

    return locked


def _transact_write_items(self: models.DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _CALLS:
        operations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        targets: set[tuple[str, str]] = set()
        errors: list[tuple[str | None, str | None, Any]] = []
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            target = (op["TableName"], str(dict(sorted(key.items()))))
            if target in targets:
                raise MultipleTransactionsException()
            targets.add(target)
            operations.append((op_type, op, key))
            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            if condition is not None and not models.get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            ).expr(current):
                old = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    old = current.to_json()["Attributes"]
                errors.append(("ConditionalCheckFailed", "The conditional request failed", old))
            else:
                errors.append((None, None, None))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for op_type, op, key in operations:
            arguments = {
                "condition_expression": op.get("ConditionExpression"),
                "expression_attribute_names": op.get("ExpressionAttributeNames"),
                "expression_attribute_values": op.get("ExpressionAttributeValues"),
            }
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"], **arguments)
            elif op_type == "Delete":
                self.delete_item(op["TableName"], key, **arguments)
            elif op_type == "Update":
                self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"], **arguments)


def exact_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = responses.DynamoHandler
    monkeypatch.setattr(handler, "call_action", _locked(handler.call_action))
    monkeypatch.setattr(models.DynamoDBBackend, "transact_write_items", _transact_write_items)
