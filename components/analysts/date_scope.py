"""The run dates a query can read, so that `fmnist query` opens only those dates' runs.

A query's scope is narrowed only where that cannot change its answer: one SELECT over one of the
date-partitioned views (no join, subquery, CTE or set operation), whose WHERE requires
`run_date` to lie in a range of constant dates (`=`, `<`, `<=`, `>`, `>=`, `BETWEEN`, `IN`,
joined by AND with anything else). Every row such a query can see has a run date in that range,
so views holding only those dates' runs give the same rows. Anything else reads every date.
The statement is read with DuckDB's own parser (`json_serialize_sql`), never by pattern.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import duckdb

from components.contracts.run_index import DateRange
from components.contracts.schema import parse_run_date

DATE_COLUMN = "run_date"
_LOWER = {"COMPARE_GREATERTHAN": 1, "COMPARE_GREATERTHANOREQUALTO": 0}
_UPPER = {"COMPARE_LESSTHAN": 1, "COMPARE_LESSTHANOREQUALTO": 0}
_MIRRORED = {
    "COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
    "COMPARE_LESSTHAN": "COMPARE_GREATERTHAN",
    "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
    "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
    "COMPARE_EQUAL": "COMPARE_EQUAL",
}


def query_dates(statement: str, *, dated_views: tuple[str, ...]) -> DateRange | None:
    """The run dates `statement` can read from `dated_views`; None when it can read any."""
    connection = duckdb.connect()
    try:
        parsed = json.loads(connection.execute("SELECT json_serialize_sql(?)", [statement]).fetchone()[0])
    except (duckdb.Error, TypeError, ValueError):
        return None
    finally:
        connection.close()
    statements = parsed.get("statements") or []
    if parsed.get("error") or len(statements) != 1:
        return None
    node = statements[0].get("node") or {}
    table = node.get("from_table") or {}
    if (
        node.get("type") != "SELECT_NODE"
        or (node.get("cte_map") or {}).get("map")
        or table.get("type") != "BASE_TABLE"
        or table.get("schema_name")
        or table.get("catalog_name")
        or str(table.get("table_name", "")).lower() not in dated_views
        or sum(1 for _ in _nodes(node, "type", "BASE_TABLE")) != 1
        or any(True for _ in _nodes(node, "class", "SUBQUERY"))
    ):
        return None
    names = {str(table["table_name"]).lower(), str(table.get("alias") or "").lower()} - {""}
    first, last = None, None
    for condition in _conjuncts(node.get("where_clause")):
        for low, high in _bounds(condition, names):
            first = low if first is None or (low is not None and low > first) else first
            last = high if last is None or (high is not None and high < last) else last
    return None if first is None and last is None else DateRange(first, last)


def _nodes(tree: Any, key: str, value: str) -> Iterator[dict]:
    """Every dict in `tree` whose `key` is `value`."""
    if isinstance(tree, dict):
        if tree.get(key) == value:
            yield tree
        for child in tree.values():
            yield from _nodes(child, key, value)
    elif isinstance(tree, list):
        for child in tree:
            yield from _nodes(child, key, value)


def _conjuncts(condition: dict | None) -> Iterator[dict]:
    if not condition:
        return
    if condition.get("type") == "CONJUNCTION_AND":
        for child in condition.get("children", []):
            yield from _conjuncts(child)
    else:
        yield condition


def _bounds(condition: dict, names: set[str]) -> Iterator[tuple[datetime.date | None, datetime.date | None]]:
    """The (first, last) run dates one condition allows, if it restricts the date column to constants."""
    kind = condition.get("type")
    if condition.get("class") == "COMPARISON" and kind in _MIRRORED:
        left, right = condition.get("left"), condition.get("right")
        if _is_date_column(right, names):
            left, right, kind = right, left, _MIRRORED[kind]
        day = _date_constant(right)
        if not _is_date_column(left, names) or day is None:
            return
        if kind == "COMPARE_EQUAL":
            yield day, day
        elif kind in _LOWER:
            yield day + datetime.timedelta(days=_LOWER[kind]), None
        else:
            yield None, day - datetime.timedelta(days=_UPPER[kind])
    elif condition.get("class") == "BETWEEN" and _is_date_column(condition.get("input"), names):
        low, high = _date_constant(condition.get("lower")), _date_constant(condition.get("upper"))
        if low is not None and high is not None:
            yield low, high
    elif kind == "COMPARE_IN":
        column, *values = condition.get("children", [None])
        days = [_date_constant(value) for value in values]
        if _is_date_column(column, names) and days and None not in days:
            yield min(days), max(days)


def _is_date_column(expression: Any, names: set[str]) -> bool:
    if not isinstance(expression, dict) or expression.get("class") != "COLUMN_REF":
        return False
    path = [str(name).lower() for name in expression.get("column_names", [])]
    return path == [DATE_COLUMN] or (len(path) == 2 and path[0] in names and path[1] == DATE_COLUMN)


def _date_constant(expression: Any) -> datetime.date | None:
    """The date of a constant 'YYYY-MM-DD' or DATE 'YYYY-MM-DD'; None for anything else."""
    if not isinstance(expression, dict):
        return None
    if expression.get("class") == "CAST":
        if str((expression.get("type_expr") or {}).get("type_name", "")).upper() != "DATE" or expression.get("try_cast"):
            return None
        expression = expression.get("child") or {}
    literal = expression.get("literal") if expression.get("class") == "CONSTANT" else None
    if not isinstance(literal, dict) or literal.get("kind") != "STRING":
        return None
    try:
        return parse_run_date(str(literal.get("text")))
    except ValueError:
        return None
