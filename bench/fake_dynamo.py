"""An in-memory, low-level DynamoDB client with DynamoDB's conditional semantics, for the benchmark.

It implements exactly the operations Tollgate calls (``get_item``, ``put_item``, ``update_item``,
``delete_item``, ``query``, ``transact_write_items``; plus ``create_table``,
``update_time_to_live`` and ``describe_table`` for ``tollgate.local.bootstrap``) on the wire shapes
botocore uses (``{"S": ...}``, ``{"N": ...}``...), with its own evaluator for the expression
language: conditions (comparisons, ``BETWEEN``, ``IN``, ``AND``/``OR``/``NOT``,
``attribute_exists``, ``attribute_not_exists``, ``begins_with``, ``contains``, ``size``),
update expressions (``SET`` with ``+``/``-``, ``if_not_exists`` and ``list_append``, ``REMOVE``,
``ADD``, ``DELETE``) and key conditions. Errors are botocore ``ClientError`` subclasses carrying
``.response`` like botocore's (``Item`` on a failed condition with
``ReturnValuesOnConditionCheckFailure``, ``CancellationReasons`` on a cancelled transaction).

What it keeps from DynamoDB, because Tollgate's correctness rests on it:

* every operation is atomic (one lock), and a transaction applies all of its items or none;
* a condition is evaluated against the item as it was; all ``SET`` right-hand sides read the old
  item; arithmetic on a missing attribute, unused or undefined expression names and values, two
  actions on one path and two transaction items on one item are ``ValidationException``\\s;
* comparisons between different types are false; numbers are exact decimals.

What it leaves out: capacity, throttling, item size limits, and (in ``sink_limit`` mode) the
bodies of old write-only items.

What it does to stay cheap, since its CPU stands for DynamoDB's servers and not for Tollgate's:
parsed expressions are cached by their text, and the check of the names and values a call gives
by the expressions and the names given (Tollgate uses a handful of distinct expressions, so
steady-state cost is the evaluation alone); short integers are computed as ``int``, which gives
exactly what exact decimals give (``tests/bench/test_fake_numbers.py``); and on the benchmark's hot
path (``call_inline``) it keeps the values it is handed instead of copying them.

``FakeDynamoDB.calls`` counts calls per operation (and ``calls_by_table`` per table), which is how
the benchmark reports DynamoDB round trips per request.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from botocore.exceptions import ClientError

from tollgate.store.dynamo_http import snake_case

Item = dict[str, dict[str, Any]]
_DECIMAL = Context(prec=38)


# -- errors -------------------------------------------------------------------------------------


class _Error(ClientError):
    code = "InternalServerError"

    def __init__(self, operation: str, message: str, **extra: Any) -> None:
        response: dict[str, Any] = {
            "Error": {"Code": self.code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 400},
            **extra,
        }
        super().__init__(response, operation)


class ConditionalCheckFailedException(_Error):
    code = "ConditionalCheckFailedException"


class TransactionCanceledException(_Error):
    code = "TransactionCanceledException"


class ResourceNotFoundException(_Error):
    code = "ResourceNotFoundException"


class ResourceInUseException(_Error):
    code = "ResourceInUseException"


class ValidationException(_Error):
    code = "ValidationException"


class TransactionConflictException(_Error):
    code = "TransactionConflictException"


class _Exceptions:
    """``client.exceptions``, as botocore exposes the modelled error classes."""

    ClientError = ClientError
    ConditionalCheckFailedException = ConditionalCheckFailedException
    TransactionCanceledException = TransactionCanceledException
    ResourceNotFoundException = ResourceNotFoundException
    ResourceInUseException = ResourceInUseException
    TransactionConflictException = TransactionConflictException


class _Invalid(Exception):
    """A validation failure found while evaluating; becomes a ``ValidationException``."""


# -- values ---------------------------------------------------------------------------------------


def _number(text: str) -> Decimal:
    try:
        return _DECIMAL.create_decimal(text)
    except InvalidOperation:
        raise _Invalid(f"A value provided cannot be converted into a number: {text!r}") from None


#: Integers of up to this many characters are added, subtracted and compared as ``int``: their sums
#: and differences have at most 19 digits, well inside the 38 that ``_DECIMAL`` keeps exactly, so
#: both ways give the same answer, and ``int`` is several times cheaper. Others go through Decimal.
_SHORT_INTEGER = 18


def _short_integer(text: str) -> int | None:
    """``text`` as an int when it is a short, plain ASCII integer (``-`` allowed), else None."""
    if len(text) <= _SHORT_INTEGER and text.isascii():
        digits = text[1:] if text[:1] == "-" else text
        if digits.isdigit():
            return int(text)
    return None


def _numeric(text: str) -> int | Decimal:
    """A number's exact value, for comparisons (an int compares with a Decimal exactly)."""
    value = _short_integer(text)
    return value if value is not None else _number(text)


def _arithmetic(left: str, right: str, sign: int) -> str:
    """``left + right`` (``sign`` 1) or ``left - right`` (-1), as DynamoDB's number text."""
    a, b = _short_integer(left), _short_integer(right)
    if a is not None and b is not None:
        return str(a + b if sign > 0 else a - b)
    exact = (
        _DECIMAL.add(_number(left), _number(right))
        if sign > 0
        else _DECIMAL.subtract(_number(left), _number(right))
    )
    return _format_number(exact)


