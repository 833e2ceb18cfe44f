"""Every curl example of the MtaOutboundStrategy and MtaTlsStrategy reference pages, as written.

The commands below are copied verbatim from the pages. `shlex` applies the shell's quoting
rules, exactly as a user's shell would, and only the URL and ``$TOKEN`` are substituted (the
page single-quotes the header, so a shell would send the letters ``$TOKEN``: that is tested too).
One consequence of the shell is on the outbound /set page: ``'{ ... "'default'" ... }'`` closes
and reopens the single quotes, so the body carries ``"default"`` (a variable name, refused)
instead of the literal ``"'default'"`` (a string): both forms are tested.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from tests.plugins.api import ADMIN_TOKEN, RunningApi

PAGE_URL = "https://mail.example.com/api"

OUTBOUND_GET = """curl -X POST https://mail.example.com/api \\
-H 'Authorization: Bearer $TOKEN' \\
-H 'Content-Type: application/json' \\
-d '{
"methodCalls": [
[
"x:MtaOutboundStrategy/get",
{
"ids": [
"singleton"
]
},
"c1"
]
],
"using": [
"urn:ietf:params:jmap:core",
"urn:stalwart:jmap"
]
}'"""

OUTBOUND_SET = """curl -X POST https://mail.example.com/api \\
-H 'Authorization: Bearer $TOKEN' \\
-H 'Content-Type: application/json' \\
-d '{
"methodCalls": [
[
"x:MtaOutboundStrategy/set",
{
"update": {
"singleton": {
"connection": {
"else": "'default'"
}
}
}
},
"c1"
]
],
"using": [
"urn:ietf:params:jmap:core",
"urn:stalwart:jmap"
]
}'"""

TLS_GET = """curl -X POST https://mail.example.com/api \\
-H 'Authorization: Bearer $TOKEN' \\
-H 'Content-Type: application/json' \\
-d '{
"methodCalls": [
[
"x:MtaTlsStrategy/get",
{
"ids": [
"id1"
]
},
"c1"
]
],
"using": [
"urn:ietf:params:jmap:core",
"urn:stalwart:jmap"
]
}'"""

TLS_CREATE = """curl -X POST https://mail.example.com/api \\
-H 'Authorization: Bearer $TOKEN' \\
-H 'Content-Type: application/json' \\
-d '{
"methodCalls": [
[
"x:MtaTlsStrategy/set",
{
"create": {
"new1": {}
}
},
"c1"
]
],
"using": [
"urn:ietf:params:jmap:core",
"urn:stalwart:jmap"
]
}'"""

TLS_UPDATE = """curl -X POST https://mail.example.com/api \\
-H 'Authorization: Bearer $TOKEN' \\
-H 'Content-Type: application/json' \\
-d '{
"methodCalls": [
[
"x:MtaTlsStrategy/set",
{
"update": {
"id1": {
"description": "updated value"
}
}
},
"c1"
]
],
"using": [
"urn:ietf:params:jmap:core",
"urn:stalwart:jmap"
]
}'"""

TLS_DESTROY = """curl -X POST https://mail.example.com/api \\
-H 'Authorization: Bearer $TOKEN' \\
-H 'Content-Type: application/json' \\
-d '{
"methodCalls": [
[
"x:MtaTlsStrategy/set",
{
"destroy": [
"id1"
]
},
"c1"
]
],
"using": [
"urn:ietf:params:jmap:core",
"urn:stalwart:jmap"
]
}'"""

TLS_QUERY = """curl -X POST https://mail.example.com/api \\
-H 'Authorization: Bearer $TOKEN' \\
-H 'Content-Type: application/json' \\
-d '{
"methodCalls": [
[
"x:MtaTlsStrategy/query",
{
"filter": {
"name": "example"
}
},
"c1"
]
],
"using": [
"urn:ietf:params:jmap:core",
"urn:stalwart:jmap"
]
}'"""


def parse_curl(command: str) -> tuple[str, dict[str, str], str]:
    """(url, headers, body) of a curl command, after the shell's quoting rules."""
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:3] == ["curl", "-X", "POST"]
    url, headers, body = words[3], {}, ""
    options = iter(words[4:])
    for option in options:
        value = next(options)
        if option == "-H":
            name, _, header_value = value.partition(": ")
            headers[name] = header_value
        else:
            assert option == "-d"
            body = value
    return url, headers, body


async def send(
    api: RunningApi,
    command: str,
    *,
    token: str | None = ADMIN_TOKEN,
    id1: str | None = None,
) -> Any:
    """Run a page's curl command against ``api``; returns the single method response."""
    url, headers, body = parse_curl(command)
    assert url == PAGE_URL
    if token is not None:
        headers["Authorization"] = headers["Authorization"].replace("$TOKEN", token)
    if id1 is not None:
        body = body.replace('"id1"', json.dumps(id1))
    answer = await api.post(body.encode(), token=None, headers=headers)
    assert answer.status == 200, answer.text
    [response] = answer.body["methodResponses"]
    assert response[2] == "c1"
    return response


