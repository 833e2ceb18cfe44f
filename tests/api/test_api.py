"""The management API over a real socket: defaults, bad input, auth, query, session, health."""

from __future__ import annotations

from typing import Any

import pytest

from tests.plugins.api import ADMIN_TOKEN, CREATOR_TOKEN, READONLY_TOKEN, USING, RunningApi

TLS_FIELDS = {
    "allowInvalidCerts": False,
    "dane": "optional",
    "mtaSts": "optional",
    "startTls": "optional",
    "mtaStsTimeout": 300_000,
    "tlsTimeout": 180_000,
}

# DESIGN §3, written out here rather than imported: this is the oracle.
OUTBOUND_DEFAULTS = {
    "id": "singleton",
    "connection": {"match": [], "else": "'default'"},
    "route": {
        "match": [{"if": "is_local_domain(rcpt_domain)", "then": "'local'"}],
        "else": "'mx'",
    },
    "schedule": {
        "match": [
            {"if": "is_local_domain(rcpt_domain)", "then": "'local'"},
            {"if": "source == 'dsn'", "then": "'dsn'"},
            {"if": "source == 'report'", "then": "'report'"},
        ],
        "else": "'remote'",
    },
    "tls": {
        "match": [{"if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'"}],
        "else": "'default'",
    },
}


async def create(api: RunningApi, object_type: str, **objects: dict[str, Any]) -> dict[str, Any]:
    _, result, _ = await api.call(f"x:{object_type}/set", {"create": objects})
    return result


async def new_tls(api: RunningApi, name: str, **fields: Any) -> str:
    result = await create(api, "MtaTlsStrategy", n={"name": name, **fields})
    assert "n" in result["created"], result
    identifier: str = result["created"]["n"]["id"]
    return identifier


# --- Defaults of a fresh daemon --------------------------------------------------------------


async def test_fresh_outbound_strategy_is_exactly_the_documented_defaults(
    api: RunningApi,
) -> None:
    _, result, _ = await api.call("x:MtaOutboundStrategy/get", {"ids": None})
    assert result["list"] == [OUTBOUND_DEFAULTS]


async def test_fresh_tls_strategies_are_default_and_invalid_tls(api: RunningApi) -> None:
    _, result, _ = await api.call("x:MtaTlsStrategy/get", {})
    for obj in result["list"]:
        assert isinstance(obj.pop("id"), str)
    assert result["list"] == [
        {"name": "default", "description": None, **TLS_FIELDS},
        {"name": "invalid-tls", "description": None, **TLS_FIELDS, "allowInvalidCerts": True},
    ]


async def test_fresh_collections_hold_the_first_start_objects(api: RunningApi) -> None:
    expected = {
        "MtaRoute": {"mx", "local"},
        "MtaConnectionStrategy": {"default"},
        "MtaVirtualQueue": {"local", "remote", "dsn", "report"},
        "MtaDeliverySchedule": {"local", "remote", "dsn", "report"},
    }
    for object_type, names in expected.items():
        _, result, _ = await api.call(f"x:{object_type}/get", {"properties": ["name"]})
        assert {obj["name"] for obj in result["list"]} == names, object_type


async def test_new_tls_strategy_takes_the_documented_defaults(api: RunningApi) -> None:
    new_id = await new_tls(api, "strict", startTls="require", tlsTimeout="90s")
    _, result, _ = await api.call("x:MtaTlsStrategy/get", {"ids": [new_id]})
    [obj] = result["list"]
    assert obj["name"] == "strict" and obj["startTls"] == "require"
    assert obj["tlsTimeout"] == 90_000 and obj["mtaStsTimeout"] == 300_000
    assert obj["dane"] == "optional" and obj["allowInvalidCerts"] is False


# --- Bad input: SetErrors ---------------------------------------------------------------------

