"""The safe expression language used by conditions, timers, assignees and script tasks.

BPMN is data, not code: a diagram may come from anyone who can edit a file, so nothing in
it reaches Python's ``eval``. Expressions are checked against an AST whitelist when a
definition is deployed (:func:`check_expression`, :func:`check_script`) and evaluated by
simpleeval at run time, which checks again. Allowed: literals, variable names, item access,
attribute access on dictionaries only, arithmetic, comparisons, boolean logic, conditional
expressions, comprehensions over data, and calls to the functions in :data:`FUNCTION_NAMES`.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import simpleeval

from .errors import ExpressionError  # defined there, so importing the error does not import simpleeval

_CAMUNDA_WRAPPED = re.compile(r"^\s*[$#]\{(.*)\}\s*$", re.DOTALL)

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Expression, ast.Module, ast.Expr, ast.Assign, ast.AugAssign,
    ast.Constant, ast.Name, ast.Load, ast.Store, ast.Attribute, ast.Subscript, ast.Slice,
    ast.List, ast.Tuple, ast.Dict, ast.Set,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
    ast.Not, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
)

FUNCTION_NAMES = frozenset({
    "len", "min", "max", "abs", "round", "int", "float", "str", "bool", "sum", "any", "all",
    "sorted", "now", "date", "datetime", "duration",
})


def unwrap(text: str) -> str:
    """Strip a Camunda ``${...}`` wrapper, so ``${amount > 100}`` reads as ``amount > 100``."""
    match = _CAMUNDA_WRAPPED.match(text or "")
    return match.group(1).strip() if match else (text or "").strip()


def _check_tree(tree: ast.AST, source: str) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError(f"'{source}': {type(node).__name__} is not allowed in expressions")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionError(f"'{source}': name '{node.id}' is not allowed (leading underscore)")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(f"'{source}': attribute '{node.attr}' is not allowed")
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            raise ExpressionError(f"'{source}': bytes literals are not allowed")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name)
                                           or node.func.id not in FUNCTION_NAMES):
            called = ast.unparse(node.func)
            raise ExpressionError(
                f"'{source}': calling '{called}' is not allowed; allowed functions: "
                + ", ".join(sorted(FUNCTION_NAMES)) + " (anything else belongs in a handler)")


@lru_cache(maxsize=4096)
def check_expression(text: str) -> ast.Expression:
    """Parse and whitelist one expression; return its AST. Raises ExpressionError."""
    source = unwrap(text)
    if not source:
        raise ExpressionError("empty expression")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"'{source}': syntax error ({exc.msg})") from None
    _check_tree(tree, source)
    return tree


@lru_cache(maxsize=1024)
def check_script(text: str) -> tuple[tuple[str, str | None, ast.Expression], ...]:
    """Parse a script task body: one ``name = expr`` or ``name += expr`` per line.

    Returns ``(target, operator or None, expression AST)`` triples. Anything else raises
    ExpressionError with a message saying to use a handler.
    """
    try:
        module = ast.parse(text or "", mode="exec")
    except SyntaxError as exc:
        raise ExpressionError(f"script line {exc.lineno}: syntax error ({exc.msg})") from None
    steps = []
    for stmt in module.body:
        line = ast.get_source_segment(text, stmt) or ast.unparse(stmt)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target, operator = stmt.targets[0].id, None
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            target, operator = stmt.target.id, type(stmt.op).__name__
        else:
            raise ExpressionError(
                f"script line {stmt.lineno} '{line}': only 'name = expression' or 'name += expression' "
                "is allowed in a script task; register a handler for anything else")
        if target.startswith("_"):
            raise ExpressionError(f"script line {stmt.lineno}: variable '{target}' is not allowed")
        tree = ast.Expression(body=stmt.value)
        _check_tree(tree, line)
        steps.append((target, operator, tree))
    return tuple(steps)


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text.strip())
    if not match or text.strip() in ("P", "PT"):
        raise ExpressionError(f"duration('{text}'): use weeks, days, hours, minutes or seconds (e.g. PT2H)")
    weeks, days, hours, minutes, seconds = (float(g) if g else 0 for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


def _attribute_on_dicts_only(evaluator: simpleeval.SimpleEval, node: ast.Attribute) -> Any:
    value = evaluator._eval(node.value)
    if isinstance(value, Mapping) and not node.attr.startswith("_"):
        try:
            return value[node.attr]
        except KeyError:
            raise ExpressionError(f"no key '{node.attr}'") from None
    raise ExpressionError(f"attribute access '.{node.attr}' is only allowed on dictionaries")


MAX_POWER_BITS = 4096


def _safe_power(base: Any, exponent: Any) -> Any:
    """``**`` whose result stays small: a condition must not spend minutes computing a huge number."""
    if isinstance(base, (int, float)) and isinstance(exponent, (int, float)) and abs(base) > 1 and exponent > 0:
        import math

        if exponent * math.log2(abs(base)) > MAX_POWER_BITS:
            raise ExpressionError(f"{base} ** {exponent} is too large to compute")
    return base ** exponent


def _safe_modulo(left: Any, right: Any) -> Any:
    """``%`` on numbers only: string formatting could build strings of any size."""
    if isinstance(left, (str, bytes)):
        raise ExpressionError("'%' string formatting is not allowed; use str() and +")
    return left % right


_OPERATORS = {**simpleeval.DEFAULT_OPERATORS, ast.Pow: _safe_power, ast.Mod: _safe_modulo}


class _Evaluator(simpleeval.EvalWithCompoundTypes):
    def _eval_attribute(self, node: ast.Attribute) -> Any:
        return _attribute_on_dicts_only(self, node)


class ExpressionEvaluator:
    """Evaluates checked expressions over a mapping of variables.

    ``now`` is a zero-argument callable returning the engine clock's aware datetime, so
    expressions never read the wall clock themselves.
    """

    def __init__(self, now: Callable[[], datetime]):
        self._functions = {
            "len": len, "min": min, "max": max, "abs": abs, "round": round, "int": int,
            "float": float, "str": str, "bool": bool, "sum": sum, "any": any, "all": all,
            "sorted": sorted, "now": now, "date": date.fromisoformat,
            "datetime": datetime.fromisoformat, "duration": _duration,
        }
        self._local = threading.local()

    def _evaluator(self, variables: Mapping[str, Any]) -> _Evaluator:
        """This thread's evaluator with a copy of ``variables`` as its names.

        Built once per thread and reused: building one costs more than most evaluations, and every
        step evaluates due dates, assignees and conditions. Evaluations never nest, and simpleeval
        restores its per-evaluation state (comprehension scopes, the length counter) itself.
        """
        evaluator = getattr(self._local, "evaluator", None)
        if evaluator is None:
            evaluator = self._local.evaluator = _Evaluator(names={}, functions=self._functions,
                                                           operators=_OPERATORS)
        evaluator.names = dict(variables)
        return evaluator

    def evaluate(self, text: str, variables: Mapping[str, Any]) -> Any:
        """Evaluate one expression; raise ExpressionError naming the expression on any failure."""
        tree = check_expression(text)
        evaluator = self._evaluator(variables)
        try:
            return evaluator.eval(unwrap(text), previously_parsed=tree.body)
        except ExpressionError as exc:
            raise ExpressionError(f"'{unwrap(text)}': {exc}") from None
        except simpleeval.NameNotDefined as exc:
            raise ExpressionError(f"'{unwrap(text)}': variable '{exc.name}' is not defined") from None
        except Exception as exc:  # the expression's own error, e.g. 1/0 or a type mismatch
            raise ExpressionError(f"'{unwrap(text)}': {type(exc).__name__}: {exc}") from None

    def execute(self, script: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Run a script task body; return the variables it assigned (``variables`` is updated too)."""
        assigned: dict[str, Any] = {}
        for target, operator, tree in check_script(script):
            evaluator = self._evaluator(variables)
            source = ast.unparse(tree)
            try:
                value = evaluator.eval(source, previously_parsed=tree.body)
                if operator is not None:
                    if target not in variables:
                        raise ExpressionError(f"variable '{target}' is not defined")
                    value = _apply(operator, variables[target], value)
            except ExpressionError as exc:
                raise ExpressionError(f"script '{target} = {source}': {exc}") from None
            except simpleeval.NameNotDefined as exc:
                raise ExpressionError(f"script '{target} = {source}': variable '{exc.name}' is not defined") from None
            except Exception as exc:
                raise ExpressionError(f"script '{target} = {source}': {type(exc).__name__}: {exc}") from None
            variables[target] = value
            assigned[target] = value
        return assigned


def _apply(operator: str, left: Any, right: Any) -> Any:
    """``x op= y`` with the same size limits as the expression operators."""
    operations = {"Add": ast.Add, "Sub": ast.Sub, "Mult": ast.Mult, "Div": ast.Div, "FloorDiv": ast.FloorDiv,
                  "Mod": ast.Mod}
    if operator not in operations:
        raise ExpressionError(f"augmented assignment '{operator}' is not allowed")
    return _OPERATORS[operations[operator]](left, right)
