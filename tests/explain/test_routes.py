"""Explain beyond the example scenarios' defaults, each then delivered: a Relay route, the
Local route, a TLS strategy that differs per host (host variables), and a route expression
whose DNS lookup fails (an error shown as the deferral it causes)."""

from __future__ import annotations

from delivery.engine import explain
from delivery.errors import LastError
from tests.explain.conftest import MakeExplainDaemon
from tests.explain.test_scenarios import addresses, assert_matches, scenario
from tests.plugins.harness import MakeLab


async def test_a_relay_route_is_explained_without_mta_sts_and_delivered_there(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("plain"))
    daemon = await explain_daemon(lab)
    world = daemon.daemon.world
    await world.create(
        "MtaRoute", type_="Relay", name="smarthost", address="mx1.plain.test", port=lab.smtp_port
    )
    await world.outbound(
        route={
            "match": [{"if": "rcpt_domain == 'far.test'", "then": "'smarthost'"}],
            "else": "'mx'",
        }
    )
    explained = await daemon.explain("b@far.test")

    assert explained["route"]["name"] == "smarthost"
    assert explained["routeObject"]["type"] == "Relay"
    assert explained["mx"] is None and explained["mtaSts"] is None  # the relay is no MX host
    [(host, address)] = addresses(explained)
    assert (host, address["port"]) == ("mx1.plain.test", lab.smtp_port)
    assert address["mtaSts"] is None
    assert explained["decision"]["host"] == "mx1.plain.test"

    delivered = await daemon.deliver("b@far.test")
    assert delivered.settled.outcome.action == "delivered"
    assert_matches(explained, delivered, lab)


async def test_a_local_domain_is_explained_as_a_maildir_delivery(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("plain"))
    daemon = await explain_daemon(lab, local={"domains": ["here.test"]})
    explained = await daemon.explain("b@here.test")

    assert (explained["route"]["name"], explained["schedule"]["name"]) == ("local", "local")
    assert explained["hosts"] == [] and explained["mx"] is None
    decision = explained["decision"]
    assert decision["action"] == "deliver-local"
    assert decision["reason"].startswith("to the local mailbox ")

    delivered = await daemon.deliver("b@here.test")
    assert delivered.settled.outcome.action == "delivered"
    mailbox = decision["reason"].removeprefix("to the local mailbox ")
    assert f"delivered to the local mailbox {mailbox}" in delivered.settled.outcome.reason


async def test_the_tls_strategy_is_chosen_per_host_with_the_host_variables(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("first-mx-down"))
    daemon = await explain_daemon(lab)
    world = daemon.daemon.world
    await world.create("MtaTlsStrategy", name="strict", startTls="require")
    await world.outbound(
        tls={"match": [{"if": "mx == 'mx3.backup.test'", "then": "'strict'"}], "else": "'default'"}
    )
    explained = await daemon.explain("b@backup.test")

    chosen = [
        (host, a["tlsStrategy"]["name"], a["tls"]["required"]) for host, a in addresses(explained)
    ]
    assert chosen == [
        ("mx1.backup.test", "default", False),
        ("mx2.backup.test", "default", False),
        ("mx3.backup.test", "strict", True),
    ]
    for host, address in addresses(explained):
        assert address["tlsStrategy"]["variables"]["mx"] == host

    delivered = await daemon.deliver("b@backup.test")
    assert delivered.settled.outcome.remote_host == "mx3.backup.test"
    assert lab.mx("mx3.backup.test").received[0].tls is not None
    assert_matches(explained, delivered, lab)


async def test_a_route_expression_whose_dns_query_fails_is_explained_as_a_deferral(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("dns-trouble"))
    daemon = await explain_daemon(lab)
    await daemon.daemon.world.outbound(
        route={
            "match": [{"if": "len(dns_query('mx1.bogus.test', 'A')) > 0", "then": "'mx'"}],
            "else": "'mx'",
        }
    )
    explained = await daemon.explain("b@slowdns.test")

    decision = explained["decision"]
    assert (decision["action"], decision["status"], decision["kind"]) == ("defer", "4.4.3", "dns")
    assert decision["reason"].startswith("the route or schedule expression needed DNS: ")
    assert explained["route"] is None and explained["hosts"] == []

    delivered = await daemon.deliver("b@slowdns.test")
    assert delivered.settled.outcome.kind is LastError.DNS
    assert_matches(explained, delivered, lab)


async def test_explain_stops_waiting_for_a_slow_policy_host_and_the_lookup_goes_on(
    make_lab: MakeLab, explain_daemon: MakeExplainDaemon
) -> None:
    lab = await make_lab(scenario("mta-sts-bad-server"))  # slow.test answers after 3 s
    daemon = await explain_daemon(lab)
    runtime = daemon.daemon.runtime
    worker, registry = runtime.require_worker(), runtime.require_registry()
    sources = explain.Sources.of_worker(worker, registry.snapshot(), runtime.settings)

    hurried = await explain.explain("b@slow.test", sources=sources, sts_wait_ms=500)
    assert not hurried.complete
    [note] = hurried.notes
    assert "explain stopped waiting for the MTA-STS lookup of slow.test after 500 ms" in note
    shown = hurried.to_json()
    assert (shown["complete"], shown["mtaSts"]["problem"]) == (False, "timeout")
    assert shown["decision"]["action"] == "connect"  # mtaSts optional: as without a policy

    patient = await explain.explain("b@slow.test", sources=sources)  # joins the same fetch
    assert patient.complete
    assert patient.mta_sts is not None and patient.mta_sts.policy is not None
    assert patient.to_json()["decision"]["tlsRequired"] is True  # mode enforce
    assert lab.policy_server is not None
    assert lab.policy_server.request_count("slow.test") == 1  # one fetch went on for both