EXPRESSION_ERRORS = [  # (label, expression, text the description must contain)
    ("syntax error", {"else": "'unterminated"}, "tls"),
    ("unknown function", {"else": "no_such_function(rcpt)"}, "no_such_function"),
    ("wrong argument count", {"else": "contains('a')"}, "contains"),
    ("rcpt context has no mx", {"match": [{"if": "mx == 'a'", "then": "'x'"}], "else": "'y'"},
     "mx"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "expression", "mention"), EXPRESSION_ERRORS, ids=[c[0] for c in EXPRESSION_ERRORS]
)
async def test_expression_errors_are_refused(
    api: RunningApi, label: str, expression: dict[str, Any], mention: str
) -> None:
    prop = "route" if label == "rcpt context has no mx" else "tls"
    _, result, _ = await api.call(
        "x:MtaOutboundStrategy/set", {"update": {"singleton": {prop: expression}}}
    )
    error = result["notUpdated"]["singleton"]
    assert error["type"] == "invalidProperties" and error["properties"] == [prop]
    assert mention in error["description"]


TLS_CREATE_ERRORS = [  # (label, object, property at fault)
    ("unknown property", {"name": "a", "startTLS": "require"}, "startTLS"),
    ("wrong type", {"name": "a", "allowInvalidCerts": "yes"}, "allowInvalidCerts"),
    ("number for an enum", {"name": "a", "startTls": 5}, "startTls"),
    ("bad enum", {"name": "a", "dane": "maybe"}, "dane"),
    ("zero duration", {"name": "a", "tlsTimeout": 0}, "tlsTimeout"),
    ("negative duration", {"name": "a", "mtaStsTimeout": -5}, "mtaStsTimeout"),
    ("bad duration text", {"name": "a", "tlsTimeout": "5 parsecs"}, "tlsTimeout"),
    ("missing name", {"startTls": "require"}, "name"),
    ("name not a string", {"name": 7}, "name"),
    ("id is server-set", {"name": "a", "id": "mine"}, "id"),
]


@pytest.mark.parametrize(
    ("label", "obj", "prop"), TLS_CREATE_ERRORS, ids=[c[0] for c in TLS_CREATE_ERRORS]
)
async def test_invalid_tls_strategies_are_refused(
    api: RunningApi, label: str, obj: dict[str, Any], prop: str
) -> None:
    result = await create(api, "MtaTlsStrategy", bad=obj, good={"name": f"ok-{len(label)}"})
    error = result["notCreated"]["bad"]
    assert error["type"] == "invalidProperties"
    assert prop in error["properties"] and prop in error["description"]
    assert "good" in result["created"]  # one bad item does not sink the others


async def test_duplicate_name_is_already_exists(api: RunningApi) -> None:
    result = await create(
        api, "MtaTlsStrategy", dup={"name": "default"}, case={"name": "Invalid-TLS"}
    )
    assert result["notCreated"]["dup"]["type"] == "alreadyExists"
    assert result["notCreated"]["case"]["type"] == "alreadyExists"


async def test_name_cannot_change(api: RunningApi) -> None:
    new_id = await new_tls(api, "fixed")
    _, result, _ = await api.call("x:MtaTlsStrategy/set", {"update": {new_id: {"name": "renamed"}}})
    error = result["notUpdated"][new_id]
    assert error["type"] == "invalidProperties" and error["properties"] == ["name"]


async def test_singleton_refuses_create_and_destroy(api: RunningApi) -> None:
    _, result, _ = await api.call(
        "x:MtaOutboundStrategy/set",
        {"create": {"another": {}}, "destroy": ["singleton"]},
    )
    assert result["notCreated"]["another"]["type"] == "singleton"
    assert result["notDestroyed"]["singleton"]["type"] == "singleton"


async def test_unknown_ids(api: RunningApi) -> None:
    _, result, _ = await api.call(
        "x:MtaTlsStrategy/set",
        {"update": {"nope": {"description": "x"}}, "destroy": ["gone"]},
    )
    assert result["notUpdated"]["nope"]["type"] == "notFound"
    assert result["notDestroyed"]["gone"]["type"] == "notFound"
    _, got, _ = await api.call("x:MtaTlsStrategy/get", {"ids": ["nope"]})
    assert got["notFound"] == ["nope"]


# --- Bad input: method errors -----------------------------------------------------------------

