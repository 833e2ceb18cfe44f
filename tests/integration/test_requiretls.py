"""REQUIRETLS end to end (RFC 8689): such a message goes only to a host DANE, MTA-STS or the
operator's own relay route authenticates, over TLS, and only with REQUIRETLS passed on.

Status codes (RFC 8689 §5): 5.7.10 when no host can be authenticated, 5.7.30 when the
authenticated host does not offer REQUIRETLS; both bounce only once every host said so.
A failure that may pass (a certificate, a handshake) waits for a retry (DESIGN §5.4)."""

from __future__ import annotations

from delivery.errors import LastError
from delivery.harness import smtp_server
from delivery.queue import model
from tests.integration.conftest import StartDaemon
from tests.plugins.harness import MakeLab

DELIVERED, SCHEDULED = model.RecipientStatus.DELIVERED, model.RecipientStatus.SCHEDULED
FAILED = model.RecipientStatus.FAILED
REQUIRETLS = {"requiretls": True}


def saw(receiver: smtp_server.SmtpReceiver, command: str) -> bool:
    return any(line.upper().startswith(command) for line in receiver.commands)


async def test_requiretls_goes_only_to_authenticated_hosts(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "sts.test": {
                    "mx": [{"name": "mx1.sts.test", "advertise": REQUIRETLS}],
                    "mta_sts": {"mode": "enforce"},
                },
                "testing.test": {
                    "mx": [{"name": "mx1.testing.test", "advertise": REQUIRETLS}],
                    "mta_sts": {"mode": "testing"},
                },
                "dane.test": {
                    "dnssec": "secure",
                    "mx": [
                        {
                            "name": "mx1.dane.test",
                            "tls": "self-signed",
                            "tlsa": ["3 1 1"],
                            "advertise": REQUIRETLS,
                        }
                    ],
                },
                # A valid certificate and REQUIRETLS, but a name nothing vouches for.
                "plain.test": {"mx": [{"name": "mx1.plain.test", "advertise": REQUIRETLS}]},
                # Authenticated by MTA-STS, but the certificate is not valid.
                "badcert.test": {
                    "mx": [
                        {"name": "mx1.badcert.test", "tls": "self-signed", "advertise": REQUIRETLS}
                    ],
                    "mta_sts": {"mode": "testing"},
                },
                # Authenticated, without REQUIRETLS.
                "noext.test": {"mx": [{"name": "mx1.noext.test"}], "mta_sts": {"mode": "enforce"}},
            }
        }
    )
    daemon = await start_daemon(lab, dnssec_probe="dane.test")
    world = daemon.world
    await world.outbound(tls={"else": "'invalid-tls'"})  # allowInvalidCerts weakens nothing
    domains = ("sts.test", "testing.test", "dane.test", "plain.test", "badcert.test", "noext.test")
    for domain in domains:
        await world.send("a@sender.test", [f"b@{domain}"], requiretls=True)
    settled = await daemon.outcomes(*(f"b@{domain}" for domain in domains))

    for domain in ("sts.test", "testing.test", "dane.test"):
        outcome = settled[f"b@{domain}"]
        assert outcome.status is DELIVERED, outcome.outcome.reason
        [received] = lab.mx(f"mx1.{domain}").received
        assert received.tls is not None and "REQUIRETLS" in received.mail_params
    testing = settled["b@testing.test"]
    assert "PKIX; the MTA-STS policy of testing.test (mode testing)" in testing.tls
    assert "certificate verified (DANE" in settled["b@dane.test"].tls

    plain = settled["b@plain.test"]
    assert plain.status is FAILED
    assert (plain.outcome.status, plain.outcome.kind) == ("5.7.10", LastError.TLS)
    assert "publishes no usable DANE TLSA records for it and no MTA-STS policy" in (
        plain.outcome.reason
    )
    assert lab.mx("mx1.plain.test").connections == 0

    badcert = settled["b@badcert.test"]
    assert badcert.status is SCHEDULED and badcert.outcome.kind is LastError.TLS
    assert not saw(lab.mx("mx1.badcert.test"), "MAIL")

    noext = settled["b@noext.test"]
    assert noext.status is FAILED
    assert (noext.outcome.status, noext.outcome.kind) == ("5.7.30", LastError.TLS)
    receiver = lab.mx("mx1.noext.test")
    assert saw(receiver, "STARTTLS") and not saw(receiver, "MAIL")


async def test_requiretls_through_a_relay_needs_its_certificate_verified(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    """A relay's name comes from our settings, not DNS: PKIX for it authenticates it, and is
    required even when the route allows invalid certificates."""
    lab = await make_lab(
        {
            "domains": {
                "relays.test": {
                    "mx": [
                        {"name": "good.relays.test", "advertise": REQUIRETLS},
                        {"name": "bad.relays.test", "tls": "self-signed", "advertise": REQUIRETLS},
                    ]
                }
            }
        }
    )
    daemon = await start_daemon(lab, dnssec_probe="relays.test")
    world = daemon.world
    for name in ("good", "bad"):
        await world.create(
            "MtaRoute",
            type_="Relay",
            name=name,
            address=f"{name}.relays.test",
            port=lab.smtp_port,
            allowInvalidCerts=True,
        )
    await world.outbound(
        route={"match": [{"if": "rcpt_domain == 'one.test'", "then": "'good'"}], "else": "'bad'"}
    )
    await world.send("a@sender.test", ["b@one.test"], requiretls=True)
    await world.send("a@sender.test", ["b@two.test"], requiretls=True)
    settled = await daemon.outcomes("b@one.test", "b@two.test")

    assert settled["b@one.test"].status is DELIVERED
    [received] = lab.mx("good.relays.test").received
    assert received.tls is not None and "REQUIRETLS" in received.mail_params
    refused = settled["b@two.test"]
    assert refused.status is SCHEDULED and refused.outcome.kind is LastError.TLS
    assert lab.mx("bad.relays.test").received == []