async def test_outbound_get_returns_the_singleton(api: RunningApi) -> None:
    name, result, _ = await send(api, OUTBOUND_GET)
    assert name == "x:MtaOutboundStrategy/get"
    assert [obj["id"] for obj in result["list"]] == ["singleton"]
    assert result["notFound"] == []
    assert isinstance(result["state"], str) and result["accountId"]


async def test_outbound_set_as_the_shell_sends_it_is_refused_clearly(api: RunningApi) -> None:
    _, _, body = parse_curl(OUTBOUND_SET)
    assert '"else": "default"' in body  # the shell ate the inner single quotes
    name, result, _ = await send(api, OUTBOUND_SET)
    assert name == "x:MtaOutboundStrategy/set"
    error = result["notUpdated"]["singleton"]
    assert error["type"] == "invalidProperties"
    assert error["properties"] == ["connection"]
    # The description names the property, the fault and the fix.
    assert error["description"].startswith("connection: ")
    assert "unknown variable 'default'" in error["description"]
    assert "quote it: 'default'" in error["description"]
    _, current, _ = await send(api, OUTBOUND_GET)
    assert current["list"][0]["connection"] == {"match": [], "else": "'default'"}


async def test_outbound_set_with_the_literal_json_updates(api: RunningApi) -> None:
    _, headers, body = parse_curl(OUTBOUND_SET)
    literal = body.replace('"else": "default"', '"else": "\'default\'"')
    headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    answer = await api.post(literal.encode(), token=None, headers=headers)
    [[name, result, call_id]] = answer.body["methodResponses"]
    assert (name, call_id) == ("x:MtaOutboundStrategy/set", "c1")
    assert "singleton" in result["updated"]
    assert not result.get("notUpdated")


async def test_tls_get_of_the_placeholder_id_is_not_found(api: RunningApi) -> None:
    name, result, _ = await send(api, TLS_GET)
    assert name == "x:MtaTlsStrategy/get"
    assert result["list"] == [] and result["notFound"] == ["id1"]


async def test_tls_get_of_a_real_id(api: RunningApi) -> None:
    default_id = await _id_of(api, "default")
    _, result, _ = await send(api, TLS_GET, id1=default_id)
    assert [obj["name"] for obj in result["list"]] == ["default"]


async def test_tls_create_of_an_empty_object_needs_a_name(api: RunningApi) -> None:
    name, result, _ = await send(api, TLS_CREATE)
    assert name == "x:MtaTlsStrategy/set"
    error = result["notCreated"]["new1"]
    assert error["type"] == "invalidProperties" and error["properties"] == ["name"]


async def test_tls_update_of_the_placeholder_id_is_not_found(api: RunningApi) -> None:
    _, result, _ = await send(api, TLS_UPDATE)
    assert result["notUpdated"]["id1"]["type"] == "notFound"


async def test_tls_update_and_destroy_of_a_real_id(api: RunningApi) -> None:
    _, created, _ = await api.call("x:MtaTlsStrategy/set", {"create": {"n": {"name": "example"}}})
    new_id = created["created"]["n"]["id"]
    _, updated, _ = await send(api, TLS_UPDATE, id1=new_id)
    assert new_id in updated["updated"]
    _, got, _ = await send(api, TLS_GET, id1=new_id)
    assert got["list"][0]["description"] == "updated value"
    _, destroyed, _ = await send(api, TLS_DESTROY, id1=new_id)
    assert destroyed["destroyed"] == [new_id]
    _, got, _ = await send(api, TLS_GET, id1=new_id)
    assert got["notFound"] == [new_id]


async def test_tls_destroy_of_the_placeholder_id_is_not_found(api: RunningApi) -> None:
    _, result, _ = await send(api, TLS_DESTROY)
    assert result["notDestroyed"]["id1"]["type"] == "notFound"


async def test_tls_query_by_name(api: RunningApi) -> None:
    name, result, _ = await send(api, TLS_QUERY)
    assert name == "x:MtaTlsStrategy/query" and result["ids"] == []
    _, created, _ = await api.call(
        "x:MtaTlsStrategy/set",
        {"create": {"a": {"name": "example"}, "b": {"name": "Example-2"}, "c": {"name": "x"}}},
    )
    expected = {created["created"][k]["id"] for k in ("a", "b")}
    _, result, _ = await send(api, TLS_QUERY)
    assert set(result["ids"]) == expected


async def test_the_page_token_placeholder_as_the_shell_sends_it_is_401(api: RunningApi) -> None:
    _, headers, body = parse_curl(TLS_GET)
    assert headers["Authorization"] == "Bearer $TOKEN"
    answer = await api.post(body.encode(), token=None, headers=headers)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")


async def _id_of(api: RunningApi, name: str) -> str:
    _, result, _ = await api.call("x:MtaTlsStrategy/query", {"filter": {"name": name}})
    _, got, _ = await api.call("x:MtaTlsStrategy/get", {"ids": result["ids"]})
    [found] = [obj for obj in got["list"] if obj["name"] == name]
    identifier: str = found["id"]
    return identifier