METHOD_ERRORS = [  # (label, method, arguments, error type)
    ("unknown object", "x:MtaNothing/get", {}, "unknownMethod"),
    ("unknown operation", "x:MtaTlsStrategy/changes", {}, "unknownMethod"),
    ("no x: prefix", "MtaTlsStrategy/get", {}, "unknownMethod"),
    ("unknown argument", "x:MtaTlsStrategy/get", {"idz": ["a"]}, "invalidArguments"),
    ("ids not an array", "x:MtaTlsStrategy/get", {"ids": "a"}, "invalidArguments"),
    ("create not an object", "x:MtaTlsStrategy/set", {"create": []}, "invalidArguments"),
    ("destroy not ids", "x:MtaTlsStrategy/set", {"destroy": [1]}, "invalidArguments"),
    ("limit negative", "x:MtaTlsStrategy/query", {"limit": -1}, "invalidArguments"),
    ("position not int", "x:MtaTlsStrategy/query", {"position": "1"}, "invalidArguments"),
    ("accountId not string", "x:MtaTlsStrategy/get", {"accountId": 1}, "invalidArguments"),
    ("state mismatch", "x:MtaTlsStrategy/set",
     {"ifInState": "not-the-state", "destroy": []}, "stateMismatch"),
    ("unsupported filter", "x:MtaTlsStrategy/query", {"filter": {"color": "red"}},
     "unsupportedFilter"),
    ("too many ids", "x:MtaTlsStrategy/get", {"ids": [str(i) for i in range(1001)]},
     "requestTooLarge"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "method", "arguments", "error"), METHOD_ERRORS, ids=[c[0] for c in METHOD_ERRORS]
)
async def test_method_errors(
    api: RunningApi, label: str, method: str, arguments: dict[str, Any], error: str
) -> None:
    responses = await api.jmap([[method, arguments, "a"], ["x:MtaTlsStrategy/get", {}, "b"]])
    assert responses[0][0] == "error" and responses[0][2] == "a"
    assert responses[0][1]["type"] == error and responses[0][1]["description"]
    assert responses[1][0] == "x:MtaTlsStrategy/get"  # later calls still run