def _format_number(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


#: Attribute kinds whose value holds other values; the rest hold one immutable str, bool or bytes.
_NESTED = frozenset({"M", "L", "SS", "NS", "BS"})


def copy_value(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of one attribute value (much cheaper than ``copy.deepcopy``)."""
    if _NESTED.isdisjoint(value):
        return value.copy()  # a scalar: its inner value is immutable
    ((kind, inner),) = value.items()
    if kind == "M":
        return {"M": {name: copy_value(element) for name, element in inner.items()}}
    if kind == "L":
        return {"L": [copy_value(element) for element in inner]}
    return {kind: list(inner)}


def _same(value: dict[str, Any]) -> dict[str, Any]:
    return value


def copy_item(item: Item) -> Item:
    return {name: copy_value(value) for name, value in item.items()}


def _kind(value: dict[str, Any]) -> tuple[str, Any]:
    ((kind, inner),) = value.items()
    return kind, inner


def _equal(left: dict[str, Any] | None, right: dict[str, Any] | None) -> bool:
    if left is None or right is None:
        return False
    lk, lv = _kind(left)
    rk, rv = _kind(right)
    if lk != rk:
        return False
    if lk == "N":
        return _numeric(lv) == _numeric(rv)
    if lk in ("SS", "BS"):
        return set(lv) == set(rv)
    if lk == "NS":
        return {_number(v) for v in lv} == {_number(v) for v in rv}
    if lk == "L":
        return len(lv) == len(rv) and all(_equal(a, b) for a, b in zip(lv, rv, strict=True))
    if lk == "M":
        return lv.keys() == rv.keys() and all(_equal(lv[k], rv[k]) for k in lv)
    return bool(lv == rv)


def _order(left: dict[str, Any] | None, right: dict[str, Any] | None) -> int | None:
    """-1/0/1 for two scalars of one orderable type (N, S, B); None when they do not compare."""
    if left is None or right is None:
        return None
    lk, lv = _kind(left)
    rk, rv = _kind(right)
    if lk != rk or lk not in ("N", "S", "B"):
        return None
    a, b = (_numeric(lv), _numeric(rv)) if lk == "N" else (lv, rv)
    return (a > b) - (a < b)


# -- expressions: tokens ------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<op><>|<=|>=|[=<>(),.+\-\[\]])|(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)"
    r"|(?P<int>\d+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"}


@dataclass
class _Tokens:
    items: list[tuple[str, str]]
    position: int = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.position + offset
        return self.items[index] if index < len(self.items) else None

    def next(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise _Invalid("Syntax error; unexpected end of expression")
        self.position += 1
        return token

    def accept(self, kind: str, text: str | None = None) -> bool:
        token = self.peek()
        if token is not None and token[0] == kind and (text is None or token[1] == text):
            self.position += 1
            return True
        return False

    def expect(self, kind: str, text: str | None = None) -> str:
        token = self.next()
        if token[0] != kind or (text is not None and token[1] != text):
            raise _Invalid(f"Syntax error; token: {token[1]!r}, expected {text or kind}")
        return token[1]

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].upper() == word:
            self.position += 1
            return True
        return False


def _tokenize(text: str) -> _Tokens:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _Invalid(f"Syntax error; invalid character at {position} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return _Tokens(tokens)


# -- expressions: the tree ---------------------------------------------------------------------
# Operands and conditions are small closures over (item, names, values) built once per expression
# text; ``_Refs`` records which #names and :values the expression uses, for the unused-value check.


@dataclass
class _Refs:
    names: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    #: ``path = :value`` comparisons (either way round): how a query finds its partition.
    equalities: list[tuple[Path, str]] = field(default_factory=list)


Path = tuple[Any, ...]  # name parts (str, possibly "#alias") and list indexes (int)
Env = tuple[dict[str, str], dict[str, dict[str, Any]]]  # (ExpressionAttributeNames, ...Values)
Operand = Callable[[Item, Env], dict[str, Any] | None]
Condition = Callable[[Item, Env], bool]


def _resolve(path: Path, names: dict[str, str]) -> list[Any]:
    resolved: list[Any] = []
    for part in path:
        if isinstance(part, str) and part.startswith("#"):
            if part not in names:
                raise _Invalid(
                    "An expression attribute name used in the document path is not defined; "
                    f"attribute name: {part}"
                )
            resolved.append(names[part])
        else:
            resolved.append(part)
    return resolved


def _get_path(item: Item, path: list[Any]) -> dict[str, Any] | None:
    current: dict[str, Any] | None = item.get(path[0])
    for part in path[1:]:
        if current is None:
            return None
        kind, inner = _kind(current)
        if isinstance(part, int):
            current = inner[part] if kind == "L" and part < len(inner) else None
        else:
            current = inner.get(part) if kind == "M" else None
    return current


def _parse_path(tokens: _Tokens, refs: _Refs) -> Path:
    parts: list[Any] = []
    while True:
        kind, text = tokens.next()
        if kind == "name":
            refs.names.add(text)
        elif kind != "word" or text.upper() in _KEYWORDS:
            raise _Invalid(f"Syntax error; token: {text!r}, expected an attribute name")
        parts.append(text)
        while tokens.accept("op", "["):
            parts.append(int(tokens.expect("int")))
            tokens.expect("op", "]")
        if not tokens.accept("op", "."):
            return tuple(parts)


def _path_operand(path: Path) -> Operand:
    if len(path) == 1 and not path[0].startswith("#"):
        name = path[0]

        def attribute(item: Item, env: Env) -> dict[str, Any] | None:
            return item.get(name)

        operand = attribute
    else:

        def document(item: Item, env: Env) -> dict[str, Any] | None:
            return _get_path(item, _resolve(path, env[0]))

        operand = document
    operand.path = path  # type: ignore[attr-defined]
    return operand


def _value_operand(name: str) -> Operand:
    def operand(item: Item, env: Env) -> dict[str, Any] | None:
        try:
            return env[1][name]
        except KeyError:
            raise _Invalid(
                f"An expression attribute value used in expression is not defined; attribute value: {name}"
            ) from None

    operand.value_name = name  # type: ignore[attr-defined]
    return operand


def _size_operand(inner: Operand) -> Operand:
    def operand(item: Item, env: Env) -> dict[str, Any] | None:
        value = inner(item, env)
        if value is None:
            return None
        kind, data = _kind(value)
        if kind == "N":
            raise _Invalid("Invalid function operand; size() of a number")
        length = len(data.encode()) if kind == "S" else len(data)
        return {"N": str(length)}

    return operand


def _parse_operand(tokens: _Tokens, refs: _Refs) -> Operand:
    token = tokens.peek()
    if token is None:
        raise _Invalid("Syntax error; expected an operand")
    kind, text = token
    if kind == "value":
        tokens.next()
        refs.values.add(text)
        return _value_operand(text)
    if kind == "word" and text == "size" and tokens.peek(1) == ("op", "("):
        tokens.next()
        tokens.expect("op", "(")
        inner = _path_operand(_parse_path(tokens, refs))
        tokens.expect("op", ")")
        return _size_operand(inner)
    return _path_operand(_parse_path(tokens, refs))


_COMPARATORS: dict[str, Callable[[dict[str, Any] | None, dict[str, Any] | None], bool]] = {
    "=": _equal,
    "<>": lambda a, b: a is not None and b is not None and not _equal(a, b),
    "<": lambda a, b: _order(a, b) == -1,
    "<=": lambda a, b: _order(a, b) in (-1, 0),
    ">": lambda a, b: _order(a, b) == 1,
    ">=": lambda a, b: _order(a, b) in (0, 1),
}


def _parse_condition(tokens: _Tokens, refs: _Refs) -> Condition:
    left = _parse_and(tokens, refs)
    while tokens.keyword("OR"):
        right = _parse_and(tokens, refs)
        left = (lambda a, b: lambda item, env: a(item, env) or b(item, env))(left, right)
    return left


def _parse_and(tokens: _Tokens, refs: _Refs) -> Condition:
    left = _parse_not(tokens, refs)
    while tokens.keyword("AND"):
        right = _parse_not(tokens, refs)
        left = (lambda a, b: lambda item, env: a(item, env) and b(item, env))(left, right)
    return left


def _parse_not(tokens: _Tokens, refs: _Refs) -> Condition:
    if tokens.keyword("NOT"):
        inner = _parse_not(tokens, refs)
        return lambda item, env: not inner(item, env)
    return _parse_primary(tokens, refs)


_FUNCTIONS = {"attribute_exists", "attribute_not_exists", "begins_with", "contains", "attribute_type"}


def _parse_primary(tokens: _Tokens, refs: _Refs) -> Condition:
    if tokens.accept("op", "("):
        inner = _parse_condition(tokens, refs)
        tokens.expect("op", ")")
        return inner
    token = tokens.peek()
    if token is not None and token[0] == "word" and token[1] in _FUNCTIONS and tokens.peek(1) == ("op", "("):
        return _parse_function(tokens, refs)
    left = _parse_operand(tokens, refs)
    if tokens.keyword("BETWEEN"):
        low = _parse_operand(tokens, refs)
        if not tokens.keyword("AND"):
            raise _Invalid("Syntax error; BETWEEN needs AND")
        high = _parse_operand(tokens, refs)

        def between(item: Item, env: Env) -> bool:
            value = left(item, env)
            lo, hi = low(item, env), high(item, env)
            if _order(lo, hi) == 1:
                raise _Invalid("Invalid KeyConditionExpression: the BETWEEN bounds are in the wrong order")
            return _order(value, lo) in (0, 1) and _order(value, hi) in (-1, 0)

        return between
    if tokens.keyword("IN"):
        tokens.expect("op", "(")
        choices = [_parse_operand(tokens, refs)]
        while tokens.accept("op", ","):
            choices.append(_parse_operand(tokens, refs))
        tokens.expect("op", ")")
        return lambda item, env: any(_equal(left(item, env), choice(item, env)) for choice in choices)
    kind, text = tokens.next()
    if kind != "op" or text not in _COMPARATORS:
        raise _Invalid(f"Syntax error; token: {text!r}, expected a comparator")
    compare = _COMPARATORS[text]
    right = _parse_operand(tokens, refs)
    if text == "=":
        for path_side, value_side in ((left, right), (right, left)):
            if hasattr(path_side, "path") and hasattr(value_side, "value_name"):
                refs.equalities.append((path_side.path, value_side.value_name))
    return lambda item, env: compare(left(item, env), right(item, env))


def _parse_function(tokens: _Tokens, refs: _Refs) -> Condition:
    name = tokens.next()[1]
    tokens.expect("op", "(")
    path = _path_operand(_parse_path(tokens, refs))
    argument: Operand | None = None
    if tokens.accept("op", ","):
        argument = _parse_operand(tokens, refs)
    tokens.expect("op", ")")
    if name == "attribute_exists":
        return lambda item, env: path(item, env) is not None
    if name == "attribute_not_exists":
        return lambda item, env: path(item, env) is None
    if argument is None:
        raise _Invalid(f"Invalid function {name}: missing operand")
    operand = argument
    if name == "begins_with":

        def begins_with(item: Item, env: Env) -> bool:
            value, prefix = path(item, env), operand(item, env)
            if value is None or prefix is None:
                return False
            (vk, vv), (pk, pv) = _kind(value), _kind(prefix)
            return vk == pk and vk in ("S", "B") and vv.startswith(pv)

        return begins_with
    if name == "contains":

        def contains(item: Item, env: Env) -> bool:
            value, needle = path(item, env), operand(item, env)
            if value is None or needle is None:
                return False
            (vk, vv), (nk, nv) = _kind(value), _kind(needle)
            if vk == "S" and nk == "S":
                return nv in vv
            if vk in ("SS", "NS", "BS"):
                return nk == vk[0] and nv in vv
            if vk == "L":
                return any(_equal(element, needle) for element in vv)
            return False

        return contains

    def attribute_type(item: Item, env: Env) -> bool:
        value, wanted = path(item, env), operand(item, env)
        return value is not None and wanted is not None and _kind(value)[0] == _kind(wanted)[1]

    return attribute_type


# -- update expressions --------------------------------------------------------------------------

UpdateAction = tuple[str, Path, Operand | None]  # (SET|REMOVE|ADD|DELETE, path, value)


def _parse_set_value(tokens: _Tokens, refs: _Refs) -> Operand:
    left = _parse_set_term(tokens, refs)
    token = tokens.peek()
    if token in (("op", "+"), ("op", "-")):
        tokens.next()
        right = _parse_set_term(tokens, refs)
        sign = 1 if token == ("op", "+") else -1

        def arithmetic(item: Item, env: Env) -> dict[str, Any] | None:
            a, b = left(item, env), right(item, env)
            if a is None or b is None:
                raise _Invalid(
                    "The provided expression refers to an attribute that does not exist in the item"
                )
            (ak, av), (bk, bv) = _kind(a), _kind(b)
            if ak != "N" or bk != "N":
                raise _Invalid("An operand in the update expression has an incorrect data type")
            return {"N": _arithmetic(av, bv, sign)}

        return arithmetic
    return left


def _parse_set_term(tokens: _Tokens, refs: _Refs) -> Operand:
    token = tokens.peek()
    if token is not None and token[0] == "word" and tokens.peek(1) == ("op", "("):
        if token[1] == "if_not_exists":
            tokens.next()
            tokens.expect("op", "(")
            path = _path_operand(_parse_path(tokens, refs))
            tokens.expect("op", ",")
            fallback = _parse_set_term(tokens, refs)
            tokens.expect("op", ")")

            def if_not_exists(item: Item, env: Env) -> dict[str, Any] | None:
                value = path(item, env)
                return value if value is not None else fallback(item, env)

            return if_not_exists
        if token[1] == "list_append":
            tokens.next()
            tokens.expect("op", "(")
            first = _parse_set_term(tokens, refs)
            tokens.expect("op", ",")
            second = _parse_set_term(tokens, refs)
            tokens.expect("op", ")")

            def list_append(item: Item, env: Env) -> dict[str, Any] | None:
                a, b = first(item, env), second(item, env)
                if a is None or b is None:
                    raise _Invalid(
                        "The provided expression refers to an attribute that does not exist in the item"
                    )
                if _kind(a)[0] != "L" or _kind(b)[0] != "L":
                    raise _Invalid("An operand in the update expression has an incorrect data type")
                return {"L": [*a["L"], *b["L"]]}

            return list_append
    operand = _parse_operand(tokens, refs)

    def required(item: Item, env: Env) -> dict[str, Any] | None:
        return operand(item, env)

    return required


def _parse_update(tokens: _Tokens, refs: _Refs) -> list[UpdateAction]:
    actions: list[UpdateAction] = []
    seen_clauses: set[str] = set()
    while tokens.peek() is not None:
        kind, word = tokens.next()
        clause = word.upper()
        if kind != "word" or clause not in ("SET", "REMOVE", "ADD", "DELETE"):
            raise _Invalid(f"Syntax error; token: {word!r}, expected SET, REMOVE, ADD or DELETE")
        if clause in seen_clauses:
            raise _Invalid(f"The {clause} section can only be used once in an update expression")
        seen_clauses.add(clause)
        while True:
            path = _parse_path(tokens, refs)
            if clause == "SET":
                tokens.expect("op", "=")
                actions.append(("SET", path, _parse_set_value(tokens, refs)))
            elif clause == "REMOVE":
                actions.append(("REMOVE", path, None))
            else:
                actions.append((clause, path, _parse_operand(tokens, refs)))
            if not tokens.accept("op", ","):
                break
    if not actions:
        raise _Invalid("Syntax error; the update expression is empty")
    return actions


@dataclass(frozen=True)
class _Parsed:
    condition: Condition | None = None
    update: list[UpdateAction] | None = None
    refs: _Refs = field(default_factory=_Refs)


_CACHE: dict[tuple[str, str], _Parsed] = {}
_CACHE_LOCK = threading.Lock()
#: Valid (operation, expressions, names given, values given) combinations: ``FakeDynamoDB._parse_all``.
_VALID: dict[tuple[Any, ...], dict[str, _Parsed]] = {}
_VALID_LIMIT = 4096


def _parse(kind: str, text: str) -> _Parsed:
    key = (kind, text)
    parsed = _CACHE.get(key)
    if parsed is not None:
        return parsed
    refs = _Refs()
    tokens = _tokenize(text)
    if kind == "update":
        parsed = _Parsed(update=_parse_update(tokens, refs), refs=refs)
    else:
        parsed = _Parsed(condition=_parse_condition(tokens, refs), refs=refs)
    if tokens.peek() is not None:
        raise _Invalid(f"Syntax error; unexpected token {tokens.peek()[1]!r} in {text!r}")  # type: ignore[index]
    with _CACHE_LOCK:
        _CACHE[key] = parsed
    return parsed


def _set_path(item: Item, path: list[Any], value: dict[str, Any]) -> None:
    if len(path) == 1:
        item[path[0]] = value
        return
    parent = _get_path(item, path[:-1])
    if parent is None:
        raise _Invalid("The document path provided in the update expression is invalid for update")
    kind, inner = _kind(parent)
    last = path[-1]
    if isinstance(last, int) and kind == "L":
        if last < len(inner):
            inner[last] = value
        else:
            inner.append(value)
    elif isinstance(last, str) and kind == "M":
        inner[last] = value
    else:
        raise _Invalid("The document path provided in the update expression is invalid for update")


def _remove_path(item: Item, path: list[Any]) -> None:
    if len(path) == 1:
        item.pop(path[0], None)
        return
    parent = _get_path(item, path[:-1])
    if parent is None:
        return
    kind, inner = _kind(parent)
    last = path[-1]
    if isinstance(last, int) and kind == "L" and last < len(inner):
        del inner[last]
    elif isinstance(last, str) and kind == "M":
        inner.pop(last, None)


def _apply_update(
    old: Item, actions: list[UpdateAction], env: Env, key_names: Iterable[str], *, owned: bool = False
) -> tuple[Item, set[str]]:
    """The new item and the top-level names the update touched. Reads only ``old``. ``owned``: the
    caller handed its values over (``FakeDynamoDB.call_inline``), so they are stored as they are."""
    keep = _same if owned else copy_value
    resolved = _resolved_actions(actions, env[0], tuple(key_names))
    values = [
        (action, path, operand(old, env) if operand is not None else None)
        for action, path, operand in resolved
    ]
    # Copy on write: stored values are never mutated in place (callers only ever get copies), so a
    # shallow copy of the item suffices, plus a copy of each top-level attribute a nested path
    # changes. A full copy would cost O(item size) per update, and a busy tenant's account item
    # carries one hold per request in flight: that cost is DynamoDB's, not the caller's.
    new = dict(old)
    for _, path, _ in values:
        if len(path) > 1 and path[0] in new:
            new[path[0]] = copy_value(new[path[0]])
    touched: set[str] = set()
    for action, path, value in values:
        touched.add(path[0])
        if action == "SET":
            assert value is not None
            _set_path(new, path, keep(value))
        elif action == "REMOVE":
            _remove_path(new, path)
        elif action == "ADD":
            assert value is not None
            current = _get_path(old, path)
            kind, inner = _kind(value)
            if current is None:
                _set_path(new, path, keep(value))
            elif kind == "N" and _kind(current)[0] == "N":
                _set_path(new, path, {"N": _arithmetic(current["N"], inner, 1)})
            elif kind in ("SS", "NS", "BS") and _kind(current)[0] == kind:
                merged = list(dict.fromkeys([*current[kind], *inner]))
                _set_path(new, path, {kind: merged})
            else:
                raise _Invalid("An operand in the update expression has an incorrect data type")
        else:  # DELETE from a set
            assert value is not None
            current = _get_path(old, path)
            kind, inner = _kind(value)
            if current is not None:
                if _kind(current)[0] != kind:
                    raise _Invalid("An operand in the update expression has an incorrect data type")
                remaining = [element for element in current[kind] if element not in inner]
                if remaining:
                    _set_path(new, path, {kind: remaining})
                else:
                    _remove_path(new, path)
    return new, touched


def _resolved_actions(
    actions: list[UpdateAction], names: dict[str, str], key_names: tuple[str, ...]
) -> list[tuple[str, list[Any], Operand | None]]:
    """The actions with their paths' ``#names`` resolved, once checked that no two paths overlap
    and that no key attribute is changed."""
    resolved = [(action, _resolve(path, names), operand) for action, path, operand in actions]
    tops = [path[0] for _, path, _ in resolved]
    if all(len(path) == 1 for _, path, _ in resolved) and len(set(tops)) == len(tops):
        # The usual case, top-level attributes only, all different: nothing overlaps.
        if key_names and not set(key_names).isdisjoint(tops):
            raise _Invalid(
                f"Cannot update attribute {next(t for t in tops if t in key_names)}. "
                "This attribute is part of the key"
            )
        return resolved
    seen: list[list[Any]] = []
    for _, path, _ in resolved:
        for other in seen:
            shorter = min(len(path), len(other))
            if path[:shorter] == other[:shorter]:
                raise _Invalid(
                    "Invalid UpdateExpression: Two document paths overlap with each other; "
                    f"{path} and {other}"
                )
        seen.append(path)
        if path[0] in key_names:
            raise _Invalid(f"Cannot update attribute {path[0]}. This attribute is part of the key")
    return resolved


# -- tables ---------------------------------------------------------------------------------------


@dataclass
class _Index:
    name: str
    partition_key: str
    sort_key: str | None


@dataclass
class _Table:
    name: str
    partition_key: str
    sort_key: str | None
    indexes: dict[str, _Index] = field(default_factory=dict)
    # partition value -> sort value ("" without a sort key) -> item
    partitions: dict[str, dict[str, Item]] = field(default_factory=dict)
    ttl_attribute: str | None = None
    created_at: float = field(default_factory=time.time)

    def key_names(self) -> tuple[str, ...]:
        return (self.partition_key, self.sort_key) if self.sort_key else (self.partition_key,)

    def key_of(self, key: Item, operation: str) -> tuple[str, str]:
        """A ``Key`` argument's (partition, sort) values; it must name the key attributes only."""
        if len(key) != (2 if self.sort_key else 1):
            raise ValidationException(operation, "The provided key element does not match the schema")
        return self.key_in(key, operation)

    def key_in(self, item: Item, operation: str) -> tuple[str, str]:
        """The (partition, sort) values of an item's key attributes (other attributes ignored)."""
        partition = _key_part(item.get(self.partition_key), operation)
        if self.sort_key is None:
            return partition, ""
        return partition, _key_part(item.get(self.sort_key), operation)

    def get(self, key: tuple[str, str]) -> Item | None:
        partition = self.partitions.get(key[0])
        return partition.get(key[1]) if partition else None

    def put(self, key: tuple[str, str], item: Item) -> None:
        self.partitions.setdefault(key[0], {})[key[1]] = item

    def delete(self, key: tuple[str, str]) -> None:
        partition = self.partitions.get(key[0])
        if partition is not None:
            partition.pop(key[1], None)
            if not partition:
                del self.partitions[key[0]]

    def items(self) -> Iterable[Item]:
        for partition in self.partitions.values():
            yield from partition.values()

    def count(self) -> int:
        return sum(len(partition) for partition in self.partitions.values())


def _key_part(value: dict[str, Any] | None, operation: str) -> str:
    if value is not None and len(value) == 1:
        for kind in ("S", "N", "B"):
            inner = value.get(kind)
            if inner is not None:
                return inner  # type: ignore[no-any-return]
    raise ValidationException(operation, "The provided key element does not match the schema")


def _sort_value(value: dict[str, Any] | None) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    kind, inner = _kind(value)
    return (1, _number(inner)) if kind == "N" else (1, inner)


#: The sink rule: which items are write-only for the request path (usage records, ledger entries).
SinkRule = Callable[[str, Item], bool]


def tollgate_sinks(table: str, item: Item) -> bool:
    """Tollgate's write-only items: every usage record, and the ledger's immutable entries."""
    if table.endswith("usage"):
        return True
    sk = item.get("sk", {}).get("S", "")
    return isinstance(sk, str) and sk.startswith("ENTRY#")


class FakeDynamoDB:
    """A low-level DynamoDB client object, in memory. Thread-safe: one lock serializes every call.

    ``sink_limit`` bounds memory in long benchmark runs: items matched by ``sink_rule`` (by default
    none) are kept for the last ``sink_limit`` writes only; older ones are forgotten (and counted in
    ``sinks_dropped``). ``latency`` adds a sleep per call outside the lock, to model a round trip.
    """

    exceptions = _Exceptions

    def __init__(
        self,
        *,
        sink_rule: SinkRule | None = None,
        sink_limit: int | None = None,
        latency: float = 0.0,
        region_name: str = "us-east-1",
    ) -> None:
        self._tables: dict[str, _Table] = {}
        self._lock = threading.RLock()
        self._sink_rule = sink_rule
        self._sink_limit = sink_limit
        self._sinks: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.sinks_dropped = 0
        self.latency = latency
        self._inline = threading.local()
        self.calls: Counter[str] = Counter()
        self.calls_by_table: Counter[tuple[str, str]] = Counter()
        self.meta = type("Meta", (), {"region_name": region_name, "service_model": None})()

    # -- introspection -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, int]:
        """The call counters so far (per operation, and ``op:table`` per table)."""
        with self._lock:
            counts = dict(self.calls)
            counts |= {f"{op}:{table}": n for (op, table), n in self.calls_by_table.items()}
            return counts

    def dump(self, table: str) -> list[Item]:
        """Every item of a table, copied, in key order (for tests)."""
        with self._lock:
            found = self._table(table, "Scan")
            return [
                copy_item(found.partitions[p][s])
                for p in sorted(found.partitions)
                for s in sorted(found.partitions[p])
            ]

    def table_names(self) -> list[str]:
        with self._lock:
            return sorted(self._tables)

    def item_count(self) -> int:
        with self._lock:
            return sum(table.count() for table in self._tables.values())

    def add_table(
        self,
        name: str,
        partition_key: str,
        sort_key: str | None = None,
        indexes: Iterable[tuple[str, str, str | None]] = (),
    ) -> None:
        """Creates a table directly (all key attributes are strings)."""
        with self._lock:
            self._tables[name] = _Table(name, partition_key, sort_key, {i[0]: _Index(*i) for i in indexes})

    # -- plumbing ------------------------------------------------------------------------------

    def _count(self, operation: str, table: str) -> None:
        self.calls[operation] += 1
        self.calls_by_table[(operation, table)] += 1

    def _table(self, name: str, operation: str) -> _Table:
        table = self._tables.get(name)
        if table is None:
            raise ResourceNotFoundException(operation, "Requested resource not found")
        return table

    def _copy_input(self, item: Item) -> Item:
        """An item from the caller's arguments, to store: a copy, unless the caller handed it over."""
        return item if getattr(self._inline, "active", False) else copy_item(item)

    def _pause(self) -> None:
        if self.latency and not getattr(self._inline, "active", False):
            time.sleep(self.latency)

    def call_inline(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """``method`` on this thread without the modelled round trip (the caller awaits it).

        The caller hands ``params`` over: what the call stores keeps the caller's attribute values
        instead of copies of them (a real call would have serialised them, at no cost to the
        caller's CPU), so the caller must not change ``params`` afterwards. Tollgate's ledger builds
        each call's parameters anew and drops them. Answers are still copies.
        """
        self._inline.active = True
        try:
            result: dict[str, Any] = getattr(self, method)(**params)
        finally:
            self._inline.active = False
        return result

    @staticmethod
    def _check_refs(operation: str, arguments: dict[str, Any], parsed: Iterable[_Parsed]) -> None:
        used_names: set[str] = set()
        used_values: set[str] = set()
        for expression in parsed:
            used_names |= expression.refs.names
            used_values |= expression.refs.values
        names = arguments.get("ExpressionAttributeNames") or {}
        values = arguments.get("ExpressionAttributeValues") or {}
        unused_names = set(names) - used_names
        if unused_names:
            raise ValidationException(
                operation,
                "Value provided in ExpressionAttributeNames unused in expressions: "
                f"keys: {{{', '.join(sorted(unused_names))}}}",
            )
        unused_values = set(values) - used_values
        if unused_values:
            raise ValidationException(
                operation,
                "Value provided in ExpressionAttributeValues unused in expressions: "
                f"keys: {{{', '.join(sorted(unused_values))}}}",
            )
        for name in used_names - set(names):
            raise ValidationException(
                operation,
                "An expression attribute name used in the document path is not defined; "
                f"attribute name: {name}",
            )
        for value in used_values - set(values):
            raise ValidationException(
                operation,
                f"An expression attribute value used in expression is not defined; attribute value: {value}",
            )

    def _parse_all(
        self, operation: str, arguments: dict[str, Any], kinds: dict[str, str]
    ) -> dict[str, _Parsed]:
        """The call's expressions, parsed, once checked that every ``#name`` and ``:value`` given
        is used and every one used is given. The outcome depends only on the expressions' texts and
        on which names and values are given, so a valid combination is remembered."""
        names = arguments.get("ExpressionAttributeNames") or {}
        values = arguments.get("ExpressionAttributeValues") or {}
        texts = tuple(arguments.get(argument) for argument in kinds)
        cache_key = (operation, tuple(kinds.items()), texts, tuple(names), tuple(values))
        cached = _VALID.get(cache_key)
        if cached is not None:
            return cached
        parsed = self._parse_checked(operation, arguments, kinds)
        if len(_VALID) >= _VALID_LIMIT:
            _VALID.clear()
        _VALID[cache_key] = parsed
        return parsed

    def _parse_checked(
        self, operation: str, arguments: dict[str, Any], kinds: dict[str, str]
    ) -> dict[str, _Parsed]:
        parsed: dict[str, _Parsed] = {}
        for argument, kind in kinds.items():
            text = arguments.get(argument)
            if text is None:
                continue
            try:
                if not text.strip():
                    raise _Invalid("The expression can not be empty")
                parsed[argument] = _parse(kind, text)
            except _Invalid as error:
                raise ValidationException(operation, f"Invalid {argument}: {error}") from None
        self._check_refs(operation, arguments, parsed.values())
        return parsed

    @staticmethod
    def _env(arguments: dict[str, Any]) -> Env:
        return arguments.get("ExpressionAttributeNames") or {}, arguments.get(
            "ExpressionAttributeValues"
        ) or {}

    def _remember_sink(self, table: _Table, key: tuple[str, str], item: Item) -> None:
        if self._sink_limit is None or self._sink_rule is None or not self._sink_rule(table.name, item):
            return
        self._sinks[(table.name, *key)] = None
        self._sinks.move_to_end((table.name, *key))
        while len(self._sinks) > self._sink_limit:
            (name, pk, sk), _ = self._sinks.popitem(last=False)
            self._tables[name].delete((pk, sk))
            self.sinks_dropped += 1

    # -- writes, evaluated: each returns the new item (None: deleted) or raises --------------------

    def _plan_put(
        self, operation: str, arguments: dict[str, Any]
    ) -> tuple[_Table, tuple[str, str], Item | None, Item | None]:
        table = self._table(arguments["TableName"], operation)
        item = arguments["Item"]
        key = table.key_in(item, operation)
        for index in table.indexes.values():
            for name in (index.partition_key, index.sort_key):
                if name and name in item and _kind(item[name])[0] not in ("S", "N", "B"):
                    raise ValidationException(
                        operation,
                        f"One or more parameter values were invalid: Type mismatch for Index Key {name}",
                    )
        parsed = self._parse_all(operation, arguments, {"ConditionExpression": "condition"})
        old = table.get(key)
        self._check_condition(operation, arguments, parsed, old)
        return table, key, old, self._copy_input(item)

    def _plan_update(
        self, operation: str, arguments: dict[str, Any]
    ) -> tuple[_Table, tuple[str, str], Item | None, Item | None, set[str]]:
        table = self._table(arguments["TableName"], operation)
        key_item = arguments["Key"]
        key = table.key_of(key_item, operation)
        parsed = self._parse_all(
            operation, arguments, {"UpdateExpression": "update", "ConditionExpression": "condition"}
        )
        old = table.get(key)
        self._check_condition(operation, arguments, parsed, old)
        base = old if old is not None else self._copy_input(key_item)
        update = parsed.get("UpdateExpression")
        if update is None:
            return table, key, old, copy_item(base), set()
        try:
            assert update.update is not None
            new, touched = _apply_update(
                base,
                update.update,
                self._env(arguments),
                table.key_names(),
                owned=getattr(self._inline, "active", False),
            )
        except _Invalid as error:
            raise ValidationException(operation, f"Invalid UpdateExpression: {error}") from None
        return table, key, old, new, touched

    def _plan_delete(
        self, operation: str, arguments: dict[str, Any]
    ) -> tuple[_Table, tuple[str, str], Item | None]:
        table = self._table(arguments["TableName"], operation)
        key = table.key_of(arguments["Key"], operation)
        parsed = self._parse_all(operation, arguments, {"ConditionExpression": "condition"})
        old = table.get(key)
        self._check_condition(operation, arguments, parsed, old)
        return table, key, old

    def _check_condition(
        self, operation: str, arguments: dict[str, Any], parsed: dict[str, _Parsed], old: Item | None
    ) -> None:
        condition = parsed.get("ConditionExpression")
        if condition is None:
            return
        assert condition.condition is not None
        try:
            holds = condition.condition(old or {}, self._env(arguments))
        except _Invalid as error:
            raise ValidationException(operation, f"Invalid ConditionExpression: {error}") from None
        if not holds:
            extra: dict[str, Any] = {}
            if arguments.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and old is not None:
                extra["Item"] = copy_item(old)
            raise ConditionalCheckFailedException(operation, "The conditional request failed", **extra)

    # -- the API ------------------------------------------------------------------------------------

    def get_item(self, **arguments: Any) -> dict[str, Any]:
        self._pause()
        with self._lock:
            table = self._table(arguments["TableName"], "GetItem")
            self._count("get_item", table.name)
            item = table.get(table.key_of(arguments["Key"], "GetItem"))
            if arguments.get("ProjectionExpression"):
                raise ValidationException("GetItem", "ProjectionExpression is not supported by the fake")
            return {"Item": copy_item(item)} if item is not None else {}

    def put_item(self, **arguments: Any) -> dict[str, Any]:
        self._pause()
        with self._lock:
            self._count("put_item", arguments.get("TableName", ""))
            table, key, old, new = self._plan_put("PutItem", arguments)
            assert new is not None
            table.put(key, new)
            self._remember_sink(table, key, new)
            if arguments.get("ReturnValues") == "ALL_OLD" and old is not None:
                return {"Attributes": copy_item(old)}
            return {}

    def update_item(self, **arguments: Any) -> dict[str, Any]:
        self._pause()
        with self._lock:
            self._count("update_item", arguments.get("TableName", ""))
            table, key, old, new, touched = self._plan_update("UpdateItem", arguments)
            assert new is not None
            table.put(key, new)
            self._remember_sink(table, key, new)
            wanted = arguments.get("ReturnValues", "NONE")
            if wanted == "ALL_NEW":
                return {"Attributes": copy_item(new)}
            if wanted == "ALL_OLD":
                return {"Attributes": copy_item(old)} if old else {}
            if wanted == "UPDATED_NEW":
                return {"Attributes": {name: copy_value(new[name]) for name in touched if name in new}}
            if wanted == "UPDATED_OLD":
                source = old or {}
                return {"Attributes": {name: copy_value(source[name]) for name in touched if name in source}}
            return {}

    def delete_item(self, **arguments: Any) -> dict[str, Any]:
        self._pause()
        with self._lock:
            self._count("delete_item", arguments.get("TableName", ""))
            table, key, old = self._plan_delete("DeleteItem", arguments)
            table.delete(key)
            if arguments.get("ReturnValues") == "ALL_OLD" and old is not None:
                return {"Attributes": copy_item(old)}
            return {}

    def transact_write_items(self, **arguments: Any) -> dict[str, Any]:
        self._pause()
        with self._lock:
            operations = arguments["TransactItems"]
            tables = {next(iter(op.values())).get("TableName", "") for op in operations}
            self._count("transact_write_items", ",".join(sorted(tables)))
            if not 1 <= len(operations) <= 100:
                raise ValidationException("TransactWriteItems", "Member must have length between 1 and 100")
            plans: list[tuple[_Table, tuple[str, str], Item | None, bool]] = []  # new item, delete?
            reasons: list[dict[str, Any]] = []
            failed = False
            seen: set[tuple[str, str, str]] = set()
            for operation in operations:
                ((kind, body),) = operation.items()
                table = self._table(body["TableName"], "TransactWriteItems")
                key_item = body["Item"] if kind == "Put" else body["Key"]
                key = table.key_in(key_item, "TransactWriteItems")
                if (table.name, *key) in seen:
                    raise ValidationException(
                        "TransactWriteItems",
                        "Transaction request cannot include multiple operations on one item",
                    )
                seen.add((table.name, *key))
                try:
                    if kind == "Put":
                        table, key, _, new = self._plan_put("TransactWriteItems", body)
                        plans.append((table, key, new, False))
                    elif kind == "Update":
                        table, key, _, new, _ = self._plan_update("TransactWriteItems", body)
                        plans.append((table, key, new, False))
                    elif kind == "Delete":
                        table, key, _ = self._plan_delete("TransactWriteItems", body)
                        plans.append((table, key, None, True))
                    elif kind == "ConditionCheck":
                        parsed = self._parse_all(
                            "TransactWriteItems", body, {"ConditionExpression": "condition"}
                        )
                        self._check_condition("TransactWriteItems", body, parsed, table.get(key))
                    else:
                        raise ValidationException(
                            "TransactWriteItems", f"Unknown transaction operation {kind}"
                        )
                    reasons.append({"Code": "None"})
                except ConditionalCheckFailedException as error:
                    failed = True
                    reason: dict[str, Any] = {
                        "Code": "ConditionalCheckFailed",
                        "Message": "The conditional request failed",
                    }
                    if "Item" in error.response:
                        reason["Item"] = error.response["Item"]
                    reasons.append(reason)
            if failed:
                codes = ", ".join(reason["Code"] for reason in reasons)
                raise TransactionCanceledException(
                    "TransactWriteItems",
                    "Transaction cancelled, please refer cancellation reasons for specific reasons "
                    f"[{codes}]",
                    CancellationReasons=reasons,
                )
            for table, key, new, delete in plans:
                if delete:
                    table.delete(key)
                elif new is not None:
                    table.put(key, new)
                    self._remember_sink(table, key, new)
            return {}

    def query(self, **arguments: Any) -> dict[str, Any]:
        self._pause()
        with self._lock:
            table = self._table(arguments["TableName"], "Query")
            self._count("query", table.name)
            parsed = self._parse_all(
                "Query",
                arguments,
                {"KeyConditionExpression": "condition", "FilterExpression": "condition"},
            )
            key_condition = parsed.get("KeyConditionExpression")
            if key_condition is None:
                raise ValidationException(
                    "Query", "Either the KeyConditions or KeyConditionExpression parameter must be specified"
                )
            env = self._env(arguments)
            index_name = arguments.get("IndexName")
            if index_name is not None:
                index = table.indexes.get(index_name)
                if index is None:
                    raise ValidationException(
                        "Query", f"The table does not have the specified index: {index_name}"
                    )
                partition_key, sort_key = index.partition_key, index.sort_key
            else:
                partition_key, sort_key = table.partition_key, table.sort_key
            allowed = {partition_key, *([sort_key] if sort_key else [])}
            referenced = {env[0].get(name, name) for name in key_condition.refs.names}
            if not referenced <= allowed:
                raise ValidationException("Query", "Query key condition not supported")
            candidates = self._candidates(table, index_name, partition_key, key_condition, env)
            order_keys = [sort_key] if sort_key else []
            order_keys += [name for name in table.key_names() if name not in order_keys]
            candidates.sort(key=lambda item: tuple(_sort_value(item.get(name)) for name in order_keys))
            if arguments.get("ScanIndexForward", True) is False:
                candidates.reverse()
            key_fields = list(
                dict.fromkeys([partition_key, *([sort_key] if sort_key else []), *table.key_names()])
            )
            start = arguments.get("ExclusiveStartKey")
            if start is not None:
                wanted = tuple(_kind(start[name])[1] if name in start else None for name in key_fields)
                for position, item in enumerate(candidates):
                    if tuple(_kind(item[name])[1] for name in key_fields) == wanted:
                        candidates = candidates[position + 1 :]
                        break
            limit = arguments.get("Limit")
            evaluated = candidates[:limit] if limit else candidates
            try:
                matched = [item for item in evaluated if key_condition.condition(item, env)]  # type: ignore[misc]
                filtered = parsed.get("FilterExpression")
                if filtered is not None:
                    matched = [item for item in matched if filtered.condition(item, env)]  # type: ignore[misc]
            except _Invalid as error:
                raise ValidationException("Query", str(error)) from None
            response: dict[str, Any] = {
                "Items": [copy_item(item) for item in matched],
                "Count": len(matched),
                "ScannedCount": len(evaluated),
            }
            if limit and len(candidates) > limit and evaluated:
                last = evaluated[-1]
                response["LastEvaluatedKey"] = {name: copy_value(last[name]) for name in key_fields}
            return response

    def _candidates(
        self, table: _Table, index_name: str | None, partition_key: str, key_condition: _Parsed, env: Env
    ) -> list[Item]:
        partition_values = [
            env[1][value]
            for path, value in key_condition.refs.equalities
            if _resolve(path, env[0]) == [partition_key] and value in env[1]
        ]
        if len(partition_values) != 1:
            raise ValidationException("Query", "Query condition missed key schema element: " + partition_key)
        if index_name is None:
            partition = table.partitions.get(_kind(partition_values[0])[1])
            return list(partition.values()) if partition else []
        wanted = partition_values[0]
        return [item for item in table.items() if _equal(item.get(partition_key), wanted)]

    # -- control plane (bootstrap) ------------------------------------------------------------------

    def create_table(self, **arguments: Any) -> dict[str, Any]:
        with self._lock:
            name = arguments["TableName"]
            if name in self._tables:
                raise ResourceInUseException("CreateTable", f"Table already exists: {name}")
            schema = {entry["KeyType"]: entry["AttributeName"] for entry in arguments["KeySchema"]}
            indexes = []
            for index in arguments.get("GlobalSecondaryIndexes", []):
                keys = {entry["KeyType"]: entry["AttributeName"] for entry in index["KeySchema"]}
                indexes.append((index["IndexName"], keys["HASH"], keys.get("RANGE")))
            self.add_table(name, schema["HASH"], schema.get("RANGE"), indexes)
            return {"TableDescription": {"TableName": name, "TableStatus": "ACTIVE"}}

    def update_time_to_live(self, **arguments: Any) -> dict[str, Any]:
        with self._lock:
            table = self._table(arguments["TableName"], "UpdateTimeToLive")
            table.ttl_attribute = arguments["TimeToLiveSpecification"]["AttributeName"]
            return {"TimeToLiveSpecification": arguments["TimeToLiveSpecification"]}

    def describe_table(self, **arguments: Any) -> dict[str, Any]:
        with self._lock:
            table = self._table(arguments["TableName"], "DescribeTable")
            return {"Table": {"TableName": table.name, "TableStatus": "ACTIVE", "ItemCount": table.count()}}


def tollgate_tables(client: FakeDynamoDB, names: dict[str, str]) -> None:
    """Creates Tollgate's tables (``tollgate.store.schema``) under the given names (schema logical
    name -> table name)."""
    from tollgate.store.schema import ALL_TABLES

    for schema in ALL_TABLES:
        client.add_table(
            names[schema.logical_name],
            schema.partition_key,
            schema.sort_key,
            [(index.name, index.partition_key, index.sort_key) for index in schema.indexes],
        )


class InlineTransport:
    """The ledger's hot-path transport (``tollgate.store.dynamo_http.DynamoTransport``) over the fake,
    called on the event loop: what remains is Tollgate's own cost. The round trip the fake models
    with ``latency`` is awaited here, not slept, as a real network call would be.

    The transport's own cost in production (SigV4 + JSON + an HTTP POST) is measured apart, by
    ``bench/botocore_cost.py``."""

    def __init__(self, fake: FakeDynamoDB) -> None:
        self._fake = fake
        self._latency = fake.latency

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._latency:
            await asyncio.sleep(self._latency)
        return self._fake.call_inline(snake_case(operation), params)

    async def close(self) -> None:
        return None
