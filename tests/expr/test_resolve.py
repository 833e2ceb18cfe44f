"""evaluate_resolving: the async shell answers dns_query() through the caller's lookup."""

from __future__ import annotations

import asyncio

import pytest

from delivery import expr
from delivery.errors import DnsTempFail
from delivery.expr.limits import MAX_DNS_QUERIES

ZONE: dict[tuple[str, str], expr.Value] = {
    ("example.test", "MX"): ["10 mx1.example.test."],
    ("mx1.example.test", "A"): ["192.0.2.25"],
    ("alias.example.test", "CNAME"): ["mx1.example.test"],
    ("10.2.0.192.dnsbl.test", "A"): ["127.0.0.2"],
}


class CannedResolver:
    """A real coroutine lookup over a fixed zone, recording what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def lookup(self, name: str, rtype: str) -> expr.Value:
        self.asked.append((name, rtype))
        await asyncio.sleep(0)  # a real suspension point, as a resolver has
        if name.startswith("broken."):
            raise DnsTempFail(f"SERVFAIL for {name}")
        return ZONE.get((name, rtype), [])


async def test_looks_up_each_missing_answer_then_evaluates() -> None:
    resolver = CannedResolver()
    program = expr.compile_text(
        "dns_query(dns_query('Alias.example.test', 'cname')[0], 'A')[0]", expr.Context.HOST
    )
    value = await expr.evaluate_resolving(program, {}, expr.Environment(), resolver.lookup)
    assert value == "192.0.2.25"
    assert resolver.asked == [("alias.example.test", "CNAME"), ("mx1.example.test", "A")]


async def test_answers_already_in_the_environment_are_not_looked_up_again() -> None:
    resolver = CannedResolver()
    program = expr.compile_text("count(dns_query(rcpt_domain, 'MX'))", expr.Context.RCPT)
    env = expr.Environment(dns_answers={("example.test", "MX"): ["10 a.", "20 b."]})
    value = await expr.evaluate_resolving(
        program, {"rcpt_domain": "example.test"}, env, resolver.lookup
    )
    assert (value, resolver.asked) == (2, [])
    assert env.dns_answers == {("example.test", "MX"): ["10 a.", "20 b."]}  # not modified


async def test_an_if_block_with_a_dnsbl_rule() -> None:
    resolver = CannedResolver()
    block = expr.compile_if_block(
        [
            (
                "count(dns_query(ip_reverse_name(received_from_ip) + '.dnsbl.test', 'A')) > 0",
                "'listed'",
            )
        ],
        "'clean'",
        expr.Context.RCPT,
    )
    assert block.uses_dns
    listed = await expr.evaluate_resolving(
        block, {"received_from_ip": "192.0.2.10"}, expr.Environment(), resolver.lookup
    )
    clean = await expr.evaluate_resolving(
        block, {"received_from_ip": "192.0.2.11"}, expr.Environment(), resolver.lookup
    )
    assert (listed, clean) == ("listed", "clean")
    assert resolver.asked == [("10.2.0.192.dnsbl.test", "A"), ("11.2.0.192.dnsbl.test", "A")]


async def test_short_circuit_skips_the_lookup() -> None:
    resolver = CannedResolver()
    program = expr.compile_text("retry_num > 0 && dns_query(mx, 'A')", expr.Context.HOST)
    value = await expr.evaluate_resolving(
        program, {"retry_num": 0, "mx": "mx1.example.test"}, expr.Environment(), resolver.lookup
    )
    assert (value, resolver.asked) == (0, [])


async def test_a_failed_lookup_propagates_unchanged() -> None:
    resolver = CannedResolver()
    program = expr.compile_text("dns_query('broken.example.test', 'A')", expr.Context.HOST)
    with pytest.raises(DnsTempFail, match=r"SERVFAIL for broken\.example\.test"):
        await expr.evaluate_resolving(program, {}, expr.Environment(), resolver.lookup)


async def test_the_most_dns_queries_an_expression_may_hold_all_resolve() -> None:
    resolver = CannedResolver()
    calls = " + ".join(f"count(dns_query('n{number}.test', 'A'))" for number in range(8))
    assert MAX_DNS_QUERIES == 8
    program = expr.compile_text(calls, expr.Context.HOST)
    value = await expr.evaluate_resolving(program, {}, expr.Environment(), resolver.lookup)
    assert value == 0
    assert len(resolver.asked) == MAX_DNS_QUERIES


def test_without_the_shell_evaluation_asks_for_the_answer() -> None:
    program = expr.compile_text("dns_query('example.test', 'MX')", expr.Context.HOST)
    assert program.uses_dns
    with pytest.raises(expr.NeedsLookup) as need:
        program.evaluate({}, expr.Environment())
    assert (need.value.name, need.value.rtype) == ("example.test", "MX")