async def test_method_needs_its_capability_in_using(api: RunningApi) -> None:
    answer = await api.post(
        {"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["x:MtaTlsStrategy/get", {}, "a"]]}
    )
    [[name, error, _]] = answer.body["methodResponses"]
    assert name == "error" and error["type"] == "unknownMethod"
    assert "urn:stalwart:jmap" in error["description"]


async def test_state_matches_and_changes(api: RunningApi) -> None:
    _, got, _ = await api.call("x:MtaTlsStrategy/get", {"ids": []})
    state = got["state"]
    _, result, _ = await api.call(
        "x:MtaTlsStrategy/set", {"ifInState": state, "create": {"n": {"name": "stateful"}}}
    )
    assert result["oldState"] == state and result["newState"] != state


# --- Permissions -----------------------------------------------------------------------------


async def test_read_only_token_reads_but_cannot_change(api: RunningApi) -> None:
    _, got, _ = await api.call("x:MtaTlsStrategy/get", {}, token=READONLY_TOKEN)
    assert len(got["list"]) == 2
    _, found, _ = await api.call("x:MtaTlsStrategy/query", {}, token=READONLY_TOKEN)
    assert len(found["ids"]) == 2
    name, error, _ = await api.call(
        "x:MtaTlsStrategy/set", {"create": {"n": {"name": "x"}}}, token=READONLY_TOKEN
    )
    assert name == "error" and error["type"] == "forbidden"
    assert "sysMtaTlsStrategyCreate" in error["description"]


async def test_each_set_item_needs_its_own_permission(api: RunningApi) -> None:
    _, found, _ = await api.call("x:MtaTlsStrategy/query", {"filter": {"name": "default"}})
    default_id = found["ids"][0]
    _, result, _ = await api.call(
        "x:MtaTlsStrategy/set",
        {
            "create": {"n": {"name": "made"}},
            "update": {default_id: {"description": "x"}},
            "destroy": [default_id],
        },
        token=CREATOR_TOKEN,
    )
    assert "n" in result["created"]
    assert result["notUpdated"][default_id]["type"] == "forbidden"
    assert result["notDestroyed"][default_id]["type"] == "forbidden"


async def test_get_and_query_without_permission_are_forbidden(api: RunningApi) -> None:
    for method in ("x:MtaOutboundStrategy/get", "x:MtaTlsStrategy/query"):
        name, error, _ = await api.call(method, {}, token=CREATOR_TOKEN)
        assert name == "error" and error["type"] == "forbidden", method


# --- Request-level errors and authentication -------------------------------------------------


@pytest.mark.parametrize(
    ("token", "challenge_error"),
    [(None, False), ("wrong-token", True), (READONLY_TOKEN + "x", True)],
    ids=["no token", "wrong token", "near miss"],
)
async def test_unauthenticated_is_401(
    api: RunningApi, token: str | None, challenge_error: bool
) -> None:
    for path in ("/api", "/.well-known/jmap"):
        if path == "/api":
            answer = await api.post({"using": USING, "methodCalls": []}, token=token)
        else:
            answer = await api.get(path, token=token)
        assert answer.status == 401
        challenge = answer.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="delivery"')
        assert ('error="invalid_token"' in challenge) is challenge_error


REQUEST_ERRORS = [  # (label, body, problem type)
    ("not JSON", b"{not json", "notJSON"),
    ("not a request", b'{"methodCalls": []}', "notRequest"),
    ("unknown capability", b'{"using": ["urn:ietf:params:jmap:mail"], "methodCalls": []}',
     "unknownCapability"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "body", "kind"), REQUEST_ERRORS, ids=[c[0] for c in REQUEST_ERRORS]
)
async def test_request_level_errors(api: RunningApi, label: str, body: bytes, kind: str) -> None:
    answer = await api.post(body)
    assert answer.status == 400
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.body["type"] == f"urn:ietf:params:jmap:error:{kind}"
    assert answer.body["status"] == 400 and answer.body["detail"]


async def test_limits_are_request_level_errors(api: RunningApi) -> None:
    calls = [["Core/echo", {}, str(i)] for i in range(65)]
    answer = await api.post({"using": USING, "methodCalls": calls})
    assert answer.status == 400 and answer.body["limit"] == "maxCallsInRequest"
    answer = await api.post(b"[" + b" " * 1_000_001 + b"]")
    assert answer.status == 400 and answer.body["limit"] == "maxSizeRequest"


# --- References, creation ids, echo ------------------------------------------------------------


async def test_result_reference_and_creation_ids(api: RunningApi) -> None:
    responses = await api.jmap(
        [
            ["x:MtaTlsStrategy/set", {"create": {"k": {"name": "chained"}}}, "s"],
            ["x:MtaTlsStrategy/get", {"ids": ["#k"], "properties": ["name"]}, "g"],
            ["x:MtaTlsStrategy/query", {"filter": {"name": "chain"}}, "q"],
            [
                "x:MtaTlsStrategy/get",
                {"#ids": {"resultOf": "q", "name": "x:MtaTlsStrategy/query", "path": "/ids"}},
                "g2",
            ],
            ["Core/echo", {"hello": [1, 2]}, "e"],
        ]
    )
    new_id = responses[0][1]["created"]["k"]["id"]
    assert responses[1][1]["list"] == [{"id": new_id, "name": "chained"}]
    assert [obj["id"] for obj in responses[3][1]["list"]] == [new_id]
    assert responses[4] == ["Core/echo", {"hello": [1, 2]}, "e"]


async def test_created_ids_are_returned_when_sent(api: RunningApi) -> None:
    answer = await api.post(
        {
            "using": USING,
            "createdIds": {},
            "methodCalls": [["x:MtaTlsStrategy/set", {"create": {"k": {"name": "c1"}}}, "s"]],
        }
    )
    new_id = answer.body["methodResponses"][0][1]["created"]["k"]["id"]
    assert answer.body["createdIds"] == {"k": new_id}


# --- Query -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("and_", "or_", "not_"),
    [("AND", "OR", "NOT"), ("AllOf", "AnyOf", "Not")],
    ids=["RFC 8620 spelling", "reference page spelling"],
)
async def test_query_filters_by_name_and_operators(
    api: RunningApi, and_: str, or_: str, not_: str
) -> None:
    ids = {name: await new_tls(api, name) for name in ("alpha-one", "Alpha-two", "beta")}
    everything = set(ids) | {"default", "invalid-tls"}

    async def names(filter_: Any) -> set[str]:
        responses = await api.jmap(
            [
                ["x:MtaTlsStrategy/query", {"filter": filter_}, "q"],
                [
                    "x:MtaTlsStrategy/get",
                    {
                        "#ids": {"resultOf": "q", "name": "x:MtaTlsStrategy/query", "path": "/ids"},
                        "properties": ["name"],
                    },
                    "g",
                ],
            ]
        )
        assert responses[0][0] != "error", responses[0]
        return {obj["name"] for obj in responses[1][1]["list"]}

    assert await names(None) == everything
    assert await names({"name": "ALPHA"}) == {"alpha-one", "Alpha-two"}
    assert await names({"operator": or_, "conditions": [{"name": "one"}, {"name": "beta"}]}) == {
        "alpha-one",
        "beta",
    }
    assert await names({"operator": and_, "conditions": [{"name": "alpha"}, {"name": "two"}]}) == {
        "Alpha-two"
    }
    assert await names({"operator": not_, "conditions": [{"name": "alpha"}]}) == everything - {
        "alpha-one",
        "Alpha-two",
    }


