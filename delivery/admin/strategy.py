"""Settings › MTA › Outbound › Strategy: the four expressions of MtaOutboundStrategy.

Each expression (connection, route, schedule, tls) is a table of match rules (if / then) and
an else, edited in place: the page script checks every keystroke against the compiler and
marks the clause and position at fault, rows can be added, removed and moved, and a try-it
box evaluates the expression as typed for sample variables. Without the script the same form
works: a blank row to fill, Try and Save buttons. Reset puts back the documented default
(registry/defaults.py).

Routes (under /admin):
    GET  /outbound/strategy                      the page
    POST /outbound/strategy/{prop}               action=save | try (form)
    POST /outbound/strategy/{prop}/reset         the default expression
    POST /outbound/strategy/check                JSON {prop, expression} -> {problems}
    POST /outbound/strategy/try                  JSON {prop, expression, samples} -> Trial

Saving is ``x:MtaOutboundStrategy/set`` through the API: an expression that does not compile
is refused there (and nothing is saved), and shown with the API's message beside the rules.

Security: save and reset need sysMtaOutboundStrategyUpdate (not offered without it, refused by
the API anyway); check and try read nothing and change nothing, but need
sysMtaOutboundStrategyGet like the page. JSON bodies are capped at MAX_JSON_BYTES.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from delivery import expr
from delivery.admin import expressions, layout
from delivery.admin.client import CallError, SetOutcome
from delivery.admin.context import ADMIN_KEY, Visit, call_failed, html_response, refusal, visit_of
from delivery.admin.expressions import (
    BY_PROP,
    STRATEGY_PROPERTIES,
    Problem,
    StrategyProperty,
    Trial,
)
from delivery.admin.html import Markup, element, join, void
from delivery.registry.schema import SINGLETON_ID

__all__ = ["MAX_JSON_BYTES", "PATH", "add_routes", "render_problem"]

PATH: Final = "/outbound/strategy"
TYPE: Final = "MtaOutboundStrategy"
MAX_JSON_BYTES: Final = 64 * 1024
"""Body of a check or try call: four expressions at their longest fit well inside."""

_PROPS_PATTERN: Final = "|".join(p.prop for p in STRATEGY_PROPERTIES)


@dataclass(slots=True)
class PanelState:
    """What one expression's panel shows beyond the saved value."""

    expression: dict[str, Any] | None = None
    """The rules as typed (after a refused save or a try), else the saved ones are shown."""
    samples: str | None = None
    problems: list[Problem] = field(default_factory=list)
    api_error: str | None = None
    trial: Trial | None = None


def render_problem(problem: Problem, /) -> Markup:
    """One compile problem: clause, position and reason, and the text with a caret under it.

    >>> "a &lt;" in render_problem(Problem("else", "a <", 3, "expected a value"))
    True
    """
    caret_line = problem.text + "\n" + " " * problem.position + "^"
    return element(
        "li",
        {"class": "problem", "data-clause": problem.clause},
        element("span", {"class": "clause"}, problem.clause or "expression"),
        f" at position {problem.position}: {problem.reason}",
        element("pre", {"class": "caret"}, caret_line),
    )


def _variables(context: expr.Context) -> Markup:
    names = sorted(expr.variables_of(context))
    return element(
        "details",
        {"class": "variables"},
        element("summary", None, f"Variables of the {context.value} context"),
        element(
            "p",
            {"class": "hint"},
            join(
                [element("code", None, name), ", " if i < len(names) - 1 else ""]
                for i, name in enumerate(names)
            ),
        ),
    )


def _rule_row(index: int, rule: dict[str, Any], *, editable: bool, bad: set[str]) -> Markup:
    cells = [element("td", {"class": "num"}, str(index + 1))]
    for part in ("if", "then"):
        clause = f"match[{index}].{part}"
        value = str(rule.get(part, ""))
        if editable:
            control = void(
                "input",
                {
                    "type": "text",
                    "name": f"{part}.{index}",
                    "value": value,
                    "class": "expr-input",
                    "data-clause": clause,
                    "aria-label": f"rule {index + 1} {part}",
                    "aria-invalid": "true" if clause in bad else None,
                    "spellcheck": "false",
                    "autocomplete": "off",
                },
            )
        else:
            control = join([element("code", None, value), layout.hidden(f"{part}.{index}", value)])
        cells.append(element("td", None, control))
    if editable:
        cells.append(
            element(
                "td",
                {"class": "row-actions"},
                element(
                    "button",
                    {"type": "button", "class": "rule-up", "hidden": True, "title": "Move up"},
                    "↑",
                ),
                element(
                    "button", {"type": "button", "class": "rule-remove", "hidden": True}, "Remove"
                ),
            )
        )
    return element("tr", {"class": "rule", "data-index": index}, cells)


