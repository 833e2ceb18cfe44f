"""bench.throughput measures what it says: the batch, the sink's clock, the connection and CPU
counts, the Postfix configuration it writes, and the profile summary (its end-to-end run is
tests/test_bench.py's ``--quick``)."""

from __future__ import annotations

import cProfile
import doctest
import logging
import os
import pstats
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.throughput_kit import batch, engines, postfix, procs, profile_report, sink

SINK_OUTPUT = b"".join(
    f"sess={s} quit={s} mesg={m}\r".encode()
    for s, m in [(0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4), (3, 5), (4, 5)]
)


@pytest.mark.parametrize("module", [batch, sink, engines])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("n", [0, 9, 10, 99, 4_999, 123_456])
def test_every_message_has_the_same_size_and_needs_no_dot_stuffing(n: int) -> None:
    content = batch.content(n)
    assert len(content) == batch.MESSAGE_BYTES
    assert content.endswith(b"\r\n")
    assert not any(line.startswith(b".") for line in content.split(b"\r\n"))
    assert b"\nSubject: " in content  # what the Postfix sender's hold rule matches


def test_recipients_spread_evenly_over_ten_domains() -> None:
    domains = Counter(batch.recipient(n).partition("@")[2] for n in range(5_000))
    assert sorted(domains) == sorted(batch.DOMAINS) and set(domains.values()) == {500}


@pytest.mark.parametrize("chunk", [1, 2, 7, 16, len(SINK_OUTPUT)])
def test_sink_counters_are_read_whatever_the_chunking(chunk: int) -> None:
    pending, seen = b"", []
    for start in range(0, len(SINK_OUTPUT), chunk):
        counters, pending = sink.parse_counters(pending + SINK_OUTPUT[start : start + chunk])
        if counters is not None:
            seen.append(counters)
    assert seen[-1] == sink.Counters(sessions=4, quits=4, messages=5)
    assert [c.messages for c in seen] == sorted(c.messages for c in seen)


SENDER_VALUES = {
    "ROOT": "/tmp/x/postfix",
    "COMPATIBILITY_LEVEL": "3.7",
    "SINK_HOST": "127.200.0.2",
    "SINK_PORT": "2525",
    "CA_FILE": "/tmp/x/ca.pem",
}
SINK_VALUES = {
    "ROOT": "/tmp/x/tls-sink",
    "COMPATIBILITY_LEVEL": "3.7",
    "LISTEN_HOST": "127.200.0.3",
    "LISTEN_PORT": "2526",
    "SINK_HOST": "127.200.0.2",
    "SINK_PORT": "2525",
    "KEY_FILE": "/tmp/x/sink.key",
    "CHAIN_FILE": "/tmp/x/sink.fullchain.pem",
}


def _settings(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split(" = ", 1) for line in lines if " = " in line)


def _services(text: str) -> list[list[str]]:
    lines = [line.split() for line in text.splitlines() if line and line[0] not in "# \t"]
    return [fields for fields in lines if len(fields) >= 8]


def test_the_sender_relays_to_the_sink_verifying_with_the_ca_and_listens_nowhere() -> None:
    main = _settings(postfix._render("sender-main.cf", SENDER_VALUES))
    assert main["relayhost"] == "[127.200.0.2]:2525"
    assert main["inet_interfaces"] == "loopback-only"
    assert main["queue_directory"] == "/tmp/x/postfix/spool"
    assert main["smtp_tls_CAfile"] == "/tmp/x/ca.pem"
    assert main["header_checks"] == "regexp:/tmp/x/postfix/etc/hold"
    services = _services(postfix._render("sender-master.cf", SENDER_VALUES))
    assert [s for s in services if s[1] == "inet"] == []
    assert {"pickup", "cleanup", "qmgr", "smtp", "scache", "flush"} <= {s[0] for s in services}
    assert {s[4] for s in services} == {"n"}  # nothing chrooted
    hold = (postfix.TEMPLATES / "hold").read_text()
    assert re.search(r"^/\^Subject:/ HOLD$", hold, re.MULTILINE)


def test_the_tls_sink_offers_starttls_and_passes_each_transaction_to_smtp_sink() -> None:
    main = _settings(postfix._render("sink-main.cf", SINK_VALUES))
    assert main["smtpd_tls_security_level"] == "may"
    assert main["smtpd_tls_chain_files"] == "/tmp/x/sink.key, /tmp/x/sink.fullchain.pem"
    assert main["smtpd_proxy_filter"] == "127.200.0.2:2525"
    assert main["smtpd_peername_lookup"] == "no"
    services = _services(postfix._render("sink-master.cf", SINK_VALUES))
    assert [s[0] for s in services if s[1] == "inet"] == ["127.200.0.3:2526"]


def test_a_placeholder_left_unfilled_is_refused() -> None:
    values = {k: v for k, v in SENDER_VALUES.items() if k != "CA_FILE"}
    with pytest.raises(ValueError, match="@CA_FILE@"):
        postfix._render("sender-main.cf", values)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_tree_cpu_counts_children_that_have_exited() -> None:
    before = procs.tree_cpu_s(os.getpid())
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert procs.tree_cpu_s(os.getpid()) - before >= 0.25


def test_profile_summary_gives_builtin_time_to_its_callers_group_and_counts_records() -> None:
    log = logging.getLogger("bench.throughput.test")
    log.addHandler(logging.NullHandler())
    log.propagate, log.level = False, logging.INFO
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(200):
        log.info("message %d", n)
    profiler.disable()
    summary = profile_report.summarize(pstats.Stats(profiler), 200)
    assert dict(summary.counts)["log records"] == 200
    assert summary.categories[0][0] == "logging"  # builtins it called count as logging
    groups = dict(summary.categories)
    assert groups["logging"] > groups["other"]  # "other": this test's own loop
    assert summary.idle_s == 0.0 and summary.busy_s == pytest.approx(summary.wall_s)
