"""``delivery explain`` against every harness example scenario, then a real delivery.

For each scenario of fixtures/scenarios/, a daemon explains a recipient (the JSON of
``x:Explain/get``, which ``delivery explain --json`` prints), then a message goes to that
recipient, and the delivery must match the explanation: the host it landed on (or the defer
or bounce predicted, with its status and last_error), whether TLS was required, and what
authenticated the host (the receiver records whether the message came over TLS; the
recipient's ``last_status`` names PKIX, DANE or the MTA-STS policy). `assert_matches` holds
the checks every scenario shares; each test adds what is particular to its scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from delivery.errors import LastError
from tests.explain.conftest import Delivered, MakeExplainDaemon
from tests.plugins.harness import MakeLab

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"
ACTIONS = {"defer": "delayed", "bounce": "failed"}


def scenario(name: str) -> Path:
    return SCENARIOS / f"{name}.toml"


def real_authentication(tls: str) -> str:
    """What authenticated the host, from the TLS state the worker recorded (TlsReport)."""
    if "certificate verified (PKIX" in tls:
        return "pkix"
    if "certificate verified (DANE" in tls:
        return "dane"
    if "certificate not verified" in tls:
        return "none"
    return "clear text"


def addresses(explained: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(host, address) in the order the explanation says they would be tried."""
    return [(h["host"], a) for h in explained["hosts"] for a in h["addresses"]]


def steps(explained: dict[str, Any]) -> list[tuple[str, str | None, bool]]:
    """(host, step action, fallback) per address, in order."""
    return [
        (host, a["step"]["action"] if a["step"] else None, a["fallback"])
        for host, a in addresses(explained)
    ]


def assert_matches(explained: dict[str, Any], delivered: Delivered, lab: Any) -> None:
    """The checks every scenario shares: the delivery did what the explanation said."""
    decision, got = explained["decision"], delivered.settled.outcome
    if decision["action"] in ACTIONS:  # predicted: no host is connected to
        assert got.action == ACTIONS[decision["action"]], got.reason
        assert (got.status, got.kind.value) == (decision["status"], decision["kind"])
        assert (got.remote_host, got.remote_ip) == (decision["host"], decision["ip"])
        # the same sentence (a DNS detail may say "(cached)" the second time) and rule
        assert decision["reason"].partition(" (")[0] in got.reason
        assert got.reason.endswith(decision["rule"])
        domain = explained["domain"]
        for name, receiver in lab.receivers.items():
            if name == domain or name.endswith(f".{domain}"):
                assert receiver.connections == 0, name
        return
    assert decision["action"] == "connect"
    if decision["host"] in lab.receivers:  # the first host connected to is the one explained
        assert lab.mx(decision["host"]).connections >= 1
    [address] = [
        a for host, a in addresses(explained) if (host, a["ip"]) == (got.remote_host, got.remote_ip)
    ]
    assert address["step"]["action"] == "connect"
    tls = address["tls"]
    if got.action == "delivered":
        real = real_authentication(delivered.settled.tls)
        [received] = lab.mx(got.remote_host).received
        assert (received.tls is not None) is (real != "clear text")
        if tls["required"] or real != "clear text":
            assert real == tls["authentication"], (real, tls)
        else:  # clear text was allowed: STARTTLS not offered under an opportunistic plan
            assert tls["onTlsEvents"]["no-starttls"] == "continue-clear"
        if "MTA-STS policy" in tls["authenticatedBy"]:
            assert "MTA-STS policy" in delivered.recipient.last_status
        if real in ("pkix", "dane"):
            assert real.upper() in delivered.recipient.last_status
    elif got.kind is LastError.TLS:  # a TLS event the explanation says fails the host
        assert "fail-host" in tls["onTlsEvents"].values()
        assert lab.mx(got.remote_host).received == []


