"""A small synchronous JMAP client for the CLI: one request, one response, clear errors.

    client = ApiClient("http://127.0.0.1:8080", token)
    result = client.call("x:MtaTlsStrategy/get", {"ids": None})

`ApiClient.request()` sends method calls and returns the method responses; `call()` sends one
and returns its arguments. Uses the standard library only, so `delivery get` starts fast.

Outcomes:
    ApiUnreachable  connection refused, timeout, DNS failure: names the URL
    ApiRejected     HTTP 401 (the token), 400 problem (the request), or another status
    MethodRefused   the method answered ["error", {type, description}]: names the method
    All derive from ClientError (a DeliveryError); the CLI prints them and exits 1.

Security:
    The token is sent only in the Authorization header, never printed. Plain HTTP: the API is
    meant for loopback or a management network (see api/app.py).

Limits: REQUEST_TIMEOUT_S bounds each request.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from delivery.errors import DeliveryError

__all__ = [
    "REQUEST_TIMEOUT_S",
    "USING",
    "ApiClient",
    "ApiRejected",
    "ApiUnreachable",
    "ClientError",
    "MethodRefused",
    "api_url",
]

REQUEST_TIMEOUT_S = 30.0
"""Longest wait for one API answer: registry calls take milliseconds; this catches a hang."""

USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]


class ClientError(DeliveryError):
    """The API could not be used or refused the request; ``str()`` is the message to print."""


class ApiUnreachable(ClientError):
    """No HTTP answer from the API (connection refused, timeout, name not found)."""


class ApiRejected(ClientError):
    """The API answered with an HTTP error (401 token, 400 request-level problem, ...)."""

    def __init__(self, status: int, message: str, /) -> None:
        super().__init__(message)
        self.status = status


class MethodRefused(ClientError):
    """A method answered with a method-level error (RFC 8620 §3.6.2)."""

    def __init__(self, method: str, type: str, description: str, /) -> None:
        super().__init__(f"{method} refused ({type}): {description}")
        self.method, self.type, self.description = method, type, description


def api_url(url: str, /) -> str:
    """The JMAP endpoint for a base URL or an endpoint URL.

    >>> api_url("http://127.0.0.1:8080"), api_url("http://h:1/api"), api_url("h:1/")
    ('http://127.0.0.1:8080/api', 'http://h:1/api', 'http://h:1/api')
    """
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    return url if url.endswith("/api") else url + "/api"


class ApiClient:
    """Sends JMAP requests to one API endpoint with one token (or none)."""

    def __init__(self, url: str, token: str | None, /) -> None:
        self.url = api_url(url)
        self._token = token

    def request(self, calls: Sequence[tuple[str, dict[str, Any], str]], /) -> list[Any]:
        """Send ``calls`` in one request; returns the ``methodResponses`` array."""
        body = json.dumps({"using": USING, "methodCalls": [list(call) for call in calls]}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        http_request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=REQUEST_TIMEOUT_S) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            raise self._rejected(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                reason = "connection refused (is `delivery serve` running there?)"
            elif isinstance(reason, socket.timeout | TimeoutError):
                reason = f"no answer within {REQUEST_TIMEOUT_S:g}s"
            raise ApiUnreachable(f"cannot reach the API at {self.url}: {reason}") from None
        except ValueError as exc:
            raise ApiRejected(200, f"the API at {self.url} answered non-JSON: {exc}") from None
        responses = answer.get("methodResponses") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            raise ApiRejected(200, f"the API at {self.url} answered without methodResponses")
        return responses

    def call(self, method: str, arguments: dict[str, Any], /) -> dict[str, Any]:
        """Send one method call; returns its response arguments.

        :raises MethodRefused: the method answered with an error.
        """
        return self.calls([(method, arguments)])[0]

    def calls(self, calls: Sequence[tuple[str, dict[str, Any]]], /) -> list[dict[str, Any]]:
        """Send method calls (call ids ``c0``, ``c1``...); returns each one's arguments.

        :raises MethodRefused: for the first call that answered with an error.
        """
        responses = self.request([(m, a, f"c{i}") for i, (m, a) in enumerate(calls)])
        results = []
        for (method, _), response in zip(calls, responses, strict=False):
            name, arguments = response[0], response[1]
            if name == "error":
                raise MethodRefused(
                    method,
                    str(arguments.get("type", "unknown")),
                    str(arguments.get("description", "")),
                )
            results.append(arguments)
        return results

    def _rejected(self, exc: urllib.error.HTTPError) -> ApiRejected:
        try:
            problem = json.loads(exc.read() or b"{}")
        except ValueError:
            problem = {}
        detail = problem.get("detail") if isinstance(problem, dict) else None
        if exc.code == 401:
            hint = (
                "the token was refused"
                if self._token
                else "no token given: use --token or set DELIVERY_TOKEN"
            )
            return ApiRejected(401, f"the API at {self.url} answered 401 Unauthorized: {hint}")
        kind = problem.get("type", "") if isinstance(problem, dict) else ""
        text = f"{kind.rsplit(':', 1)[-1]}: {detail}" if detail else exc.reason
        return ApiRejected(exc.code, f"the API at {self.url} answered {exc.code}: {text}")