def _trial(trial: Trial | None) -> Markup:
    if trial is None:
        return element("output", {"class": "trial", "aria-live": "polite"})
    if not trial.ran:
        items = [render_problem(p) for p in trial.problems]
        items += [element("li", None, m) for m in trial.messages]
        return element(
            "output", {"class": "trial failed", "aria-live": "polite"}, element("ul", None, items)
        )
    rule = (
        f"rule {trial.matched + 1} matched"
        if trial.matched is not None
        else "no rule matched: else"
    )
    selects = (
        f"selects {trial.selects!r}"
        if trial.selects is not None
        else "not a name: selects the built-in 'default'"
    )
    return element(
        "output",
        {"class": "trial ok", "aria-live": "polite"},
        element("code", {"class": "value"}, json.dumps(trial.value)),
        f" — {rule}; {selects}",
    )


def _panel(
    visit: Visit, spec: StrategyProperty, saved: dict[str, Any], state: PanelState
) -> Markup:
    viewer = visit.viewer
    editable = visit.client.may(TYPE, "Update")
    shown = state.expression if state.expression is not None else saved
    rules = list(shown.get("match") or [])
    bad = {p.clause for p in state.problems}
    rows = [_rule_row(i, r, editable=editable, bad=bad) for i, r in enumerate(rules)]
    if editable:
        rows.append(_rule_row(len(rules), {}, editable=True, bad=set()))  # a blank row to fill
    else_value = str(shown.get("else", ""))
    else_control = (
        void(
            "input",
            {
                "type": "text",
                "name": "else",
                "value": else_value,
                "class": "expr-input",
                "data-clause": "else",
                "aria-label": f"{spec.prop} else",
                "aria-invalid": "true" if "else" in bad else None,
                "spellcheck": "false",
                "autocomplete": "off",
            },
        )
        if editable
        else join([element("code", None, else_value), layout.hidden("else", else_value)])
    )
    table = element(
        "table",
        {"class": "rules"},
        element(
            "thead",
            None,
            element(
                "tr",
                None,
                element("th", None, "#"),
                element("th", None, "if"),
                element("th", None, "then"),
                element("th", None) if editable else None,
            ),
        ),
        element("tbody", None, rows),
        element(
            "tfoot",
            None,
            element(
                "tr",
                None,
                element("th", None, "else"),
                element("td", {"colspan": 3 if editable else 2}, else_control),
            ),
        ),
    )
    samples_id = f"samples-{spec.prop}"
    try_box = element(
        "div",
        {"class": "try"},
        element("label", {"for": samples_id}, "Try it: sample variables, one name=value per line"),
        element(
            "textarea",
            {"id": samples_id, "name": "samples", "rows": 3, "spellcheck": "false"},
            state.samples if state.samples is not None else spec.sample,
        ),
        element(
            "div",
            {"class": "try-row"},
            layout.button("Try it", name="action", value="try"),
            _trial(state.trial),
        ),
    )
    problems = element(
        "div",
        {"class": "problems", "aria-live": "polite"},
        element("p", {"class": "field-errors", "role": "alert"}, state.api_error)
        if state.api_error
        else None,
        element("ul", None, [render_problem(p) for p in state.problems])
        if state.problems
        else None,
    )
    form = layout.post_form(
        viewer,
        f"{layout.BASE}{PATH}/{spec.prop}",
        table,
        element("button", {"type": "button", "class": "rule-add", "hidden": True}, "Add rule")
        if editable
        else None,
        problems,
        element(
            "div",
            {"class": "actions"},
            layout.button("Save", name="action", value="save", kind="primary"),
        )
        if editable
        else None,
        try_box,
        css="expression-form",
    )
    default = spec.default
    default_text = (
        "; ".join(f"if {r['if']} then {r['then']}" for r in default.get("match", []))
        + ("; " if default.get("match") else "")
        + f"else {default['else']}"
    )
    reset = (
        layout.post_form(
            viewer,
            f"{layout.BASE}{PATH}/{spec.prop}/reset",
            layout.button("Reset to default"),
            element("span", {"class": "hint"}, " Default: ", element("code", None, default_text)),
            css="reset",
            confirm=f"Replace the {spec.prop} expression with its default?",
        )
        if editable
        else element("p", {"class": "hint"}, "Default: ", element("code", None, default_text))
    )
    return element(
        "section",
        {
            "class": "expression",
            "id": f"expr-{spec.prop}",
            "data-prop": spec.prop,
            "data-context": spec.context.value,
        },
        element("h2", None, spec.prop),
        element(
            "p",
            None,
            spec.text,
            " Returns the name of an ",
            element("code", None, spec.object_type),
            ".",
        ),
        _variables(spec.context),
        form,
        reset,
    )


async def _saved(visit: Visit) -> dict[str, Any] | CallError:
    found = await visit.client.get(TYPE, [SINGLETON_ID])
    if isinstance(found, CallError):
        return found
    return found[0] if found else {}


async def _render(
    visit: Visit, states: dict[str, PanelState], *, status: int = 200
) -> web.StreamResponse:
    saved = await _saved(visit)
    if isinstance(saved, CallError):
        return call_failed(visit, saved)
    panels = [
        _panel(visit, spec, dict(saved.get(spec.prop) or {}), states.get(spec.prop, PanelState()))
        for spec in STRATEGY_PROPERTIES
    ]
    intro = element(
        "p",
        {"class": "intro"},
        "The four expressions choose, for each recipient and each MX host, the objects that "
        "deliver it. Each is checked by the compiler as you type and again when saved.",
    )
    markup = layout.page(
        visit.viewer,
        title="Strategy",
        current=PATH,
        crumbs=layout.SETTINGS_CRUMBS,
        flashes=visit.session.take_flashes(),
        body=[intro, panels],
    )
    return html_response(markup, status=status)


