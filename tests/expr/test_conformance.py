"""Data-driven conformance suite of the expression language (STYLE §13, jmespath style).

Each ``cases/*.json`` file is a list of suites. A suite has ``given`` (the variables), and
optionally ``context`` ("rcpt" or "host", default "host"), ``local_domains`` and
``dns_answers`` (``[name, TYPE, answer]`` triples), and ``cases``. A case has either
``expression`` (one expression) or ``match`` (``[[if, then], ...]``) plus ``else`` (an
IfBlock), and exactly one expected outcome:

    result          the value, compared with its JSON type (1 is not 1.0, 1 is not "1")
    error           {"position": int, "reason_contains": str[, "clause": str]}
    needs_lookup    [name, TYPE]: evaluation asks for that DNS answer

``EXPR_CASES=operators.json`` (or ``operators``) runs one file only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from delivery import expr
from delivery.errors import ExprError
from delivery.expr import functions

CASES_DIR = Path(__file__).parent / "cases"


def _files() -> list[Path]:
    files = sorted(CASES_DIR.glob("*.json"))
    focus = os.environ.get("EXPR_CASES")
    if focus:
        files = [path for path in files if focus in (path.name, path.stem)]
        assert files, f"EXPR_CASES={focus} names no file in {CASES_DIR}"
    return files


def _cases() -> list[Any]:
    params = []
    for path in _files():
        for suite_number, suite in enumerate(json.loads(path.read_text())):
            for case_number, case in enumerate(suite["cases"]):
                text = (
                    case["expression"]
                    if "expression" in case
                    else f"match {case['match']} else {case['else']}"
                )
                case_id = f"{path.stem}[{suite_number}][{case_number}] {text[:60]}"
                params.append(pytest.param(suite, case, id=case_id))
    return params


def same(actual: object, expected: object) -> bool:
    """Equal with the same JSON type at every level (1 != 1.0 != "1", 1 != true)."""
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(map(same, actual, expected))
        )
    return type(actual) is type(expected) and actual == expected


def _environment(suite: dict[str, Any]) -> expr.Environment:
    answers = {(name, rtype): answer for name, rtype, answer in suite.get("dns_answers", [])}
    return expr.Environment(frozenset(suite.get("local_domains", [])), answers)


def _compile(case: dict[str, Any], context: expr.Context) -> expr.Program | expr.IfBlock:
    if "expression" in case:
        return expr.compile_text(case["expression"], context)
    rules = [(rule[0], rule[1]) for rule in case["match"]]
    return expr.compile_if_block(rules, case["else"], context)


@pytest.mark.parametrize(("suite", "case"), _cases())
def test_case(suite: dict[str, Any], case: dict[str, Any]) -> None:
    context = expr.Context(suite.get("context", "host"))
    outcomes = {"result", "error", "needs_lookup"} & case.keys()
    assert len(outcomes) == 1, f"a case has exactly one expected outcome, not {outcomes}"
    if "error" in case:
        with pytest.raises(ExprError) as raised:
            _compile(case, context)
        error = raised.value
        assert error.position == case["error"]["position"], str(error)
        assert case["error"]["reason_contains"] in error.reason, str(error)
        if "clause" in case["error"]:
            assert isinstance(error, expr.ClauseError)
            assert error.clause == case["error"]["clause"]
        return
    program = _compile(case, context)
    if "needs_lookup" in case:
        with pytest.raises(expr.NeedsLookup) as need:
            program.evaluate(suite["given"], _environment(suite))
        assert [need.value.name, need.value.rtype] == case["needs_lookup"]
        return
    actual = program.evaluate(suite["given"], _environment(suite))
    assert same(actual, case["result"]), f"got {actual!r}, expected {case['result']!r}"


def test_every_function_has_cases() -> None:
    """Each function of the table appears in at least one case file."""
    text = "".join(path.read_text() for path in sorted(CASES_DIR.glob("*.json")))
    names = [*functions.FUNCTIONS, *functions.SPECIAL_FORMS]
    missing = [name for name in names if f"{name}(" not in text]
    assert not missing