async def test_plain_delivers_over_starttls_authenticated_by_pkix(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("plain"))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@plain.test")

    assert (explained["route"]["name"], explained["schedule"]["name"]) == ("mx", "remote")
    assert explained["variables"]["rcpt_domain"] == "plain.test"
    assert explained["mx"]["hosts"] == ["mx1.plain.test"]
    assert explained["mtaSts"]["status"] == "none"
    [(_, address)] = addresses(explained)
    assert address["tlsStrategy"]["name"] == "default"
    assert address["tlsStrategy"]["variables"]["mx"] == "mx1.plain.test"
    assert address["dane"]["outcome"] == "not-applicable"
    assert (address["tls"]["mode"], address["tls"]["authentication"]) == ("opportunistic", "pkix")
    decision = explained["decision"]
    assert (decision["action"], decision["host"], decision["tlsRequired"]) == (
        "connect",
        "mx1.plain.test",
        False,
    )

    delivered = await daemon.deliver("b@plain.test")
    assert delivered.settled.outcome.action == "delivered"
    assert_matches(explained, delivered, lab)


async def test_mta_sts_enforce_requires_pkix_and_the_policy_comes_from_the_cache_next(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("mta-sts-enforce"))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@sts.test")

    sts = explained["mtaSts"]
    assert (sts["status"], sts["mode"], sts["source"]) == ("policy", "enforce", "fetch")
    assert sts["mx"] == ["mx1.sts.test", "*.sts.test"] and sts["policyId"] == "20240101T000000"
    assert steps(explained) == [
        ("mx1.sts.test", "connect", False),
        ("mx2.sts.test", "connect", True),
    ]
    for _, address in addresses(explained):
        assert address["mtaSts"]["action"] == "enforce" and address["mtaSts"]["mxListed"]
        assert address["tls"]["required"] and address["tls"]["authentication"] == "pkix"
        assert address["tls"]["requiredBy"] == [
            "the MTA-STS policy of sts.test (mode enforce) requires TLS"
        ]
    assert explained["decision"]["tlsRequired"] is True

    delivered = await daemon.deliver("b@sts.test")
    assert delivered.settled.outcome.remote_host == "mx1.sts.test"
    assert "the MTA-STS policy of sts.test (mode enforce) lists mx1.sts.test" in (
        delivered.recipient.last_status
    )
    assert_matches(explained, delivered, lab)
    again = await daemon.explain("b@sts.test")
    assert again["mtaSts"]["source"] == "cache"


async def test_mta_sts_testing_reports_the_unlisted_mx_and_pkix_still_decides(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("mta-sts-testing"))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@testing.test")

    assert explained["mtaSts"]["mode"] == "testing"
    [(_, address)] = addresses(explained)
    assert address["mtaSts"]["action"] == "report-only"
    assert address["mtaSts"]["mxListed"] is False
    assert (address["tls"]["mode"], address["tls"]["verification"]) == ("opportunistic", "pkix")
    assert address["tls"]["onTlsEvents"]["cert-rejected"] == "fail-host"

    delivered = await daemon.deliver("b@testing.test")  # a self-signed certificate
    assert delivered.settled.outcome.kind is LastError.TLS
    assert_matches(explained, delivered, lab)


BAD_POLICY_HOSTS = [  # (domain, status, problem): what the MTA-STS lookup found
    ("redirect.test", "unavailable", "redirect"),
    ("ctype.test", "unavailable", "content-type"),
    ("notfound.test", "unavailable", "status"),
    ("huge.test", "unavailable", "oversize"),
    ("badcert.test", "unavailable", "tls"),
    ("nohost.test", "unavailable", "connect"),
    ("slow.test", "policy", None),  # 3 s late: within mtaStsTimeout
]


async def test_misbehaving_policy_hosts_are_unavailable_and_deliver_without_mta_sts(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("mta-sts-bad-server"))
    daemon = await explain_daemon(lab)
    for domain, status, problem in BAD_POLICY_HOSTS:
        explained = await daemon.explain(f"b@{domain}")
        assert (explained["mtaSts"]["status"], explained["mtaSts"]["problem"]) == (
            status,
            problem,
        ), explained["mtaSts"]["text"]
        delivered = await daemon.deliver(f"b@{domain}")
        assert delivered.settled.outcome.action == "delivered", delivered.settled.outcome.reason
        assert_matches(explained, delivered, lab)


