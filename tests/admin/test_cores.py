"""Tables for the pure cores of the web admin: CSRF guard, sessions, escaping, schema-driven
forms, SetError placement, and the Strategy page's checks and tries."""

from __future__ import annotations

from typing import Any

import pytest

from delivery import expr
from delivery.admin import expressions, fields, forms, guard, html, sessions
from delivery.api import auth
from delivery.registry import changes, defaults, schema

# --- guard.check_post -------------------------------------------------------------------------

GUARD_CASES = [  # (label, given, origin, host, fetch_site, refused?)
    ("same token, no headers (old browser, script)", "t", None, "a:1", None, False),
    ("same token, same origin", "t", "http://a:1", "a:1", "same-origin", False),
    ("https origin behind a TLS proxy", "t", "https://a:1", "a:1", None, False),
    ("typed by the user", "t", None, "a:1", "none", False),
    ("host compared without case", "t", "http://A:1", "a:1", None, False),
    ("no token", None, "http://a:1", "a:1", "same-origin", True),
    ("empty token", "", None, "a:1", None, True),
    ("another session's token", "u", None, "a:1", None, True),
    ("token prefix", "t"[:0] + "tt", None, "a:1", None, True),
    ("other origin", "t", "http://evil.test", "a:1", None, True),
    ("other port", "t", "http://a:2", "a:1", None, True),
    ("Origin: null (sandbox, no-referrer)", "t", "null", "a:1", None, True),
    ("cross-site fetch", "t", None, "a:1", "cross-site", True),
    ("same-site, other origin", "t", None, "a:1", "same-site", True),
]


@pytest.mark.parametrize(("label", "given", "origin", "host", "site", "refused"), GUARD_CASES)
def test_check_post(
    label: str, given: str | None, origin: str | None, host: str, site: str | None, refused: bool
) -> None:
    outcome = guard.check_post(expected="t", given=given, origin=origin, host=host, fetch_site=site)
    assert (outcome is not None) is refused, label


# --- sessions ---------------------------------------------------------------------------------

PRINCIPAL = auth.Principal("admin", frozenset({"*"}))


def test_session_lives_until_idle_or_lifetime_then_ends() -> None:
    store = sessions.SessionStore(idle_ms=100, lifetime_ms=1000)
    session_id, session = store.open(PRINCIPAL, now=0)
    assert store.find(session_id, now=100) is session  # used at 100: idle clock restarts
    assert store.find(session_id, now=200) is session
    assert store.find(session_id, now=301) is None  # 101 ms idle
    other_id, _ = store.open(PRINCIPAL, now=0)
    for now in range(90, 1000, 90):
        assert store.find(other_id, now=now) is not None
    assert store.find(other_id, now=1001) is None  # busy, but past its lifetime


def test_sessions_are_random_separate_and_closed_on_sign_out() -> None:
    store = sessions.SessionStore()
    first_id, first = store.open(PRINCIPAL, now=0)
    second_id, second = store.open(PRINCIPAL, now=0)
    assert first_id != second_id and first.csrf != second.csrf and len(first_id) >= 43
    assert store.find(first_id[:-1] + "x", now=0) is None
    assert store.find(None, now=0) is None and store.find("", now=0) is None
    store.close(first_id)
    assert store.find(first_id, now=0) is None and store.find(second_id, now=0) is second


def test_least_recently_used_session_ends_beyond_the_cap() -> None:
    store = sessions.SessionStore(max_sessions=2)
    a, _ = store.open(PRINCIPAL, now=0)
    b, _ = store.open(PRINCIPAL, now=0)
    store.find(a, now=1)  # a is now the most recently used
    store.open(PRINCIPAL, now=2)
    assert len(store) == 2 and store.find(b, now=3) is None and store.find(a, now=3) is not None


def test_flashes_are_taken_once_and_capped() -> None:
    _, session = sessions.SessionStore().open(PRINCIPAL, now=0)
    for number in range(sessions.MAX_FLASHES + 3):
        session.flash("ok", str(number))
    taken = session.take_flashes()
    assert [f.text for f in taken][-1] == str(sessions.MAX_FLASHES + 2)
    assert len(taken) == sessions.MAX_FLASHES and session.take_flashes() == []