async def _page(request: web.Request) -> web.StreamResponse:
    return await _render(visit_of(request), {})


def _form_strings(form: Any) -> dict[str, str]:
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def _save_expression(
    visit: Visit, spec: StrategyProperty, expression: dict[str, Any]
) -> SetOutcome | CallError:
    return await visit.client.set_one(TYPE, "update", SINGLETON_ID, {spec.prop: expression})


async def _post(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    spec = BY_PROP[request.match_info["prop"]]
    form = _form_strings(await request.post())
    expression = expressions.rules_from_form(form)
    samples = form.get("samples", spec.sample)
    if form.get("action") == "try":
        if not visit.client.may(TYPE, "Get"):  # as the JSON try: before any dns_query runs
            return refusal(
                visit, "Not allowed", f"this token lacks the sys{TYPE}Get permission", status=403
            )
        admin = request.app[ADMIN_KEY]
        trial = await expressions.try_expression(
            expression, spec.context, samples, env=admin.env, lookup=admin.lookup
        )
        state = PanelState(expression, samples, list(trial.problems), trial=trial)
        return await _render(visit, {spec.prop: state})
    outcome = await _save_expression(visit, spec, expression)
    if isinstance(outcome, CallError):
        return call_failed(visit, outcome)
    if not outcome.ok:
        if outcome.error_type == "forbidden":
            return refusal(visit, "Not allowed", str(outcome.value.get("description")), status=403)
        state = PanelState(
            expression,
            samples,
            expressions.check(expression, spec.context),
            api_error=f"Not saved: {outcome.value.get('description', outcome.error_type)}",
        )
        return await _render(visit, {spec.prop: state}, status=422)
    visit.session.flash("ok", f"Saved the {spec.prop} expression.")
    raise web.HTTPSeeOther(f"{layout.BASE}{PATH}#expr-{spec.prop}")


async def _reset(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    spec = BY_PROP[request.match_info["prop"]]
    outcome = await _save_expression(visit, spec, dict(spec.default))
    if isinstance(outcome, CallError):
        return call_failed(visit, outcome)
    if not outcome.ok:
        status = 403 if outcome.error_type == "forbidden" else 500
        return refusal(visit, "Not reset", str(outcome.value.get("description")), status=status)
    visit.session.flash("ok", f"The {spec.prop} expression is back to its default.")
    raise web.HTTPSeeOther(f"{layout.BASE}{PATH}#expr-{spec.prop}")


async def _json_body(
    request: web.Request,
) -> tuple[StrategyProperty, dict[str, Any], dict[str, Any]] | web.Response:
    visit = visit_of(request)
    if not visit.client.may(TYPE, "Get"):
        return web.json_response({"error": "this token may not read the strategy"}, status=403)
    if (request.content_length or 0) > MAX_JSON_BYTES:
        return web.json_response({"error": "too large"}, status=413)
    body = await request.content.read(MAX_JSON_BYTES + 1)
    if len(body) > MAX_JSON_BYTES:
        return web.json_response({"error": "too large"}, status=413)
    try:
        data = json.loads(body)
    except ValueError:
        return web.json_response({"error": "not JSON"}, status=400)
    if (
        not isinstance(data, dict)
        or data.get("prop") not in BY_PROP
        or not isinstance(data.get("expression"), dict)
    ):
        return web.json_response({"error": "send {prop, expression}"}, status=400)
    expression = data["expression"]
    rules = expression.get("match")
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        return web.json_response(
            {"error": "expression.match must be an array of {if, then}"}, status=400
        )
    return BY_PROP[data["prop"]], expression, data


async def _check(request: web.Request) -> web.StreamResponse:
    parsed = await _json_body(request)
    if isinstance(parsed, web.Response):
        return parsed
    spec, expression, _ = parsed
    problems = expressions.check(expression, spec.context)
    return web.json_response({"ok": not problems, "problems": [p.to_json() for p in problems]})


async def _try(request: web.Request) -> web.StreamResponse:
    parsed = await _json_body(request)
    if isinstance(parsed, web.Response):
        return parsed
    spec, expression, data = parsed
    admin = request.app[ADMIN_KEY]
    samples = data.get("samples")
    trial = await expressions.try_expression(
        expression,
        spec.context,
        samples if isinstance(samples, str) else "",
        env=admin.env,
        lookup=admin.lookup,
    )
    return web.json_response(trial.to_json())


def add_routes(router: web.UrlDispatcher, /) -> None:
    """The Strategy page's routes."""
    router.add_get(PATH, _page)
    router.add_post(f"{PATH}/check", _check)
    router.add_post(f"{PATH}/try", _try)
    router.add_post(f"{PATH}/{{prop:{_PROPS_PATTERN}}}", _post)
    router.add_post(f"{PATH}/{{prop:{_PROPS_PATTERN}}}/reset", _reset)