async def test_a_policy_fetch_failure_under_mta_sts_require_is_explained_as_a_deferral(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("mta-sts-bad-server"))
    daemon = await explain_daemon(lab)
    world = daemon.daemon.world
    await world.create("MtaTlsStrategy", name="sts-required", mtaSts="require")
    await world.outbound(
        tls={
            "match": [{"if": "rcpt_domain == 'notfound.test'", "then": "'sts-required'"}],
            "else": "'default'",
        }
    )
    explained = await daemon.explain("b@notfound.test")

    decision = explained["decision"]
    assert (decision["action"], decision["kind"], decision["status"]) == (
        "defer",
        "mta-sts",
        "4.7.5",
    )
    assert decision["text"].startswith("defer: the TLS strategy requires MTA-STS")
    [(_, address)] = addresses(explained)
    assert address["tlsStrategy"]["name"] == "sts-required"
    assert address["tlsStrategy"]["variables"]["mx"] == "mx1.notfound.test"

    delivered = await daemon.deliver("b@notfound.test")
    assert_matches(explained, delivered, lab)


async def test_dane_hosts_require_tls_authenticated_by_their_tlsa_records(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("dane"))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@dane.test")

    assert explained["dnssec"]["validating"] is True
    assert explained["mx"]["lookup"]["secure"] and explained["mx"]["security"] == "secure"
    assert steps(explained) == [
        ("mx1.dane.test", "connect", False),
        ("mx2.dane.test", "connect", True),
    ]
    (_, mx1), (_, mx2) = addresses(explained)
    assert mx1["dane"]["outcome"] == "required"
    assert [(lk["qname"], lk["status"], lk["secure"]) for lk in mx1["dane"]["lookups"]] == [
        ("_25._tcp.mx1.dane.test.", "answer", True)
    ]
    assert [r.split()[:3] for r in mx1["dane"]["usable"]] == [["3", "1", "1"]]
    assert sorted(r.split()[:3] for r in mx2["dane"]["usable"]) == [
        ["2", "0", "1"],
        ["3", "1", "1"],
    ]
    for address in (mx1, mx2):
        tls = address["tls"]
        assert (tls["required"], tls["verification"], tls["authentication"]) == (
            True,
            "dane",
            "dane",
        )
    assert mx1["tls"]["sni"] == "mx1.dane.test"

    delivered = await daemon.deliver("b@dane.test")
    assert delivered.settled.outcome.remote_host == "mx1.dane.test"
    assert_matches(explained, delivered, lab)


async def test_no_starttls_is_clear_text_when_optional_and_a_deferral_when_required(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("no-starttls"))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@clear.test")
    [(_, address)] = addresses(explained)
    assert address["tls"]["onTlsEvents"]["no-starttls"] == "continue-clear"

    delivered = await daemon.deliver("b@clear.test")
    assert delivered.settled.outcome.action == "delivered"
    assert delivered.settled.tls == "clear text (STARTTLS not offered)"
    assert_matches(explained, delivered, lab)

    world = daemon.daemon.world
    await world.create("MtaTlsStrategy", name="strict", startTls="require")
    await world.outbound(tls={"else": "'strict'"})
    required = await daemon.explain("c@clear.test")
    [(_, address)] = addresses(required)
    assert address["tls"]["requiredBy"] == ["TLS strategy 'strict' requires STARTTLS"]
    assert address["tls"]["onTlsEvents"]["no-starttls"] == "fail-host"
    refused = await daemon.deliver("c@clear.test")
    assert refused.settled.outcome.action == "delayed"
    assert refused.settled.outcome.kind is LastError.TLS
    assert "TLS strategy 'strict' requires STARTTLS" in refused.settled.outcome.reason
    assert [m.rcpt_tos for m in lab.mx("mx1.clear.test").received] == [["b@clear.test"]]


async def test_null_mx_is_a_bounce_and_an_implicit_mx_is_the_domain_itself(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("null-mx"))
    daemon = await explain_daemon(lab)
    nomail = await daemon.explain("b@nomail.test")
    decision = nomail["decision"]
    assert (decision["action"], decision["status"], decision["kind"]) == ("bounce", "5.1.10", "dns")
    assert nomail["mx"] is None and nomail["hosts"] == []
    assert_matches(nomail, await daemon.deliver("b@nomail.test"), lab)

    implicit = await daemon.explain("b@implicit.test")
    assert implicit["mx"]["implicit"] is True and implicit["mx"]["hosts"] == ["implicit.test"]
    assert implicit["decision"]["host"] == "implicit.test"
    delivered = await daemon.deliver("b@implicit.test")
    assert delivered.settled.outcome.action == "delivered"
    assert_matches(implicit, delivered, lab)