def test_sign_in_form_token_is_bound_to_the_browser_and_the_daemon() -> None:
    guard_a, guard_b = sessions.SignInGuard(), sessions.SignInGuard()
    cookie = guard_a.new_cookie()
    token = guard_a.form_token(cookie)
    assert guard_a.check(cookie, token)
    assert not guard_a.check(guard_a.new_cookie(), token)  # another browser's cookie
    assert not guard_b.check(cookie, token)  # another daemon (restarted: new key)
    assert not guard_a.check(None, token) and not guard_a.check(cookie, None)


# --- html -------------------------------------------------------------------------------------

HOSTILE = "\"><script>alert('x')</script>&"


def test_text_and_attributes_are_escaped_everywhere() -> None:
    page = html.element("a", {"href": HOSTILE, "title": HOSTILE}, HOSTILE, [HOSTILE, None, 3])
    assert "<script>" not in page and page.count("&lt;script&gt;") == 4
    assert page.startswith('<a href="&quot;&gt;&lt;script&gt;')
    assert html.element("b", None, html.Markup("<i>ok</i>")) == "<b><i>ok</i></b>"


@pytest.mark.parametrize("name", ["a b", "x>", 'on"click', "", "A"])
def test_tag_and_attribute_names_come_only_from_code(name: str) -> None:
    with pytest.raises(ValueError):
        html.element(name)
    with pytest.raises(ValueError):
        html.element("p", {name: "v"})


def test_markup_does_not_concatenate_with_plain_text() -> None:
    with pytest.raises(TypeError):
        html.Markup("<b>") + "<i>"


# --- fields and forms -------------------------------------------------------------------------


def _all_models() -> list[type[schema.WireModel]]:
    return [m for spec in schema.OBJECT_TYPES if not spec.singleton for m in spec.variants.values()]


@pytest.mark.parametrize("model", _all_models(), ids=lambda m: m.__name__)
def test_every_property_of_every_collection_has_an_input(model: type[schema.WireModel]) -> None:
    wire = {info.alias or key for key, info in model.model_fields.items()} - {"@type"}
    assert {field.prop for field in fields.fields_of(model)} == wire


def test_field_kinds_follow_the_schema() -> None:
    tls = {f.prop: f for f in fields.fields_of(schema.TlsStrategyModel)}
    assert tls["startTls"].kind == "choice" and tls["startTls"].choices == (
        "optional",
        "require",
        "disable",
    )
    assert tls["tlsTimeout"].kind == "duration" and tls["tlsTimeout"].default == 180_000
    assert tls["allowInvalidCerts"].kind == "bool" and tls["description"].nullable
    assert tls["name"].required and tls["name"].immutable
    relay = {f.prop: f for f in fields.fields_of(schema.RelayRouteModel)}
    assert (relay["port"].minimum, relay["port"].maximum) == (1, 65535)
    assert [v.tag for v in relay["authSecret"].variants] == ["Value", "EnvironmentVariable", "File"]
    schedule = {f.prop: f for f in fields.fields_of(schema.DeliveryScheduleModel)}
    assert schedule["retry"].kind == "durations" and schedule["expiry"].kind == "variants"
    connection = {f.prop: f for f in fields.fields_of(schema.ConnectionStrategyModel)}
    assert [c.prop for c in connection["sourceIps"].children] == ["sourceIp", "ehloHostname"]


def _model_fields(model: type[schema.WireModel]) -> tuple[fields.Field, ...]:
    return fields.fields_of(model)


