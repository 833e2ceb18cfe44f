"""The planner's decisions as tables: expression results -> objects, DNS answers -> hosts."""

from __future__ import annotations

import logging
import random

import pytest

from delivery import expr
from delivery.dns.result import DnsResult, Lookup, MxRecord
from delivery.engine import outcome, planner
from delivery.errors import LastError
from delivery.policy import tls as tls_policy
from delivery.registry import snapshot as registry
from tests.plugins.engine import make_snapshot

SNAPSHOT = make_snapshot(
    objects=[
        ("MtaTlsStrategy", {"name": "strict", "startTls": "require"}),
        ("MtaTlsStrategy", {"name": "plain", "startTls": "disable"}),
        (
            "MtaConnectionStrategy",
            {
                "name": "pinned",
                "ehloHostname": "out.example.org",
                "sourceIps": [
                    {"sourceIp": "127.0.0.9", "ehloHostname": "nine.example.org"},
                    {"sourceIp": "::1"},
                ],
            },
        ),
        (
            "MtaRoute",
            {
                "@type": "Relay",
                "name": "smarthost",
                "address": "127.0.0.7",
                "allowInvalidCerts": True,
            },
        ),
    ]
)
ENV = expr.Environment(local_domains=frozenset({"example.org"}))
NO_POLICY = tls_policy.PolicyInputs(policy_domain="example.test")


def host_plan(
    snapshot: registry.Snapshot = SNAPSHOT,
    policy: tls_policy.PolicyInputs = NO_POLICY,
    *,
    connection: expr.Value = "default",
    tls: expr.Value = "default",
    remote_ip: str = "127.0.0.2",
    relay: registry.RelayRoute | None = None,
    hostname: str = "mta.example.org",
) -> planner.HostPlan:
    """What the attempt does at one host: connection first, then the TLS plan."""
    chosen = planner.select_connection(snapshot, connection)
    local_ip, ehlo = planner.source_address(chosen.value, remote_ip, hostname=hostname)
    return planner.plan_host(
        snapshot,
        policy,
        mx="mx1.example.test.",
        remote_ip=remote_ip,
        connection=chosen,
        local_ip=local_ip,
        ehlo_name=ehlo,
        tls=tls,
        relay=relay,
    )


def rcpt_vars(**values: expr.Value) -> dict[str, expr.Value]:
    base: dict[str, expr.Value] = {
        "rcpt": "a@example.test",
        "rcpt_domain": "example.test",
        "source": "authenticated",
        "retry_num": 0,
        "last_error": "none",
    }
    return base | values


RECIPIENT_CASES = [  # (label, variables, route name, route type, schedule, queue)
    ("remote mail", rcpt_vars(), "mx", registry.MxRoute, "remote", "remote"),
    (
        "local domain",
        rcpt_vars(rcpt_domain="example.org"),
        "local",
        registry.LocalRoute,
        "local",
        "local",
    ),
    ("a bounce", rcpt_vars(source="dsn"), "mx", registry.MxRoute, "dsn", "dsn"),
    ("a report", rcpt_vars(source="report"), "mx", registry.MxRoute, "report", "report"),
]


@pytest.mark.parametrize(
    ("label", "variables", "route", "route_type", "schedule", "queue"),
    RECIPIENT_CASES,
    ids=[case[0] for case in RECIPIENT_CASES],
)
def test_default_rcpt_expressions(
    label: str,
    variables: dict[str, expr.Value],
    route: str,
    route_type: type,
    schedule: str,
    queue: str,
) -> None:
    outbound = SNAPSHOT.outbound
    plan = planner.plan_recipient(
        SNAPSHOT,
        route=outbound.route.evaluate(variables, ENV),
        schedule=outbound.schedule.evaluate(variables, ENV),
    )
    assert (plan.route.name, plan.schedule.name, plan.queue.name) == (route, schedule, queue)
    assert isinstance(plan.route.value, route_type)
    assert not plan.route.builtin and not plan.schedule.builtin


TLS_CASES = [  # (label, variables, tls strategy)
    ("first attempt", rcpt_vars(), "default"),
    ("retry after a TLS failure", rcpt_vars(retry_num=1, last_error="tls"), "invalid-tls"),
    ("retry after another failure", rcpt_vars(retry_num=1, last_error="dns"), "default"),
    ("TLS failure but no retry yet", rcpt_vars(last_error="tls"), "default"),
]


@pytest.mark.parametrize(
    ("label", "variables", "expected"), TLS_CASES, ids=[case[0] for case in TLS_CASES]
)
def test_default_tls_expression(
    label: str, variables: dict[str, expr.Value], expected: str
) -> None:
    host = variables | {"mx": "mx1.example.test", "remote_ip": "127.0.0.2", "local_ip": ""}
    plan = host_plan(
        connection=SNAPSHOT.outbound.connection.evaluate(host, ENV),
        tls=SNAPSHOT.outbound.tls.evaluate(host, ENV),
    )
    assert plan.tls.name == expected
    assert plan.connection.name == "default"
    assert plan.mx == "mx1.example.test"


