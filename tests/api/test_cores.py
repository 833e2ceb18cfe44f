"""Tables for the pure cores of the API: request envelope, references, tokens, metrics, health."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from delivery import config
from delivery.api import auth, health, metrics, refs, request
from delivery.api.failures import MethodFailure

CORE = "urn:ietf:params:jmap:core"
X = "urn:stalwart:jmap"


def _calls(n: int) -> list[list[Any]]:
    return [["Core/echo", {}, f"c{i}"] for i in range(n)]


REQUEST_CASES = [  # (label, body, problem type or None, limit name or None)
    ("valid", {"using": [CORE, X], "methodCalls": _calls(1)}, None, None),
    ("createdIds", {"using": [X], "methodCalls": [], "createdIds": {"a": "b"}}, None, None),
    ("not JSON", b"{", "notJSON", None),
    ("not UTF-8", b'{"using": ["\xff"]}', "notJSON", None),
    ("NaN is not I-JSON", b'{"using": [], "methodCalls": [], "x": NaN}', "notJSON", None),
    ("too deep", b"[" * 100_000 + b"]" * 100_000, "notJSON", None),
    ("array", [], "notRequest", None),
    ("no using", {"methodCalls": []}, "notRequest", None),
    ("using not strings", {"using": [1], "methodCalls": []}, "notRequest", None),
    ("no methodCalls", {"using": [X]}, "notRequest", None),
    ("call of two", {"using": [X], "methodCalls": [["a", {}]]}, "notRequest", None),
    ("arguments not object", {"using": [X], "methodCalls": [["a", [], "c"]]}, "notRequest", None),
    ("call id not string", {"using": [X], "methodCalls": [["a", {}, 1]]}, "notRequest", None),
    ("bad createdIds", {"using": [X], "methodCalls": [], "createdIds": []}, "notRequest", None),
    ("unknown capability", {"using": ["urn:ietf:params:jmap:mail"], "methodCalls": []},
     "unknownCapability", None),
    ("too many calls", {"using": [CORE], "methodCalls": _calls(request.MAX_CALLS_IN_REQUEST + 1)},
     "limit", "maxCallsInRequest"),
    ("too large", b" " * (request.MAX_SIZE_REQUEST_BYTES + 1), "limit", "maxSizeRequest"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "body", "problem", "limit"), REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES]
)
def test_parse_request(label: str, body: Any, problem: str | None, limit: str | None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    parsed = request.parse_request(raw)
    if problem is None:
        assert isinstance(parsed, request.Request)
    else:
        assert isinstance(parsed, request.RequestProblem)
        assert (parsed.type, parsed.limit) == (problem, limit)
        document = parsed.to_json()
        assert document["type"] == f"urn:ietf:params:jmap:error:{problem}"
        assert document["status"] == 400 and document["detail"]


RESPONSES: list[refs.Response] = [
    ("x:MtaTlsStrategy/query", {"ids": ["a", "b"]}, "q"),
    ("x:MtaTlsStrategy/get",
     {"list": [{"id": "a", "tags": ["x"]}, {"id": "b", "tags": ["y"]}]}, "g"),
    ("error", {"type": "forbidden"}, "e"),
]  # fmt: skip

REFERENCE_CASES = [  # (label, arguments, expected arguments or failure type)
    ("plain", {"ids": ["z"]}, {"ids": ["z"]}),
    ("ids of a query", {"#ids": {"resultOf": "q", "name": "x:MtaTlsStrategy/query",
                                 "path": "/ids"}}, {"ids": ["a", "b"]}),
    ("star flattens", {"#ids": {"resultOf": "g", "name": "x:MtaTlsStrategy/get",
                                "path": "/list/*/tags"}}, {"ids": ["x", "y"]}),
    ("index", {"#ids": {"resultOf": "g", "name": "x:MtaTlsStrategy/get",
                        "path": "/list/1/id"}}, {"ids": "b"}),
    ("both forms", {"ids": [], "#ids": {"resultOf": "q", "name": "x", "path": "/ids"}},
     "invalidArguments"),
    ("malformed", {"#ids": {"resultOf": "q"}}, "invalidArguments"),
    ("unknown call", {"#ids": {"resultOf": "zz", "name": "x:MtaTlsStrategy/query",
                               "path": "/ids"}}, "invalidResultReference"),
    ("name differs", {"#ids": {"resultOf": "q", "name": "x:MtaTlsStrategy/get",
                               "path": "/ids"}}, "invalidResultReference"),
    ("error response", {"#ids": {"resultOf": "e", "name": "x:MtaTlsStrategy/query",
                                 "path": "/ids"}}, "invalidResultReference"),
    ("bad path", {"#ids": {"resultOf": "q", "name": "x:MtaTlsStrategy/query",
                           "path": "/nope"}}, "invalidResultReference"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "arguments", "expected"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
def test_resolve_references(label: str, arguments: dict[str, Any], expected: Any) -> None:
    resolved = refs.resolve_references(arguments, RESPONSES)
    if isinstance(expected, str):
        assert isinstance(resolved, MethodFailure) and resolved.type == expected
    else:
        assert resolved == expected


def _table() -> auth.TokenTable:
    return auth.TokenTable.from_settings(
        [
            config.ApiToken(name="admin", secret="s3cret", permissions=["*"]),
            config.ApiToken(
                name="reader",
                secret_sha256=hashlib.sha256(b"reader-secret").hexdigest().upper(),
                permissions=["sysMtaTlsStrategyGet"],
            ),
        ]
    )


TOKEN_CASES = [  # (label, Authorization header, principal name or None)
    ("plain secret", "Bearer s3cret", "admin"),
    ("scheme is case-insensitive", "bearer s3cret", "admin"),
    ("sha256 secret, upper-case hex in settings", "Bearer reader-secret", "reader"),
    ("missing", None, None),
    ("wrong", "Bearer s3cre", None),
    ("another scheme", "Basic s3cret", None),
    ("empty token", "Bearer ", None),
    ("over the cap", "Bearer " + "a" * (auth.MAX_TOKEN_CHARS + 1), None),
]


@pytest.mark.parametrize(("label", "header", "name"), TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES])
def test_authenticate(label: str, header: str | None, name: str | None) -> None:
    principal = _table().authenticate(auth.bearer_token(header))
    assert (principal.name if principal else None) == name


def test_permissions() -> None:
    reader = _table().authenticate("reader-secret")
    admin = _table().authenticate("s3cret")
    assert reader is not None and admin is not None
    assert reader.may("sysMtaTlsStrategyGet")
    assert not reader.may("sysMtaTlsStrategyCreate")
    assert not reader.may("sysMtaOutboundStrategyGet")
    assert admin.may("sysMtaOutboundStrategyUpdate")


def test_metrics_text_format() -> None:
    registry = metrics.MetricsRegistry()
    requests = registry.counter("demo_requests_total", "Requests.", ("path", "status"))
    requests.inc(path="/api", status="200")
    requests.inc(2, path="/api", status="200")
    requests.inc(path='a"b\\c\nd', status="401")
    registry.gauge("demo_in_flight", "In flight.").set(1.5)
    registry.gauge_callback("demo_queue", "Queue.", lambda: [(("remote",), 7)], ("queue",))
    assert registry.render().splitlines() == [
        "# HELP demo_in_flight In flight.",
        "# TYPE demo_in_flight gauge",
        "demo_in_flight 1.5",
        "# HELP demo_queue Queue.",
        "# TYPE demo_queue gauge",
        'demo_queue{queue="remote"} 7',
        "# HELP demo_requests_total Requests.",
        "# TYPE demo_requests_total counter",
        'demo_requests_total{path="/api",status="200"} 3',
        'demo_requests_total{path="a\\"b\\\\c\\nd",status="401"} 1',
    ]


@pytest.mark.parametrize(
    "mistake",
    [
        lambda r: r.counter("bad name", "x"),
        lambda r: r.counter("dup_total", "x"),
        lambda r: r.counter("ok_total", "x", ("__reserved",)),
        lambda r: r.counter("dup2_total", "x", ("a",)).inc(b="1"),
        lambda r: r.counter("neg_total", "x").inc(-1),
    ],
    ids=["bad name", "duplicate", "reserved label", "wrong labels", "counter decreases"],
)
def test_metrics_misuse_is_an_error(mistake: Any) -> None:
    registry = metrics.MetricsRegistry()
    registry.counter("dup_total", "x")
    with pytest.raises(ValueError):
        mistake(registry)


async def test_health_report() -> None:
    checks = health.HealthChecks(("store", "dns", "worker"))

    async def ok() -> health.Health:
        return health.Health("ok")

    async def broken() -> health.Health:
        raise OSError("password=hunter2 in a message")

    checks.add("store", ok)
    assert await checks.report() == {
        "status": "ok",
        "checks": {
            "store": {"status": "ok", "detail": ""},
            "dns": {"status": "not-started", "detail": ""},
            "worker": {"status": "not-started", "detail": ""},
        },
    }
    checks.add("dns", broken)
    report = await checks.report()
    assert report["status"] == "failed"
    assert report["checks"] == {
        "store": {"status": "ok", "detail": ""},
        "dns": {"status": "failed", "detail": "check raised OSError"},
        "worker": {"status": "not-started", "detail": ""},
    }
    checks.remove("dns")
    assert (await checks.report())["status"] == "ok"