ROUND_TRIP_CASES = [  # (model, wire object as /get returns it)
    (
        schema.TlsStrategyModel,
        {
            "name": "strict",
            "description": None,
            "allowInvalidCerts": False,
            "dane": "require",
            "mtaSts": "optional",
            "startTls": "require",
            "mtaStsTimeout": 300_000,
            "tlsTimeout": 90_000,
        },
    ),
    (
        schema.DeliveryScheduleModel,
        {
            "name": "slow",
            "description": "x",
            "queue": "remote",
            "retry": [60_000, 3_600_000],
            "notify": [],
            "expiry": {"@type": "Attempts", "maxAttempts": 5},
        },
    ),
    (
        schema.ConnectionStrategyModel,
        {
            "name": "c",
            "description": None,
            "ehloHostname": None,
            "sourceIps": [
                {"sourceIp": "192.0.2.1", "ehloHostname": "a.example"},
                {"sourceIp": "2001:db8::1", "ehloHostname": None},
            ],
            "connectTimeout": 1000,
            "greetingTimeout": 300_000,
            "ehloTimeout": 300_000,
            "mailFromTimeout": 300_000,
            "rcptToTimeout": 300_000,
            "dataTimeout": 600_000,
        },
    ),
    (
        schema.RelayRouteModel,
        {
            "name": "smarthost",
            "description": None,
            "address": "relay.example",
            "port": 587,
            "protocol": "smtp",
            "implicitTls": False,
            "allowInvalidCerts": True,
            "authUsername": "u",
            "authSecret": {"@type": "Value", "secret": changes.SECRET_MASK},
        },
    ),
]


@pytest.mark.parametrize(
    ("model", "wire"), ROUND_TRIP_CASES, ids=lambda v: getattr(v, "__name__", "")
)
def test_form_round_trip_gives_back_what_the_api_accepts(
    model: type[schema.WireModel], wire: dict[str, Any]
) -> None:
    """/get -> form -> submit unchanged -> the same object, once the API has validated it."""
    form_fields = _model_fields(model)
    values = forms.to_form(form_fields, wire)
    back = forms.from_form(form_fields, values, include_immutable=True)
    data = {"@type": "Relay", **back} if model is schema.RelayRouteModel else back
    assert (
        model.model_validate(data).to_wire()
        == model.model_validate(
            {"@type": "Relay", **wire} if model is schema.RelayRouteModel else wire
        ).to_wire()
    )


def test_durations_are_shown_in_human_form_and_sent_as_typed() -> None:
    tls = _model_fields(schema.TlsStrategyModel)
    values = forms.to_form(tls, {"name": "x", "mtaStsTimeout": 300_000, "tlsTimeout": 1500})
    assert (values["mtaStsTimeout"], values["tlsTimeout"]) == ("5m", "1500ms")
    sent = forms.from_form(tls, {**values, "tlsTimeout": " 90s "}, include_immutable=False)
    assert sent["tlsTimeout"] == "90s" and "name" not in sent  # name is immutable


FORM_CASES = [  # (label, model, form, property, wire value sent)
    (
        "blank duration: its default",
        schema.TlsStrategyModel,
        {"tlsTimeout": ""},
        "tlsTimeout",
        defaults.TLS_TIMEOUT_MS,
    ),
    ("unchecked box is false", schema.TlsStrategyModel, {}, "allowInvalidCerts", False),
    (
        "checked box is true",
        schema.TlsStrategyModel,
        {"allowInvalidCerts": "on"},
        "allowInvalidCerts",
        True,
    ),
    (
        "blank optional text is null",
        schema.TlsStrategyModel,
        {"description": " "},
        "description",
        None,
    ),
    ("integer", schema.MxRouteModel, {"maxMxHosts": "7"}, "maxMxHosts", 7),
    (
        "not an integer: the API says so",
        schema.MxRouteModel,
        {"maxMxHosts": "seven"},
        "maxMxHosts",
        "seven",
    ),
    (
        "durations list",
        schema.DeliveryScheduleModel,
        {"retry": "1m, 5m,,1h"},
        "retry",
        ["1m", "5m", "1h"],
    ),
    (
        "blank rows are no rows",
        schema.ConnectionStrategyModel,
        {"sourceIps.0.sourceIp": "", "sourceIps.0.ehloHostname": ""},
        "sourceIps",
        [],
    ),
    (
        "rows in index order",
        schema.ConnectionStrategyModel,
        {"sourceIps.10.sourceIp": "192.0.2.2", "sourceIps.2.sourceIp": "192.0.2.1"},
        "sourceIps",
        [
            {"sourceIp": "192.0.2.1", "ehloHostname": None},
            {"sourceIp": "192.0.2.2", "ehloHostname": None},
        ],
    ),
    (
        "chosen variant only",
        schema.DeliveryScheduleModel,
        {"expiry.@type": "Ttl", "expiry.Ttl.expire": "2d", "expiry.Attempts.maxAttempts": "3"},
        "expiry",
        {"@type": "Ttl", "expire": "2d"},
    ),
    ("no variant: null", schema.RelayRouteModel, {"authSecret.@type": ""}, "authSecret", None),
    (
        "a secret is sent as typed",
        schema.RelayRouteModel,
        {"authSecret.@type": "Value", "authSecret.Value.secret": " p w "},
        "authSecret",
        {"@type": "Value", "secret": " p w "},
    ),
]


