"""Name normalisation and nameserver parsing: tables of cases."""

from __future__ import annotations

import dns.exception
import dns.name
import hypothesis
import pytest
from hypothesis import strategies as st

from delivery.dns import names
from delivery.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.TEST", "example.test."),
        ("example.test.", "example.test."),
        ("_25._TCP.MX1.example.test", "_25._tcp.mx1.example.test."),
        (".", "."),
        ("bücher.example", "xn--bcher-kva.example."),
    ],
)
def test_normalize_name(text: str, expected: str) -> None:
    assert names.normalize_name(text) == expected


@pytest.mark.parametrize("text", ["", "a..b", "x" * 64 + ".test", ("a" * 60 + ".") * 5])
def test_normalize_name_rejects_invalid_names(text: str) -> None:
    with pytest.raises(names.InvalidName):
        names.normalize_name(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:53", ("127.0.0.1", 53)),
        ("127.0.0.1", ("127.0.0.1", 53)),
        (" 127.0.0.2:5353 ", ("127.0.0.2", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert names.parse_nameserver(text) == expected
    assert names.parse_nameserver(names.format_nameserver(expected)) == expected


@pytest.mark.parametrize(
    "text",
    ["resolver.example:53", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "[::1]53", "[::1", ""],
)
def test_parse_nameserver_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        names.parse_nameserver(text)
    assert caught.value.field == "dns.nameservers"


_NAME_ALPHABET = "aZ09-_.\\*"


@hypothesis.settings(max_examples=500, deadline=None)
@hypothesis.given(
    st.one_of(
        st.text(alphabet=_NAME_ALPHABET, max_size=20),
        st.builds(  # lengths near the label and name limits
            lambda labels, dot: ".".join(labels) + dot,
            st.lists(st.text(alphabet="aZ9-_", min_size=0, max_size=64), max_size=6),
            st.sampled_from(["", "."]),
        ),
    )
)
def test_normalize_name_agrees_with_dnspython(text: str) -> None:
    """The fast path for plain names gives what dnspython gives, and refuses what it refuses."""
    try:
        expected: str | None = dns.name.from_text(text).to_text().lower()
    except dns.exception.DNSException:
        expected = None
    try:
        got: str | None = names.normalize_name(text)
    except names.InvalidName:
        got = None
    assert got == expected or (text == "" and got is None)
