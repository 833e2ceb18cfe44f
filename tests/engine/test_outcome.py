"""The error policy as a table (Postfix PTEST_CASE style): failure, final host -> disposition."""

from __future__ import annotations

from typing import Literal, get_args

import pytest

from delivery.engine import attempt, outcome
from delivery.engine.outcome import Disposition, Failure, RouteProblem, Stage
from delivery.errors import LastError
from delivery.smtp import errors as smtp_errors

NEXT, DEFER, BOUNCE = Disposition.TRY_NEXT_HOST, Disposition.DEFER, Disposition.BOUNCE
MORE_HOSTS, FINAL_HOST = False, True


def reply(stage: Stage, code: int, text: str = "") -> Failure:
    text = text or {4: "4.3.0 try again later", 5: "5.7.1 rejected"}.get(code // 100, "huh")
    return outcome.reply_failure(
        stage, code, text, remote_host="mx1.example", remote_ip="192.0.2.1"
    )


def transport(stage: Stage, problem: Literal["timeout", "refused", "lost"]) -> Failure:
    return outcome.transport_failure(
        stage, problem, remote_host="mx1.example", remote_ip="192.0.2.1"
    )


def tls() -> Failure:
    return outcome.tls_failure(
        "mx1.example[192.0.2.1] presented an expired certificate",
        remote_host="mx1.example",
        remote_ip="192.0.2.1",
    )


def violation(
    kind: Literal[LastError.TLS, LastError.DANE, LastError.MTA_STS],
    stage: Literal[Stage.POLICY, Stage.HOST, Stage.STARTTLS] = Stage.STARTTLS,
) -> Failure:
    return outcome.policy_violation(
        kind,
        "DANE TLSA records for mx1.example do not match its certificate",
        stage=stage,
        remote_host=None if stage is Stage.POLICY else "mx1.example",
    )


def absent(kind: Literal[LastError.DANE, LastError.MTA_STS], host: str | None) -> Failure:
    return outcome.policy_absent(
        kind, "mtaSts is require but example.com publishes no MTA-STS policy", remote_host=host
    )


def requiretls(status: str) -> Failure:
    return outcome.policy_absent(
        LastError.TLS,
        "the message requires TLS to an authenticated host (REQUIRETLS)",
        remote_host="mx1.example",
        remote_ip="192.0.2.1",
        status=status,
    )


def route(problem: RouteProblem) -> Failure:
    return outcome.route_failure(problem, "example.com")


CASES: list[tuple[str, Failure, bool, Disposition]] = [
    # label, failure, final_host, expected
    # Rule 4: site failures skip the host, then defer, whatever the reply class.
    ("connect refused, more MX left", transport(Stage.CONNECT, "refused"), MORE_HOSTS, NEXT),
    ("connect refused, final MX", transport(Stage.CONNECT, "refused"), FINAL_HOST, DEFER),
    ("connect timeout, final MX", transport(Stage.CONNECT, "timeout"), FINAL_HOST, DEFER),
    ("4xx greeting, more MX left", reply(Stage.GREETING, 421), MORE_HOSTS, NEXT),
    ("4xx greeting, final MX", reply(Stage.GREETING, 421), FINAL_HOST, DEFER),
    ("5xx greeting, more MX left", reply(Stage.GREETING, 554), MORE_HOSTS, NEXT),
    ("5xx greeting is never a bounce", reply(Stage.GREETING, 554), FINAL_HOST, DEFER),
    ("4xx EHLO, more MX left", reply(Stage.EHLO, 451), MORE_HOSTS, NEXT),
    ("4xx EHLO, final MX", reply(Stage.EHLO, 451), FINAL_HOST, DEFER),
    ("5xx EHLO, more MX left", reply(Stage.EHLO, 550), MORE_HOSTS, NEXT),
    ("5xx EHLO, final MX", reply(Stage.EHLO, 550), FINAL_HOST, DEFER),
    ("4xx STARTTLS, more MX left", reply(Stage.STARTTLS, 454), MORE_HOSTS, NEXT),
    ("4xx STARTTLS, final MX", reply(Stage.STARTTLS, 454), FINAL_HOST, DEFER),
    ("5xx STARTTLS, more MX left", reply(Stage.STARTTLS, 554), MORE_HOSTS, NEXT),
    ("5xx STARTTLS, final MX", reply(Stage.STARTTLS, 554), FINAL_HOST, DEFER),
    ("bad certificate, more MX left", tls(), MORE_HOSTS, NEXT),
    ("bad certificate, final MX", tls(), FINAL_HOST, DEFER),
    ("4xx AUTH, final relay", reply(Stage.AUTH, 454), FINAL_HOST, DEFER),
    ("5xx AUTH is our credentials, not the mail", reply(Stage.AUTH, 535), FINAL_HOST, DEFER),
    ("5xx AUTH, more hosts left", reply(Stage.AUTH, 535), MORE_HOSTS, NEXT),
    # Rule 6: the transaction and its recipients.
    ("4xx MAIL, more MX left", reply(Stage.MAIL, 451), MORE_HOSTS, NEXT),
    ("4xx MAIL, final MX", reply(Stage.MAIL, 451), FINAL_HOST, DEFER),
    ("5xx MAIL, more MX left", reply(Stage.MAIL, 550), MORE_HOSTS, BOUNCE),
    ("5xx MAIL, final MX", reply(Stage.MAIL, 550), FINAL_HOST, BOUNCE),
    ("4xx RCPT, more MX left", reply(Stage.RCPT, 451), MORE_HOSTS, NEXT),
    ("4xx RCPT, final MX", reply(Stage.RCPT, 451), FINAL_HOST, DEFER),
    ("5xx RCPT, more MX left", reply(Stage.RCPT, 550), MORE_HOSTS, BOUNCE),
    ("5xx RCPT, final MX", reply(Stage.RCPT, 550), FINAL_HOST, BOUNCE),
    ("4xx DATA, more MX left", reply(Stage.DATA, 451), MORE_HOSTS, NEXT),
    ("4xx DATA, final MX", reply(Stage.DATA, 451), FINAL_HOST, DEFER),
    ("5xx DATA, more MX left", reply(Stage.DATA, 554), MORE_HOSTS, BOUNCE),
    ("5xx DATA, final MX", reply(Stage.DATA, 554), FINAL_HOST, BOUNCE),
    ("4xx end of data, more MX left", reply(Stage.DOT, 452), MORE_HOSTS, NEXT),
    ("4xx end of data, final MX", reply(Stage.DOT, 452), FINAL_HOST, DEFER),
    ("5xx end of data, more MX left", reply(Stage.DOT, 552), MORE_HOSTS, BOUNCE),
    ("5xx end of data, final MX", reply(Stage.DOT, 552), FINAL_HOST, BOUNCE),
    ("protocol error at RCPT bounces", reply(Stage.RCPT, 354, "go ahead"), FINAL_HOST, BOUNCE),
    ("protocol error at greeting skips", reply(Stage.GREETING, 220 + 1, "?"), FINAL_HOST, DEFER),
    # Rule 5: a broken session defers whatever the step.
    ("421 at RCPT closes the session", reply(Stage.RCPT, 421), MORE_HOSTS, NEXT),
    ("421 at RCPT, final MX", reply(Stage.RCPT, 421), FINAL_HOST, DEFER),
    ("timeout at RCPT, more MX left", transport(Stage.RCPT, "timeout"), MORE_HOSTS, NEXT),
    ("connection lost after dot, final MX", transport(Stage.DOT, "lost"), FINAL_HOST, DEFER),
    ("timeout at EHLO, final MX", transport(Stage.EHLO, "timeout"), FINAL_HOST, DEFER),
    # Rule 1: policy violations are never permanent.
    ("DANE mismatch is never a bounce", violation(LastError.DANE), FINAL_HOST, DEFER),
    ("DANE mismatch, more MX left", violation(LastError.DANE), MORE_HOSTS, NEXT),
    ("TLS missing under a policy", violation(LastError.TLS), FINAL_HOST, DEFER),
    ("MX not in MTA-STS policy", violation(LastError.MTA_STS, Stage.HOST), MORE_HOSTS, NEXT),
    ("no MX matches MTA-STS policy", violation(LastError.MTA_STS, Stage.POLICY), MORE_HOSTS, DEFER),
    # Rule 2: a required policy that does not exist is permanent.
    ("no MTA-STS policy under require", absent(LastError.MTA_STS, None), FINAL_HOST, BOUNCE),
    ("no MTA-STS policy, hosts moot", absent(LastError.MTA_STS, None), MORE_HOSTS, BOUNCE),
    ("no usable TLSA, more MX left", absent(LastError.DANE, "mx1.example"), MORE_HOSTS, NEXT),
    ("no usable TLSA, final MX", absent(LastError.DANE, "mx1.example"), FINAL_HOST, BOUNCE),
    ("REQUIRETLS, no host authenticated", requiretls("5.7.10"), FINAL_HOST, BOUNCE),
    ("REQUIRETLS not offered, more MX left", requiretls("5.7.30"), MORE_HOSTS, NEXT),
    ("REQUIRETLS not offered, final MX", requiretls("5.7.30"), FINAL_HOST, BOUNCE),
    # Rule 3: the domain itself.
    ("null MX", route(RouteProblem.NULL_MX), FINAL_HOST, BOUNCE),
    ("NXDOMAIN", route(RouteProblem.NO_SUCH_DOMAIN), FINAL_HOST, BOUNCE),
    ("MX hosts without address", route(RouteProblem.NO_ADDRESS), FINAL_HOST, BOUNCE),
    ("DNS TEMPFAIL", route(RouteProblem.TEMPFAIL), FINAL_HOST, DEFER),
    ("DNS TEMPFAIL, final_host is moot", route(RouteProblem.TEMPFAIL), MORE_HOSTS, DEFER),
]


@pytest.mark.parametrize(
    ("label", "failure", "final_host", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(label: str, failure: Failure, final_host: bool, expected: Disposition) -> None:
    decision = outcome.decide(failure, final_host=final_host)
    assert decision.disposition is expected, f"{label}: {decision.why}"


# label, failure at the final host, an earlier host failed only for now, expected
ACROSS_HOSTS: list[tuple[str, Failure, bool, Disposition]] = [
    ("every host lacks usable TLSA", absent(LastError.DANE, "mx2.example"), False, BOUNCE),
    ("one host's TLSA lookup failed", absent(LastError.DANE, "mx2.example"), True, DEFER),
    ("REQUIRETLS: an earlier host timed out", requiretls("5.7.10"), True, DEFER),
    ("domain-wide absence ignores hosts", absent(LastError.MTA_STS, None), True, BOUNCE),
    ("a 5xx RCPT is the recipient's", reply(Stage.RCPT, 550), True, BOUNCE),
    ("a violation stays temporary", violation(LastError.DANE), False, DEFER),
]


@pytest.mark.parametrize(
    ("label", "failure", "transient", "expected"), ACROSS_HOSTS, ids=[c[0] for c in ACROSS_HOSTS]
)
def test_a_per_host_absence_bounces_only_when_every_host_said_so(
    label: str, failure: Failure, transient: bool, expected: Disposition
) -> None:
    decision = outcome.decide(failure, final_host=True, others_transient=transient)
    assert decision.disposition is expected, f"{label}: {decision.why}"


REPLY, DNS = LastError.UNEXPECTED_REPLY, LastError.DNS

# label, failure (at the final host), expected (action, status, kind)
OUTCOMES: list[tuple[str, Failure, tuple[str, str, LastError]]] = [
    ("RCPT 550 keeps the server's code",
     reply(Stage.RCPT, 550, "5.1.1 no such user"), ("failed", "5.1.1", REPLY)),
    ("reply without enhanced code",
     reply(Stage.RCPT, 550, "no such user"), ("failed", "5.0.0", REPLY)),
    ("enhanced code of the wrong class ignored",
     reply(Stage.RCPT, 450, "5.1.1 busy"), ("delayed", "4.0.0", REPLY)),
    ("5xx greeting deferred reports class 4",
     reply(Stage.GREETING, 554, "5.7.1 go away"), ("delayed", "4.7.1", REPLY)),
    ("protocol error",
     reply(Stage.MAIL, 354, "go ahead"), ("failed", "5.5.0", REPLY)),
    ("connect refused",
     transport(Stage.CONNECT, "refused"), ("delayed", "4.4.1", LastError.CONNECTION)),
    ("lost at the greeting",
     transport(Stage.GREETING, "lost"), ("delayed", "4.4.2", LastError.CONNECTION)),
    ("greeting timeout",
     transport(Stage.GREETING, "timeout"), ("delayed", "4.4.2", LastError.CONNECTION)),
    ("lost after the greeting",
     transport(Stage.EHLO, "lost"), ("delayed", "4.4.2", LastError.IO)),
    ("lost mid-session",
     transport(Stage.DATA, "lost"), ("delayed", "4.4.2", LastError.IO)),
    ("certificate failure", tls(), ("delayed", "4.7.5", LastError.TLS)),
    ("DANE mismatch", violation(LastError.DANE), ("delayed", "4.7.5", LastError.DANE)),
    ("no MTA-STS policy",
     absent(LastError.MTA_STS, None), ("failed", "5.7.4", LastError.MTA_STS)),
    ("REQUIRETLS, no authenticated host",
     requiretls("5.7.10"), ("failed", "5.7.10", LastError.TLS)),
    ("REQUIRETLS not offered", requiretls("5.7.30"), ("failed", "5.7.30", LastError.TLS)),
    ("null MX", route(RouteProblem.NULL_MX), ("failed", "5.1.10", DNS)),
    ("NXDOMAIN", route(RouteProblem.NO_SUCH_DOMAIN), ("failed", "5.1.2", DNS)),
    ("DNS TEMPFAIL", route(RouteProblem.TEMPFAIL), ("delayed", "4.4.3", DNS)),
]  # fmt: skip


@pytest.mark.parametrize(("label", "failure", "expected"), OUTCOMES, ids=[c[0] for c in OUTCOMES])
def test_make_outcome(label: str, failure: Failure, expected: tuple[str, str, LastError]) -> None:
    result = outcome.make_outcome(failure, outcome.decide(failure, final_host=True))
    assert (result.action, result.status, result.kind) == expected


def test_reasons_name_the_host_the_reply_and_the_step() -> None:
    failure = reply(Stage.RCPT, 550, "5.1.1 <a@example.com>: no such user")
    result = outcome.make_outcome(failure, outcome.decide(failure, final_host=True))

    assert result.reason.startswith(
        "mx1.example[192.0.2.1] said: 550 5.1.1 <a@example.com>: no such user (in reply to RCPT TO)"
    )
    assert "rule 6" in result.reason
    assert (result.remote_host, result.remote_ip) == ("mx1.example", "192.0.2.1")
    assert result.remote_reply == "550 5.1.1 <a@example.com>: no such user"


def test_lmtp_per_recipient_replies_after_dot_concern_one_recipient() -> None:
    failure = outcome.reply_failure(
        Stage.DOT, 550, "5.2.2 mailbox full", remote_host="lmtp", remote_ip=None,
        scope=outcome.Scope.RECIPIENT,
    )  # fmt: skip
    assert failure.scope is outcome.Scope.RECIPIENT
    assert failure.reason == "lmtp said: 550 5.2.2 mailbox full (in reply to end of DATA)"


def test_an_expired_recipient_fails_with_its_last_problem() -> None:
    failure = transport(Stage.CONNECT, "timeout")
    last = outcome.make_outcome(failure, outcome.decide(failure, final_host=True))

    result = outcome.expired(last, reason="gave up after 3 days in the queue")

    assert (result.action, result.status, result.kind) == ("failed", "5.4.1", LastError.CONNECTION)
    assert result.reason.startswith("gave up after 3 days in the queue; last problem: connecting")


def test_delivered_takes_the_enhanced_code_of_the_final_reply() -> None:
    ok = outcome.delivered(
        remote_host="mx1.example", remote_ip="192.0.2.1", code=250, text="2.6.0 queued as X"
    )
    plain = outcome.delivered(remote_host="mx1.example", remote_ip=None, code=250, text="ok")

    assert (ok.action, ok.status, ok.kind, ok.remote_reply) == (
        "delivered",
        "2.6.0",
        LastError.NONE,
        "250 2.6.0 queued as X",
    )
    assert (plain.status, plain.reason) == ("2.0.0", "mx1.example said: 250 ok")  # fmt: skip


@pytest.mark.parametrize("phase", get_args(smtp_errors.Phase))
@pytest.mark.parametrize("error", [smtp_errors.PhaseTimeout, smtp_errors.ConnectionLost])
def test_transport_failures_keep_the_smtp_layers_kind(
    phase: smtp_errors.Phase, error: type[smtp_errors.PhaseTimeout | smtp_errors.ConnectionLost]
) -> None:
    # One rule on both sides of attempt.failure_of: until the server has greeted us, a
    # broken connection is a ``connection`` failure; after, ``io`` (DESIGN §4).
    raised = error("mx1.example", "192.0.2.1", phase, "the network failed")
    assert attempt.failure_of(raised).kind is raised.kind
    early = phase in ("connect", "greeting")
    assert raised.kind is (LastError.CONNECTION if early else LastError.IO)