def test_unknown_names_use_builtin_defaults_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    snapshot = make_snapshot()
    with caplog.at_level(logging.WARNING, logger="delivery.registry"):
        for _ in range(2):
            plan = host_plan(snapshot, connection="nosuch-connection", tls="nosuch-tls")
    assert plan.tls.builtin and plan.connection.builtin
    assert plan.tls.value.start_tls == "optional" and not plan.tls.value.allow_invalid_certs
    assert plan.tls.name == "nosuch-tls"
    assert "built-in defaults" in plan.tls.explain()
    warnings = [r for r in caplog.records if "nosuch-tls" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("result", [1, 0, "", ["strict"]])
def test_a_result_that_is_not_a_name_selects_default(result: expr.Value) -> None:
    plan = host_plan(tls=result)
    assert plan.tls.name == "default" and not plan.tls.builtin
    assert "not a name" in plan.tls.explain()


def test_a_choice_is_made_once_per_snapshot_and_equals_a_fresh_one() -> None:
    snapshot = make_snapshot(objects=[("MtaTlsStrategy", {"name": "strict"})])
    first = planner.plan_recipient(snapshot, route="mx", schedule="remote")
    assert planner.plan_recipient(snapshot, route="mx", schedule="remote") is first
    fresh = planner.plan_recipient(make_snapshot(), route="mx", schedule="remote")
    assert fresh == first and fresh is not first
    assert planner.select_tls(snapshot, "strict") is planner.select_tls(snapshot, "strict")
    assert planner.select_tls(snapshot, "STRICT").name == "STRICT"  # names as returned
    assert planner.select_tls(snapshot, ["strict"]).name == "default"  # not hashable: no memo


def test_a_snapshot_keeps_a_bounded_number_of_choices() -> None:
    snapshot = make_snapshot()
    for n in range(registry.SNAPSHOT_MAX_DERIVED + 10):  # e.g. a tls expression `rcpt_domain`
        planner.select_tls(snapshot, f"domain{n}.example")
    assert len(snapshot._derived) == registry.SNAPSHOT_MAX_DERIVED
    late = planner.select_tls(snapshot, "late.example")
    assert late.name == "late.example" and late.builtin  # still chosen right, just not kept


HOST_CASES = [  # (label, tls name, policy, relay, tls mode, verification, refused)
    ("optional", "default", NO_POLICY, None, "opportunistic", "pkix", False),
    ("require", "strict", NO_POLICY, None, "required", "pkix", False),
    ("disable", "plain", NO_POLICY, None, "off", "pkix", False),
    ("invalid-tls", "invalid-tls", NO_POLICY, None, "opportunistic", "none", False),
    (
        "REQUIRETLS under disable",
        "plain",
        tls_policy.PolicyInputs(requiretls=True),
        None,
        "required",
        "pkix",
        True,
    ),
    (
        "relay allowInvalidCerts widens the strategy",
        "default",
        NO_POLICY,
        "smarthost",
        "opportunistic",
        "none",
        False,
    ),
]


@pytest.mark.parametrize(
    ("label", "tls", "policy", "relay", "mode", "verification", "refused"),
    HOST_CASES,
    ids=[case[0] for case in HOST_CASES],
)
def test_host_tls_plan(
    label: str,
    tls: str,
    policy: tls_policy.PolicyInputs,
    relay: str | None,
    mode: str,
    verification: str,
    refused: bool,
) -> None:
    route = SNAPSHOT.route(relay) if relay else None
    assert route is None or isinstance(route, registry.RelayRoute)
    plan = host_plan(policy=policy, tls=tls, relay=route)
    assert plan.tls_plan.tls.value == mode
    assert plan.tls_plan.verification.value == verification
    assert (plan.tls_plan.refusal is not None) == refused
    assert plan.explain()


SOURCE_CASES = [  # (label, connection, remote ip, local ip, ehlo)
    ("kernel chooses", "default", "127.0.0.2", "", "mta.example.org"),
    ("IPv4 source", "pinned", "127.0.0.2", "127.0.0.9", "nine.example.org"),
    ("IPv6 source, strategy EHLO name", "pinned", "::2", "::1", "out.example.org"),
]


@pytest.mark.parametrize(
    ("label", "connection", "remote", "local", "ehlo"),
    SOURCE_CASES,
    ids=[case[0] for case in SOURCE_CASES],
)
def test_source_address_and_ehlo_name(
    label: str, connection: str, remote: str, local: str, ehlo: str
) -> None:
    plan = host_plan(connection=connection, remote_ip=remote)
    assert (plan.local_ip, plan.ehlo_name) == (local, ehlo)


def mx(*records: tuple[int, str], status: Lookup = Lookup.ANSWER) -> DnsResult[MxRecord]:
    return DnsResult(
        status, tuple(MxRecord(p, e) for p, e in records), False, 60, "d.test.", (), "ns said so"
    )


MX_CASES = [  # (label, result, expected hosts | (status, soft))
    ("ordered by preference", mx((20, "b.d.test."), (10, "a.d.test.")), ("a.d.test", "b.d.test")),
    ("no MX: implicit MX", mx(status=Lookup.NODATA), ("d.test",)),
    ("null MX", mx((0, ".")), ("5.1.10", False)),
    ("NXDOMAIN", mx(status=Lookup.NXDOMAIN), ("5.1.2", False)),
    ("TEMPFAIL", mx(status=Lookup.TEMPFAIL), ("4.4.3", True)),
    ("null MX mixed in is ignored", mx((0, "."), (10, "a.d.test.")), ("a.d.test",)),
    ("duplicates once", mx((10, "A.d.test."), (20, "a.d.test.")), ("a.d.test",)),
    (
        "maxMxHosts",
        mx((10, "a.d.test."), (20, "b.d.test."), (30, "c.d.test.")),
        ("a.d.test", "b.d.test"),
    ),
]


@pytest.mark.parametrize(("label", "result", "expected"), MX_CASES, ids=[c[0] for c in MX_CASES])
def test_mx_hosts(
    label: str, result: DnsResult[MxRecord], expected: tuple[str, ...] | tuple[str, bool]
) -> None:
    got = planner.mx_hosts("D.test", result, max_hosts=2)
    if isinstance(got, outcome.Failure):
        assert (got.status, got.soft) == expected
        assert got.kind is LastError.DNS and "D.test" in got.reason
        decision = outcome.decide(got, final_host=False)
        expected_disposition = outcome.Disposition.DEFER if got.soft else outcome.Disposition.BOUNCE
        assert decision.disposition is expected_disposition
    else:
        assert got[0] == expected
        assert got[1] == (result.status is Lookup.NODATA)


def test_equal_preferences_are_tried_in_random_order() -> None:
    result = mx((10, "a.d.test."), (10, "b.d.test."), (5, "first.d.test."))
    orders = set()
    for seed in range(40):
        got = planner.mx_hosts("d.test", result, max_hosts=5, rng=random.Random(seed))
        assert not isinstance(got, outcome.Failure)
        assert got[0][0] == "first.d.test"
        orders.add(got[0])
    assert orders == {
        ("first.d.test", "a.d.test", "b.d.test"),
        ("first.d.test", "b.d.test", "a.d.test"),
    }


def addresses(*ips: str, status: Lookup = Lookup.ANSWER) -> DnsResult[str]:
    return DnsResult(status, ips, False, 60, "h.test.", ())


ADDRESS_CASES = [  # (label, lookups, max, expected: addresses | None | "tempfail")
    ("v4 then v6", [addresses("127.0.0.2"), addresses("::2")], 2, ("127.0.0.2", "::2")),
    ("maxMultihomed", [addresses("127.0.0.2"), addresses("::2")], 1, ("127.0.0.2",)),
    ("no addresses", [addresses(status=Lookup.NODATA), addresses(status=Lookup.NXDOMAIN)], 2, None),
    (
        "tempfail",
        [addresses(status=Lookup.TEMPFAIL), addresses(status=Lookup.NODATA)],
        2,
        "tempfail",
    ),
    (
        "an answer beats a tempfail",
        [addresses(status=Lookup.TEMPFAIL), addresses("::2")],
        2,
        ("::2",),
    ),
]


@pytest.mark.parametrize(
    ("label", "lookups", "limit", "expected"), ADDRESS_CASES, ids=[c[0] for c in ADDRESS_CASES]
)
def test_host_addresses(
    label: str,
    lookups: list[DnsResult[str]],
    limit: int,
    expected: tuple[str, ...] | str | None,
) -> None:
    got = planner.host_addresses("h.test", lookups, max_multihomed=limit)
    if expected == "tempfail":
        assert isinstance(got, outcome.Failure)
        assert got.soft and got.kind is LastError.DNS and got.scope is outcome.Scope.SITE
        assert (
            outcome.decide(got, final_host=False).disposition is outcome.Disposition.TRY_NEXT_HOST
        )
    elif got is None or isinstance(got, outcome.Failure):
        assert got == expected
    else:
        assert tuple(address.ip for address in got) == expected
        for address in got:  # each keeps the answer it came from (DANE needs its security)
            assert address.ip in address.answer.records


@pytest.mark.parametrize(
    ("strategy", "families"),
    [
        ("v4ThenV6", ("A", "AAAA")),
        ("v6ThenV4", ("AAAA", "A")),
        ("v4Only", ("A",)),
        ("v6Only", ("AAAA",)),
    ],
)
def test_address_families(strategy: planner.IpLookupStrategy, families: tuple[str, ...]) -> None:
    assert planner.address_families(strategy) == families
