"""A safe filter language for replay: ``price > 100 and symbol in ("AAPL", "MSFT")``.

The expression is parsed with :mod:`ast` and compiled into a tree of small
closures; nothing is ever passed to ``eval``. Only these forms are accepted:

* field names of the events (``price``, ``symbol``, ``timestamp``, ...) and
  ``metadata.<key>`` / ``details.<key>`` for keys of those JSON objects;
* literals: numbers, strings, ``True``, ``False``, ``None``, and tuples/lists
  of literals (for ``in``);
* comparisons ``== != < <= > >= in not in is is not`` (chains such as
  ``100 < price <= 200`` included);
* ``and``, ``or``, ``not`` and parentheses.

Semantics, chosen so one expression can filter several event types at once:
a field the event does not have (``price`` on a ``signal``) and a comparison
between values that cannot be ordered (a string with a number) are simply
false, like SQL's NULL, never an error. ``timestamp`` compares with ISO-8601
strings (``timestamp >= "2025-03-01T14:30:00Z"``), which are parsed once.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from silvertine_streams.errors import ActionRefused
from silvertine_streams.events import EVENT_CLASSES, Event, EventType

Predicate = Callable[[Event], bool]
"""Tells whether an event passes the filter."""

MAX_EXPRESSION_CHARS = 2000
MAX_DEPTH = 32
_MISSING: Any = object()
_DICT_FIELDS = frozenset({"metadata", "details"})
_DATETIME_FIELDS = frozenset({"timestamp"})
_ORDERING = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class InvalidFilter(ActionRefused):
    """A ``--where`` expression was refused.

    Attributes:
        expression: the expression as given.
        reason: what is wrong with it, for a person.
    """

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"--where {expression!r}: {reason}")


def known_fields(event_types: Iterable[str] | None = None) -> frozenset[str]:
    """Return the field names of ``event_types`` (all types when None)."""
    types = [EventType(t) for t in event_types] if event_types is not None else list(EventType)
    names: set[str] = {"event_type"}
    for event_type in types:
        names.update(EVENT_CLASSES[event_type].__struct_fields__)
    return frozenset(names)


def compile_where(expression: str, event_types: Iterable[str] | None = None) -> Predicate:
    """Compile a filter expression into a predicate over events.

    Args:
        expression: the filter, e.g. ``'price > 100 and side == "buy"'``.
        event_types: the types that will be filtered; a name that is a field
            of none of them is refused (a typo would otherwise match nothing).

    Raises:
        InvalidFilter: the expression uses a form outside the language, names
            an unknown field, or is not valid syntax.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidFilter(expression[:40] + "...",
                            f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise InvalidFilter(expression, f"not a valid expression ({exc.msg})") from None
    compiler = _Compiler(expression, known_fields(event_types))
    predicate = compiler.boolean(tree.body, depth=0)
    return predicate


class _Compiler:
    """Turns an ``ast`` tree into closures, refusing anything outside the language."""

    def __init__(self, expression: str, fields: frozenset[str]) -> None:
        self.expression = expression
        self.fields = fields

    def refuse(self, reason: str) -> InvalidFilter:
        return InvalidFilter(self.expression, reason)

    # --- boolean structure ---------------------------------------------------

    def boolean(self, node: ast.expr, depth: int) -> Predicate:
        if depth > MAX_DEPTH:
            raise self.refuse(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.BoolOp):
            parts = [self.boolean(value, depth + 1) for value in node.values]
            if isinstance(node.op, ast.And):
                return lambda event: all(part(event) for part in parts)
            return lambda event: any(part(event) for part in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.boolean(node.operand, depth + 1)
            return lambda event: not inner(event)
        if isinstance(node, ast.Compare):
            return self.comparison(node)
        if isinstance(node, ast.Name | ast.Attribute):
            # A bare field is true when present and truthy: `bid`, `metadata.replay`.
            getter = self.value(node)

            def truthy(event: Event) -> bool:
                value = getter(event)
                return value is not _MISSING and bool(value)

            return truthy
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            constant = node.value
            return lambda event: constant
        raise self.refuse(f"{_describe(node)} is not allowed here; use comparisons joined "
                          "by and/or/not")

    def comparison(self, node: ast.Compare) -> Predicate:
        operands = [node.left, *node.comparators]
        links: list[Predicate] = []
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            links.append(self.link(op, left, right))
        if len(links) == 1:
            return links[0]
        return lambda event: all(link(event) for link in links)

    def link(self, op: ast.cmpop, left: ast.expr, right: ast.expr) -> Predicate:
        field = _field_name(left) or _field_name(right)
        as_datetime = field in _DATETIME_FIELDS
        get_left = self.value(left, as_datetime=as_datetime)
        get_right = self.value(right, as_datetime=as_datetime)
        if isinstance(op, ast.Eq | ast.NotEq):
            negate = isinstance(op, ast.NotEq)

            def equal(event: Event) -> bool:
                a, b = get_left(event), get_right(event)
                if a is _MISSING or b is _MISSING:
                    return False
                return bool(a != b) if negate else bool(a == b)

            return equal
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(right, ast.Constant) and right.value is None):
                raise self.refuse("`is` and `is not` only compare with None")
            negate = isinstance(op, ast.IsNot)

            def is_none(event: Event) -> bool:
                a = get_left(event)
                if a is _MISSING:
                    return False
                return (a is not None) if negate else (a is None)

            return is_none
        if isinstance(op, ast.In | ast.NotIn):
            if not isinstance(right, ast.Tuple | ast.List | ast.Set):
                raise self.refuse("`in` needs a literal list, e.g. symbol in (\"AAPL\", \"MSFT\")")
            negate = isinstance(op, ast.NotIn)

            def member(event: Event) -> bool:
                a, b = get_left(event), get_right(event)
                if a is _MISSING:
                    return False
                try:
                    found = a in b
                except TypeError:  # an unhashable value against a set
                    return False
                return (not found) if negate else found

            return member
        compare = _ORDERING.get(type(op))
        if compare is None:  # pragma: no cover - every cmpop is handled above
            raise self.refuse(f"operator {type(op).__name__} is not allowed")

        def ordered(event: Event) -> bool:
            a, b = get_left(event), get_right(event)
            if a is _MISSING or b is _MISSING or a is None or b is None:
                return False
            try:
                return bool(compare(a, b))
            except TypeError:  # e.g. a string against a number: not comparable, so false
                return False

        return ordered

    # --- values ---------------------------------------------------------------

    def value(self, node: ast.expr, *, as_datetime: bool = False) -> Callable[[Event], Any]:
        if isinstance(node, ast.Constant | ast.UnaryOp):
            literal = self.literal(node, as_datetime)
            return lambda event: literal
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = [self.literal(element, as_datetime) for element in node.elts]
            try:
                collection: Any = frozenset(items)
            except TypeError:  # pragma: no cover - literals are hashable
                collection = tuple(items)
            return lambda event: collection
        if isinstance(node, ast.Name):
            return self.field(node.id)
        if isinstance(node, ast.Attribute):
            return self.dict_key(node)
        raise self.refuse(f"{_describe(node)} is not allowed; only field names and literals")

    def literal(self, node: ast.expr, as_datetime: bool) -> Any:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = node.operand
            number = operand.value if isinstance(operand, ast.Constant) else None
            if isinstance(number, int | float) and not isinstance(number, bool):
                return -number if isinstance(node.op, ast.USub) else number
            raise self.refuse("a sign may only stand before a number")
        if not isinstance(node, ast.Constant):
            raise self.refuse(f"{_describe(node)} is not allowed in a list; only literals")
        value = node.value
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise self.refuse(f"literal {value!r} is not allowed")
        if as_datetime and isinstance(value, str):
            return parse_timestamp(value, self.refuse)
        return value

    def field(self, name: str) -> Callable[[Event], Any]:
        if name not in self.fields:
            hint = ", ".join(sorted(self.fields))
            raise self.refuse(f"unknown field {name!r}; fields: {hint}")
        if name == "event_type":
            return lambda event: event.event_type.value
        return _attribute_or_missing(name)

    def dict_key(self, node: ast.Attribute) -> Callable[[Event], Any]:
        path: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            path.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name) or current.id not in _DICT_FIELDS:
            raise self.refuse("only metadata.<key> and details.<key> may use a dot")
        if current.id not in self.fields:
            raise self.refuse(f"unknown field {current.id!r} for these event types")
        path.reverse()
        get_root = _attribute_or_missing(current.id)

        def lookup(event: Event) -> Any:
            value = get_root(event)
            for key in path:
                if not isinstance(value, dict) or key not in value:
                    return _MISSING
                value = value[key]
            return value

        return lookup


def _attribute_or_missing(name: str) -> Callable[[Event], Any]:
    def get(event: Event) -> Any:
        return getattr(event, name, _MISSING)

    return get


def parse_timestamp(text: str, refuse: Callable[[str], Exception] | None = None) -> datetime:
    """Parse an ISO-8601 time; a time without a zone is taken as UTC.

    Raises:
        ValueError: (or what ``refuse`` builds) when ``text`` is not ISO-8601.
    """
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        message = f"{text!r} is not an ISO-8601 time (e.g. 2025-03-01T14:30:00Z)"
        if refuse is not None:
            raise refuse(message) from None
        raise ValueError(message) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _field_name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.BinOp):
        return "arithmetic"
    if isinstance(node, ast.Subscript):
        return "indexing"
    if isinstance(node, ast.Lambda):
        return "a lambda"
    return f"`{ast.unparse(node)}`"