@pytest.mark.parametrize(("label", "model", "form", "prop", "sent"), FORM_CASES)
def test_from_form(
    label: str, model: type[schema.WireModel], form: dict[str, str], prop: str, sent: Any
) -> None:
    assert forms.from_form(_model_fields(model), form, include_immutable=True)[prop] == sent, label


def test_a_secret_is_never_written_into_the_page() -> None:
    relay = _model_fields(schema.RelayRouteModel)
    typed = {"authSecret.@type": "Value", "authSecret.Value.secret": "hunter2"}
    assert "hunter2" not in forms.render_fields(relay, typed, {}, creating=True)
    assert "hunter2" not in forms.render_values(relay, typed)
    masked = {"authSecret.@type": "Value", "authSecret.Value.secret": changes.SECRET_MASK}
    assert changes.SECRET_MASK in forms.render_fields(relay, masked, {}, creating=False)


def test_errors_are_rendered_beside_their_field() -> None:
    tls = _model_fields(schema.TlsStrategyModel)
    page = forms.render_fields(
        tls, {"tlsTimeout": "soon"}, {"tlsTimeout": ["not a duration"]}, creating=True
    )
    box = page.split('id="field-tlsTimeout"')[1].split("</div>")[0]
    assert "not a duration" in box and "invalid" in page.split('id="field-tlsTimeout"')[0][-40:]


ERROR_CASES = [  # (label, SetError, expected placement)
    (
        "two properties, a nested path",
        {
            "type": "invalidProperties",
            "properties": ["tlsTimeout", "retry"],
            "description": "tlsTimeout: 'x' is not a duration; retry/1: must be positive",
        },
        {"tlsTimeout": ["'x' is not a duration"], "retry": ["retry/1: must be positive"]},
    ),
    (
        "a message that contains '; ' stays whole",
        {
            "type": "invalidProperties",
            "properties": ["name"],
            "description": "name: 'a b' is not a valid name: use letters; digits",
        },
        {"name": ["'a b' is not a valid name: use letters; digits"]},
    ),
    (
        "prefix names do not confuse (dane / daneX)",
        {
            "type": "invalidProperties",
            "properties": ["mtaSts", "mtaStsTimeout"],
            "description": "mtaStsTimeout: must be positive; mtaSts: must be one of ...",
        },
        {"mtaStsTimeout": ["must be positive"], "mtaSts": ["must be one of ..."]},
    ),
    (
        "duplicate name",
        {"type": "alreadyExists", "description": "'a' exists"},
        {"name": ["'a' exists"]},
    ),
    (
        "another SetError is for the form",
        {"type": "objectIsLinked", "description": "in use"},
        {"": ["in use"]},
    ),
]


@pytest.mark.parametrize(("label", "error", "expected"), ERROR_CASES)
def test_errors_by_field(label: str, error: dict[str, Any], expected: dict[str, list[str]]) -> None:
    assert forms.errors_by_field(error) == expected, label


# --- the Strategy page's core -----------------------------------------------------------------

HOST, RCPT = expr.Context.HOST, expr.Context.RCPT

CHECK_CASES = [  # (label, expression, context, [(clause, position)])
    ("default tls compiles", defaults.OUTBOUND_TLS, HOST, []),
    (
        "syntax error at its position",
        {"match": [{"if": "retry_num >", "then": "'a'"}], "else": "'b'"},
        HOST,
        [("match[0].if", 11)],
    ),
    (
        "each bad rule, not only the first",
        {"match": [{"if": "nope(1)", "then": "'a'"}, {"if": "1", "then": "'a' +"}], "else": "'b'"},
        HOST,
        [("match[0].if", 0), ("match[1].then", 5)],
    ),
    ("host variable in a rcpt expression", {"match": [], "else": "mx"}, RCPT, [("else", 0)]),
    ("an unquoted name is a variable", {"match": [], "else": "default"}, HOST, [("else", 0)]),
    (
        "capture from the rule's own if",
        {"match": [{"if": "matches('^(.*)@x$', rcpt)", "then": "$1"}], "else": "'b'"},
        RCPT,
        [],
    ),
]


