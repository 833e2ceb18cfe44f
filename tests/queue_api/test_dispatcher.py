"""The dispatcher's handler table: methods beside the registry's, each with its permission."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from delivery.api import auth, metrics, request
from delivery.api.failures import MethodFailure
from delivery.api.methods import Dispatcher, HandlerResult, MethodHandler
from delivery.registry.service import Registry

USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]
ALLOWED = auth.Principal("ops", frozenset({"sysThingFrob"}))
NOBODY = auth.Principal("nobody", frozenset({"sysMtaTlsStrategyGet"}))


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    opened = await Registry.open(f"sqlite:///{tmp_path}/delivery.db")
    try:
        yield opened
    finally:
        await opened.close()


class Frob:
    """A handler that records its calls and answers with its arguments (or fails on demand)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, arguments: dict[str, Any], principal: auth.Principal) -> HandlerResult:
        self.calls.append(arguments)
        if arguments.get("n") == 0:
            raise RuntimeError("a bug in the handler")
        if arguments.get("n") == 1:
            return MethodFailure("invalidArguments", "n must not be 1")
        return {"echo": arguments, "by": principal.name}


SIGNATURE = {"n": (lambda v: isinstance(v, int), "an integer")}


async def answer(dispatcher: Dispatcher, principal: auth.Principal, *calls: Any) -> list[Any]:
    body = json.dumps({"using": USING, "methodCalls": [list(c) for c in calls]}).encode()
    parsed = request.parse_request(body)
    assert isinstance(parsed, request.Request)
    responses: list[Any] = (await dispatcher.run(parsed, principal))["methodResponses"]
    return responses


async def test_a_handler_runs_only_with_its_permission_and_arguments(registry: Registry) -> None:
    frob = Frob()
    handler = MethodHandler("sysThingFrob", frob, SIGNATURE)
    dispatcher = Dispatcher(registry, metrics.MetricsRegistry(), handlers={"x:Thing/frob": handler})
    assert dispatcher.object_types == (*registry.object_types, "Thing")

    [[name, result, _]] = await answer(dispatcher, ALLOWED, ["x:Thing/frob", {"n": 5}, "c"])
    assert name == "x:Thing/frob" and result == {"echo": {"n": 5}, "by": "ops"}

    cases = [  # (principal, arguments, error type, words)
        (NOBODY, {"n": 5}, "forbidden", "sysThingFrob"),
        (ALLOWED, {"m": 5}, "invalidArguments", "unknown argument 'm' for /frob"),
        (ALLOWED, {"n": "5"}, "invalidArguments", "'n' must be an integer"),
        (ALLOWED, {"n": 1}, "invalidArguments", "n must not be 1"),
        (ALLOWED, {"n": 0}, "serverFail", "see the daemon log"),
    ]
    for principal, arguments, kind, words in cases:
        frob.calls.clear()
        [[name, error, _]] = await answer(dispatcher, principal, ["x:Thing/frob", arguments, "c"])
        assert (name, error["type"]) == ("error", kind), arguments
        assert words in error["description"]
        ran = kind in ("serverFail",) or error["description"] == "n must not be 1"
        assert bool(frob.calls) is ran  # refused before it runs: no permission, bad arguments

    [[_, unknown, _]] = await answer(dispatcher, ALLOWED, ["x:Thing/get", {}, "c"])
    assert (
        unknown["type"] == "unknownMethod"
        and "Thing has the methods /frob" in (unknown["description"])
    )


async def test_result_references_reach_handlers(registry: Registry) -> None:
    frob = Frob()
    dispatcher = Dispatcher(
        registry,
        metrics.MetricsRegistry(),
        handlers={"x:Thing/frob": MethodHandler("sysThingFrob", frob, SIGNATURE)},
    )
    reference = {"resultOf": "a", "name": "x:Thing/frob", "path": "/echo/n"}
    responses = await answer(
        dispatcher,
        ALLOWED,
        ["x:Thing/frob", {"n": 7}, "a"],
        ["x:Thing/frob", {"#n": reference}, "b"],
    )
    assert responses[1][1]["echo"] == {"n": 7}


async def test_a_handler_without_signature_gets_the_standard_one(registry: Registry) -> None:
    frob = Frob()
    dispatcher = Dispatcher(
        registry,
        metrics.MetricsRegistry(),
        handlers={"x:Thing/get": MethodHandler("sysThingFrob", frob)},
    )
    [[name, error, _]] = await answer(dispatcher, ALLOWED, ["x:Thing/get", {"n": 1}, "c"])
    assert error["type"] == "invalidArguments" and "'n' for /get" in error["description"]
    [[name, _, _]] = await answer(dispatcher, ALLOWED, ["x:Thing/get", {"ids": None}, "c"])
    assert name == "x:Thing/get"


@pytest.mark.parametrize(
    ("name", "signature", "words"),
    [
        ("Thing/frob", SIGNATURE, "not named x:<Object>/<op>"),
        ("x:Thing", SIGNATURE, "not named x:<Object>/<op>"),
        ("x:MtaTlsStrategy/frob", SIGNATURE, "is a registry object"),
        ("x:Thing/frob", None, "needs a signature"),
    ],
)
async def test_misnamed_handlers_are_refused_at_start(
    registry: Registry, name: str, signature: Any, words: str
) -> None:
    handler = MethodHandler("sysThingFrob", Frob(), signature)
    with pytest.raises(ValueError, match=words):
        Dispatcher(registry, metrics.MetricsRegistry(), handlers={name: handler})
