"""``calculator``: arithmetic the model should not do in its head, evaluated safely.

The expression is parsed with ``ast`` and walked node by node: only numbers, ``+ - * / // % **``,
unary signs, parentheses, a few ``math`` functions and the constants ``pi``, ``e`` and ``tau`` are
accepted. Nothing is passed to ``eval`` or ``exec``; names, attributes, subscripts, keywords and
anything else are refused with a message the model can act on. Sizes are capped so a short
expression cannot build a huge number. It knows nothing about units, variables or the conversation.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable

from langchain_core.tools import ToolException

from plugins.base import plugin

MAX_EXPRESSION_CHARS = 200
MAX_INTEGER_BITS = 4096  # about 1233 decimal digits

OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil, "degrees": math.degrees, "radians": math.radians,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _checked_size(value: Any) -> Any:
    if isinstance(value, complex):
        raise ToolException("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolException("the result is too large (it overflows a float)")
    if isinstance(value, int) and value.bit_length() > MAX_INTEGER_BITS:
        raise ToolException(f"the result is too large (more than {MAX_INTEGER_BITS} bits)")
    return value


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if (abs(base).bit_length() - 1) * exponent > MAX_INTEGER_BITS:  # refuse before computing it
            raise ToolException(f"the result is too large (more than {MAX_INTEGER_BITS} bits)")
    return base ** exponent


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise ToolException(f"{node.value!r} is not a number")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked_size(_power(left, right))
        return _checked_size(OPERATORS[type(node.op)](left, right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolException("'^' is not a power here; write ** (e.g. 2**8)")
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise ToolException(f"unknown name {node.id!r}; the known constants are {sorted(CONSTANTS)}")
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ToolException(f"unknown function {called!r}; the known functions are {sorted(FUNCTIONS)}")
        if node.keywords:
            raise ToolException(f"{node.func.id}() takes positional arguments only")
        arguments = [_evaluate(argument) for argument in node.args]
        try:
            return _checked_size(FUNCTIONS[node.func.id](*arguments))
        except (TypeError, ValueError, OverflowError) as error:
            raise ToolException(f"{ast.unparse(node)}: {error}") from None
    if isinstance(node, ast.Attribute):
        raise ToolException("attribute access (a.b) is not allowed; write sqrt(2), not math.sqrt(2)")
    raise ToolException(f"{type(node).__name__} ({ast.unparse(node)}) is not allowed; use numbers, + - * / // % **, parentheses and the functions")


@plugin
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the result.

    Args:
        expression: Arithmetic such as "(2 + 3) * 4 / 7" or "sqrt(2) * pi". Allowed: numbers,
            + - * / // % ** and parentheses, the functions sqrt, exp, log, log10, log2, sin, cos, tan,
            asin, acos, atan, abs, round, floor, ceil, degrees, radians, and the constants pi, e, tau.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolException(f"the expression is {len(expression)} characters; at most {MAX_EXPRESSION_CHARS} are allowed")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ToolException(f"{expression!r} is not an arithmetic expression: {error.msg}") from None
    try:
        value = _evaluate(tree)
    except ZeroDivisionError:
        raise ToolException(f"{expression!r} divides by zero") from None
    except OverflowError:
        raise ToolException(f"{expression!r}: the result is too large (it overflows a float)") from None
    return f"{value:.15g}" if isinstance(value, float) else str(value)