@pytest.mark.parametrize(("label", "expression", "context", "expected"), CHECK_CASES)
def test_check(
    label: str, expression: dict[str, Any], context: expr.Context, expected: list[tuple[str, int]]
) -> None:
    problems = expressions.check(expression, context)
    assert [(p.clause, p.position) for p in problems] == expected, label


def test_rules_from_form_keeps_order_and_drops_blank_rows() -> None:
    form = {"if.3": "b", "then.3": "'y'", "if.1": "a", "then.1": "'x'", "if.2": " ", "else": "'z'"}
    assert expressions.rules_from_form(form) == {
        "match": [{"if": "a", "then": "'x'"}, {"if": "b", "then": "'y'"}],
        "else": "'z'",
    }


SAMPLE_CASES = [  # (label, text, variables, number of problems)
    (
        "numbers, text, arrays",
        'retry_num=2\nlast_error=tls\nrecipients=["a", 1]',
        {"retry_num": 2, "last_error": "tls", "recipients": ["a", 1]},
        0,
    ),
    ("comments and blanks", "# a note\n\nsize = 10 ", {"size": 10}, 0),
    ("unknown variable", "bogus=1", {}, 1),
    ("host variable in rcpt", "mx=a", {}, 1),
    ("no =", "retry_num", {}, 1),
    ("bad array", "recipients=[1,", {}, 1),
    ("array nested past the JSON parser's depth", "recipients=" + "[" * 5000 + "]" * 5000, {}, 1),
    ("array nested past Python's depth", "recipients=" + "[" * 990 + "]" * 990, {}, 1),
]


@pytest.mark.parametrize(
    ("label", "text", "variables", "problems"), SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES]
)
def test_parse_samples(label: str, text: str, variables: dict[str, Any], problems: int) -> None:
    context = RCPT if "rcpt" in label else HOST
    got, messages = expressions.parse_samples(text, context)
    assert (got, len(messages)) == (variables, problems), label


async def test_try_reports_value_selection_and_rule() -> None:
    tls = defaults.OUTBOUND_TLS
    tried = await expressions.try_expression(tls, HOST, "retry_num=1\nlast_error=tls")
    assert (tried.value, tried.selects, tried.matched) == ("invalid-tls", "invalid-tls", 0)
    fresh = await expressions.try_expression(tls, HOST, "retry_num=0")
    assert (fresh.selects, fresh.matched) == ("default", None)
    number = await expressions.try_expression({"match": [], "else": "1 + 1"}, HOST, "")
    assert number.value == 2 and number.selects is None  # not a name: the built-in default


async def test_try_uses_the_daemon_local_domains_and_resolver() -> None:
    route = defaults.OUTBOUND_ROUTE
    env = expr.Environment(local_domains=frozenset({"example.org"}))
    local = await expressions.try_expression(route, RCPT, "rcpt_domain=example.org", env=env)
    assert local.selects == "local"
    dns = {"match": [], "else": "dns_query(rcpt_domain, 'MX')[0]"}
    unanswered = await expressions.try_expression(dns, RCPT, "rcpt_domain=a.test")
    assert not unanswered.ran and "resolver" in unanswered.messages[0]

    async def lookup(name: str, rtype: str) -> expr.Value:
        return [f"10 mx.{name}."]

    answered = await expressions.try_expression(dns, RCPT, "rcpt_domain=a.test", lookup=lookup)
    assert answered.value == "10 mx.a.test."


async def test_try_of_a_bad_expression_gives_its_problems_not_a_value() -> None:
    tried = await expressions.try_expression({"match": [], "else": "'a' +"}, HOST, "nope=1")
    assert not tried.ran and tried.problems[0].clause == "else" and tried.messages