BAD_CERTIFICATES = [  # (scenario, recipient, the TLS event the host causes)
    ("expired-cert", "b@expired.test", "cert-rejected"),
    ("wrong-name", "b@wrongname.test", "cert-rejected"),
    ("broken-handshake", "b@broken.test", "handshake-failed"),
]


@pytest.mark.parametrize(("name", "recipient", "event"), BAD_CERTIFICATES)
async def test_a_host_whose_tls_fails_is_tried_and_deferred_as_its_tls_events_say(
    name: str,
    recipient: str,
    event: str,
    make_lab: MakeLab,
    explain_daemon: MakeExplainDaemon,
) -> None:
    lab = await make_lab(scenario(name))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain(recipient)
    [(_, address)] = addresses(explained)
    assert explained["decision"]["action"] == "connect"
    assert (address["tls"]["mode"], address["tls"]["authentication"]) == ("opportunistic", "pkix")
    assert address["tls"]["onTlsEvents"][event] == "fail-host"

    delivered = await daemon.deliver(recipient)
    assert (delivered.settled.outcome.action, delivered.settled.outcome.kind) == (
        "delayed",
        LastError.TLS,
    )
    assert_matches(explained, delivered, lab)


async def test_hosts_are_tried_in_preference_order_and_the_last_one_takes_the_mail(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("first-mx-down"))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@backup.test")
    assert steps(explained) == [
        ("mx1.backup.test", "connect", False),
        ("mx2.backup.test", "connect", True),
        ("mx3.backup.test", "connect", True),
    ]
    assert [h["preference"] for h in explained["hosts"]] == [10, 20, 30]

    delivered = await daemon.deliver("b@backup.test")
    assert delivered.settled.outcome.remote_host == "mx3.backup.test"
    assert lab.mx("mx2.backup.test").connections >= 1  # 421 at MAIL: the next host
    assert_matches(explained, delivered, lab)


async def test_scripted_replies_happen_at_the_host_explained(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("replies"))
    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@replies.test")
    assert explained["decision"]["host"] == "mx1.replies.test"
    delivered = await daemon.deliver("b@replies.test")
    assert delivered.settled.outcome.action == "delivered"
    assert_matches(explained, delivered, lab)

    busy = await daemon.explain("defer-1@replies.test")
    deferred = await daemon.deliver("defer-1@replies.test")  # 450 at RCPT TO
    assert deferred.settled.outcome.action == "delayed"
    assert deferred.settled.outcome.remote_host == busy["decision"]["host"]


async def test_dns_trouble_is_explained_as_the_deferral_or_next_host_it_causes(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("dns-trouble"))
    daemon = await explain_daemon(lab)

    bogus = await daemon.explain("b@bogus.test")  # the MX lookup: SERVFAIL
    assert bogus["mx"] is None
    assert (bogus["decision"]["action"], bogus["decision"]["status"]) == ("defer", "4.4.3")
    assert_matches(bogus, await daemon.deliver("b@bogus.test"), lab)

    slow = await daemon.explain("b@slowdns.test")  # mx1's address lookup times out
    assert steps(slow) == [
        ("mx1.slowdns.test", "next-host", False),
        ("mx2.slowdns.test", "connect", False),
    ]
    [mx1, _] = slow["hosts"]
    assert mx1["lookups"][0]["status"] == "tempfail"
    assert mx1["addresses"][0]["step"]["kind"] == "dns"
    delivered = await daemon.deliver("b@slowdns.test")
    assert delivered.settled.outcome.remote_host == "mx2.slowdns.test"
    assert_matches(slow, delivered, lab)

    tlsa = await daemon.explain("b@tlsafail.test")  # TLSA SERVFAIL in a signed zone
    decision = tlsa["decision"]
    assert (decision["action"], decision["kind"], decision["host"]) == (
        "defer",
        "dane",
        "mx1.tlsafail.test",
    )
    assert decision["text"].startswith("defer: the TLSA lookup of _25._tcp.mx1.tlsafail.test.")
    [(_, address)] = addresses(tlsa)
    assert address["dane"]["outcome"] == "tempfail"
    assert address["dane"]["lookups"][0]["status"] == "tempfail"
    assert_matches(tlsa, await daemon.deliver("b@tlsafail.test"), lab)
