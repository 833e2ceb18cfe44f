"""Evaluations per second of the four default strategy expressions (DESIGN §3).

Run by hand (``python -m bench.expr_eval``) or by CI in short mode (``--quick``), which only
checks that the benchmark still runs: figures are printed, never judged. The goal this tracks
(STYLE §9 keeps timing goals out of the tests): at least 300,000 evaluations per second on one
core for the default ``tls`` IfBlock.

Each expression is compiled once, as the engine does when the object is saved, then evaluated
repeatedly over a small rotation of realistic variable sets (so that both branches run).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence

from delivery import expr

TARGET_PER_SECOND = 300_000
"""The goal for the default tls IfBlock, printed beside its figure."""

# name -> (context, match rules, else): DESIGN §3, exactly.
DEFAULTS: dict[str, tuple[expr.Context, list[tuple[str, str]], str]] = {
    "connection": (expr.Context.HOST, [], "'default'"),
    "route": (expr.Context.RCPT, [("is_local_domain(rcpt_domain)", "'local'")], "'mx'"),
    "schedule": (
        expr.Context.RCPT,
        [
            ("is_local_domain(rcpt_domain)", "'local'"),
            ("source == 'dsn'", "'dsn'"),
            ("source == 'report'", "'report'"),
        ],
        "'remote'",
    ),
    "tls": (
        expr.Context.HOST,
        [("retry_num > 0 && last_error == 'tls'", "'invalid-tls'")],
        "'default'",
    ),
}

VARIABLE_SETS: list[dict[str, expr.Value]] = [
    {
        "rcpt": f"user{number}@{domain}",
        "rcpt_domain": domain,
        "sender": "alice@example.org",
        "sender_domain": "example.org",
        "retry_num": number % 3,
        "last_error": last_error,
        "source": source,
        "mx": f"mx1.{domain}",
        "remote_ip": "192.0.2.25",
        "size": 2048 * number,
    }
    for number, (domain, last_error, source) in enumerate(
        [
            ("example.net", "none", "authenticated"),
            ("example.org", "tls", "dsn"),
            ("example.com", "tls", "report"),
            ("example.edu", "connection", "unauthenticated"),
        ]
    )
]
ENVIRONMENT = expr.Environment(local_domains=frozenset({"example.org"}))


def measure(
    block: expr.IfBlock, variables: Sequence[Mapping[str, expr.Value]], seconds: float
) -> float:
    """Evaluations per second of ``block`` over ``variables``, for about ``seconds``."""
    evaluate, env = block.evaluate, ENVIRONMENT
    rounds, done = 1000, 0
    start = time.perf_counter()
    while True:
        for _ in range(rounds):
            for item in variables:
                evaluate(item, env)
        done += rounds * len(variables)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.expr_eval", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run for CI: checks it runs")
    args = parser.parse_args(argv)
    seconds = 0.05 if args.quick else 1.0
    print(f"{'expression':<12} {'evaluations/s':>14}  one core, compiled once")
    for name, (context, rules, otherwise) in DEFAULTS.items():
        block = expr.compile_if_block(rules, otherwise, context)
        rate = measure(block, VARIABLE_SETS, seconds)
        goal = f"  (goal >= {TARGET_PER_SECOND:,})" if name == "tls" else ""
        print(f"{name:<12} {rate:>14,.0f}{goal}")


if __name__ == "__main__":
    main()