async def test_query_position_and_limit(api: RunningApi) -> None:
    _, everything, _ = await api.call("x:MtaTlsStrategy/query", {})
    _, page, _ = await api.call("x:MtaTlsStrategy/query", {"position": 1, "limit": 1})
    assert page["ids"] == everything["ids"][1:2]


# --- Session, health, metrics ------------------------------------------------------------------


async def test_session_object(api: RunningApi) -> None:
    answer = await api.get("/.well-known/jmap")
    assert answer.status == 200
    session = answer.body
    assert set(session["capabilities"]) == {"urn:ietf:params:jmap:core", "urn:stalwart:jmap"}
    core = session["capabilities"]["urn:ietf:params:jmap:core"]
    assert core["maxCallsInRequest"] == 64 and core["maxSizeRequest"] == 1_000_000
    account_id = session["primaryAccounts"]["urn:stalwart:jmap"]
    assert session["accounts"][account_id]["isReadOnly"] is False
    assert session["apiUrl"] == api.url + "/api"
    assert session["username"] == "admin" and session["state"]
    reader = (await api.get("/.well-known/jmap", token=READONLY_TOKEN)).body
    assert reader["accounts"][account_id]["isReadOnly"] is True
    _, result, _ = await api.call("x:MtaTlsStrategy/get", {"accountId": account_id, "ids": []})
    assert result["accountId"] == account_id


async def test_healthz_without_token(api: RunningApi) -> None:
    answer = await api.get("/healthz", token=None)
    assert answer.status == 200
    assert answer.body == {
        "status": "ok",
        "checks": {
            "store": {"status": "ok", "detail": ""},
            "dns": {"status": "not-started", "detail": ""},
            "worker": {"status": "not-started", "detail": ""},
        },
    }
    assert ADMIN_TOKEN not in answer.text


async def test_healthz_reports_a_failed_component_with_503(api: RunningApi) -> None:
    from delivery.api import health

    async def down() -> health.Health:
        return health.Health("failed", "resolver 127.0.0.1:53 did not answer")

    api.health_checks.add("dns", down)
    answer = await api.get("/healthz", token=None)
    assert answer.status == 503 and answer.body["status"] == "failed"
    assert answer.body["checks"]["dns"]["detail"] == "resolver 127.0.0.1:53 did not answer"


async def test_metrics_count_requests_by_method_and_status(api: RunningApi) -> None:
    await api.call("x:MtaTlsStrategy/get", {})
    await api.call("x:NoSuch/get", {})
    await api.post(b"nope")
    await api.post({"using": USING, "methodCalls": []}, token=None)
    answer = await api.get("/metrics", token=None)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = answer.text.splitlines()
    assert 'delivery_api_method_calls_total{method="x:MtaTlsStrategy/get",outcome="ok"} 1' in lines
    assert 'delivery_api_method_calls_total{method="unknown",outcome="unknownMethod"} 1' in lines
    assert 'delivery_api_requests_total{path="/api",status="200"} 2' in lines
    assert 'delivery_api_requests_total{path="/api",status="400"} 1' in lines
    assert 'delivery_api_requests_total{path="/api",status="401"} 1' in lines


async def test_wrong_http_method_is_405(api: RunningApi) -> None:
    answer = await api.get("/api")
    assert answer.status == 405
