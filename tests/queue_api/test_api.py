"""``x:QueuedMessage`` over JMAP on a running daemon: shapes, errors, permissions, Session."""

from __future__ import annotations

from typing import Any

from tests.queue_api.conftest import ADMIN, OUTSIDER, READER, QueueDaemon

GET, QUERY, SET = "x:QueuedMessage/get", "x:QueuedMessage/query", "x:QueuedMessage/set"


async def test_session_lists_queued_message_and_read_only_tokens(
    queue_daemon: QueueDaemon,
) -> None:
    d = queue_daemon
    for token, read_only in ((ADMIN, False), (READER, True)):
        headers = {"Authorization": f"Bearer {token}"}
        async with d.http.get(d.url + "/.well-known/jmap", headers=headers) as response:
            jmap_session = await response.json()
        capability = jmap_session["capabilities"]["urn:stalwart:jmap"]
        assert "QueuedMessage" in capability["objectTypes"]
        assert "MtaTlsStrategy" in capability["objectTypes"]
        assert jmap_session["accounts"]["delivery"]["isReadOnly"] is read_only


async def test_get_query_and_set_shapes(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    message_id = await d.deferred("alice@origin.test", "bob@dest.test")

    name, got, _ = await d.call(GET, {"ids": [message_id, "missing"], "properties": ["sender"]})
    assert name == GET and got["notFound"] == ["missing"] and got["state"]
    assert got["list"] == [{"id": message_id, "sender": "alice@origin.test"}]
    _, everything, _ = await d.call(GET, {"ids": None})
    assert [m["id"] for m in everything["list"]] == [message_id]

    _, found, _ = await d.call(QUERY, {"filter": {"status": "deferred"}, "calculateTotal": True})
    assert found["ids"] == [message_id] and found["total"] == 1 and found["position"] == 0
    assert found["canCalculateChanges"] is False
    _, clamped, _ = await d.call(QUERY, {"limit": 5000, "position": 1})
    assert clamped["ids"] == [] and clamped["limit"] == 1000

    _, done, _ = await d.call(
        SET,
        {
            "create": {"n": {"sender": "x@y.test"}},
            "update": {message_id: {"action": "retry"}, "missing": {"action": "cancel"}},
            "destroy": [message_id],
        },
    )
    assert done["notCreated"]["n"]["type"] == "forbidden"
    assert done["notDestroyed"][message_id]["type"] == "forbidden"
    assert done["notUpdated"]["missing"]["type"] == "notFound"
    [bob] = done["updated"][message_id]["recipients"]
    assert bob["address"] == "bob@dest.test" and bob["status"] == "scheduled"


async def test_method_errors(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    cases: list[tuple[str, dict[str, Any], str, str]] = [  # (method, arguments, type, words)
        (GET, {"properties": ["subject"]}, "invalidArguments", "'subject'"),
        (GET, {"ids": "abc"}, "invalidArguments", "'ids' must be an array"),
        (QUERY, {"filter": {"operator": "OR", "conditions": []}}, "unsupportedFilter", "AND"),
        (QUERY, {"filter": {"dueBefore": "soon"}}, "unsupportedFilter", "dueBefore"),
        (QUERY, {"sort": [{"property": "size"}]}, "unsupportedSort", "arrival order"),
        (QUERY, {"position": -1}, "invalidArguments", "position"),
        (QUERY, {"anchor": "x"}, "invalidArguments", "'anchor'"),
        (SET, {"ifInState": "1"}, "stateMismatch", "ifInState"),
        ("x:QueuedMessage/changes", {}, "unknownMethod", "/get, /query, /set"),
    ]
    for method, arguments, kind, words in cases:
        name, error, _ = await d.call(method, arguments)
        assert (name, error["type"]) == ("error", kind), (method, arguments, error)
        assert words in error["description"], error


async def test_set_errors_per_message(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    delivered = await d.submit("carol@origin.test", "erin@ok.test")
    await d.settled("erin@ok.test")
    _, done, _ = await d.call(
        SET,
        {
            "update": {
                delivered: {"action": "retry"},
                "other": {"action": "remove"},
                "third": {"action": "retry", "priority": 9},
            }
        },
    )
    refused = done["notUpdated"]
    assert refused[delivered]["type"] == "notScheduled"
    assert "erin@ok.test delivered" in refused[delivered]["description"]
    assert refused["other"] == {
        "type": "invalidProperties",
        "description": "action must be one of retry, cancel, cancelSilently, not 'remove'",
        "properties": ["action"],
    }
    assert refused["third"]["properties"] == ["priority"]
    assert done["updated"] is None


async def test_each_method_needs_its_permission(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    message_id = await d.deferred("alice@origin.test", "bob@dest.test")
    update = {"update": {message_id: {"action": "cancel"}}}
    cases: list[tuple[str, str, dict[str, Any], str | None]] = [  # None: allowed
        (READER, GET, {"ids": [message_id]}, None),
        (READER, QUERY, {}, None),
        (READER, SET, update, "sysQueuedMessageUpdate"),
        (OUTSIDER, GET, {"ids": [message_id]}, "sysQueuedMessageGet"),
        (OUTSIDER, QUERY, {}, "sysQueuedMessageQuery"),
        (OUTSIDER, SET, update, "sysQueuedMessageUpdate"),
    ]
    for token, method, arguments, needed in cases:
        name, answer, _ = await d.call(method, arguments, token=token)
        if needed is None:
            assert name == method, answer
        else:
            assert (name, answer["type"]) == ("error", "forbidden"), (token, method)
            assert needed in answer["description"]
    [bob] = (await d.message(message_id))["recipients"]
    assert bob["status"] == "scheduled"  # the refused cancel changed nothing
    assert d.lab.mx("mx1.origin.test").received == []
