"""`delivery explain RCPT [--from SENDER] [--json]`: what a delivery to RCPT would do now.

Asks the running daemon (``x:Explain/get``, permission ``sysExplainGet``), which takes the
steps of a first delivery attempt without connecting to any MX host, with its own resolver,
MTA-STS cache and DNSSEC probe (delivery/engine/explain.py). The API is found as for
``delivery get``: ``--url``, else ``DELIVERY_URL``, else ``[api] listen`` of the settings;
the token from ``--token``, else ``DELIVERY_TOKEN``.

Output: the decision first (connect to which host and address, with what TLS and what would
authenticate it; or defer / bounce and why), then one row per address in the order they
would be tried, then each address's details (strategies and the variables their expressions
saw, MTA-STS, DANE, the TLS plan and what each TLS event would cause), then the recipient's
route and schedule, the MX lookup, the MTA-STS policy and where it came from, the DNSSEC
status. ``--json`` prints the explanation as JSON (its shape is documented in
delivery/engine/explain.py).

Outcomes (exit status):
    0  explained (whatever the decision: a predicted defer or bounce is an answer)
    1  the API refused (401, forbidden, an invalid address) or is unreachable
    2  usage: a missing argument, or an unreadable settings file

Security: the token is never printed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from delivery.cli import objects

__all__ = ["explain_command", "render"]

METHOD = "x:Explain/get"

_EVENTS = {
    "no-starttls": "STARTTLS not offered",
    "cert-rejected": "certificate rejected",
    "handshake-failed": "handshake failed",
}
_REACTIONS = {
    "continue-clear": "deliver in clear text",
    "reconnect-clear": "reconnect and deliver in clear text",
    "fail-host": "fail this host",
}
_STEP_STYLES = {
    "connect": "bold green",
    "deliver-local": "bold green",
    "next-host": "yellow",
    "defer": "bold yellow",
    "bounce": "bold red",
}


def _where(decision: dict[str, Any]) -> str:
    host, ip, port = decision.get("host"), decision.get("ip"), decision.get("port")
    if host is None:
        return ""
    where = f"{host} [{ip}]" if ip else str(host)
    return f"{where}:{port}" if port is not None else where


def _decision(explained: dict[str, Any]) -> RenderableType:
    decision = explained["decision"]
    action = decision["action"]
    style = _STEP_STYLES.get(action, "bold")
    lines = Text()
    if action == "connect":
        lines.append("Decision: ", style="bold")
        lines.append(f"connect to {_where(decision)}", style=style)
        address = _decided_address(explained)
        if address is not None and address.get("tls") is not None:
            tls = address["tls"]
            required = "; ".join(tls["requiredBy"]) if tls["required"] else ""
            mode = f"TLS {tls['mode']}" + (f": {required}" if required else "")
            lines.append(f"\n  {mode}\n  authenticated by {tls['authenticatedBy']}")
    else:
        lines.append("Decision: ", style="bold")
        lines.append(decision["text"], style=style)
        if decision["status"]:
            lines.append(f"\n  status {decision['status']}, last_error {decision['kind']}")
        if decision["rule"]:
            lines.append(f"; {decision['rule']}")
        where = _where(decision)
        if where:
            lines.append(f"\n  at {where}")
    return lines


def _decided_address(explained: dict[str, Any]) -> dict[str, Any] | None:
    decision = explained["decision"]
    for host in explained["hosts"]:
        for address in host["addresses"]:
            if host["host"] == decision["host"] and address["ip"] == decision["ip"]:
                return dict(address)
    return None


def _step_cell(address: dict[str, Any]) -> Text:
    step = address["step"]
    if step is None:
        return Text("not reached", style="dim")
    label = step["action"]
    if address["fallback"]:
        label = f"if the above fail: {label}"
    return Text(label, style=_STEP_STYLES.get(step["action"], ""))


def _tls_cell(address: dict[str, Any]) -> str:
    tls = address["tls"]
    if tls is None:
        return "-"
    return f"{tls['mode']}, {tls['verification']}"


def _hosts_table(explained: dict[str, Any]) -> Table:
    table = Table(title="Hosts, in the order they would be tried", box=box.SIMPLE_HEAD)
    for column in ("#", "host", "address", "step", "TLS", "why"):
        table.add_column(column, overflow="fold")
    number = 0
    for host in explained["hosts"]:
        if not host["addresses"]:
            table.add_row(
                "", Text(host["host"]), "-", Text("skipped", style="dim"), "-", Text(host["note"])
            )
        for address in host["addresses"]:
            number += 1
            step = address["step"]
            why = step["reason"] if step is not None and step["action"] != "connect" else ""
            if not why and address["tls"] is not None and address["tls"]["required"]:
                why = "; ".join(address["tls"]["requiredBy"])
            table.add_row(
                str(number),
                Text(host["host"]),
                Text(address["ip"] or "-"),
                _step_cell(address),
                _tls_cell(address),
                Text(why),  # Text: DNS names and reasons are never read as markup
            )
    return table


def _variables(values: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in values.items())


def _heading(text: str, rest: str = "") -> Text:
    """A line with a bold start; nothing in it is read as markup (DNS data is untrusted)."""
    return Text.assemble((text, "bold"), rest)


def _address_details(host: dict[str, Any], address: dict[str, Any]) -> Iterable[Text | str]:
    preference = f" (preference {host['preference']})" if host["preference"] is not None else ""
    yield _heading(f"{host['host']} [{address['ip'] or '-'}]", preference)
    connection, tls_strategy = address["connection"], address["tlsStrategy"]
    if connection is not None:
        yield f"  {connection['text']}  ({_variables(connection['variables'])})"
    if tls_strategy is not None:
        strategy = tls_strategy["strategy"]
        yield (
            f"  {tls_strategy['text']}: startTls {strategy['startTls']}, dane {strategy['dane']}, "
            f"mtaSts {strategy['mtaSts']}, allowInvalidCerts "
            f"{str(strategy['allowInvalidCerts']).lower()}  "
            f"({_variables(tls_strategy['variables'])})"
        )
    if address["mtaSts"] is not None:
        yield f"  MTA-STS: {address['mtaSts']['reason']}"
    dane = address["dane"]
    if dane is not None:
        yield f"  DANE: {dane['reason']}"
        for lookup in dane["lookups"]:
            security = "secure" if lookup["secure"] else "insecure"
            records = ", ".join(lookup["records"]) or "no records"
            yield f"    TLSA {lookup['qname']}: {lookup['status']}, {security}: {records}"
    tls = address["tls"]
    if tls is not None:
        required = ": " + "; ".join(tls["requiredBy"]) if tls["requiredBy"] else ""
        yield f"  TLS {tls['mode']}{required}"
        yield f"  authenticated by {tls['authenticatedBy']}"
        if tls["refusal"]:
            yield f"  refused: {tls['refusal']}"
        reactions = [
            f"{_EVENTS.get(event, event)} -> {_REACTIONS.get(reaction, reaction)}"
            for event, reaction in tls["onTlsEvents"].items()
        ]
        if reactions:
            yield "  if " + "; ".join(reactions)
    step = address["step"]
    if step is not None:
        prefix = "if the hosts above fail: " if address["fallback"] else ""
        yield f"  step: {prefix}{step['text']}"


def _route_line(explained: dict[str, Any]) -> str:
    route = explained["routeObject"]
    text = explained["route"]["text"]
    match route["type"]:
        case "Mx":
            return (
                f"{text} (Mx: {route['ipLookupStrategy']}, at most {route['maxMxHosts']} MX "
                f"hosts, {route['maxMultihomed']} addresses each)"
            )
        case "Relay":
            return f"{text} (Relay: {route['address']}:{route['port']} over {route['protocol']})"
        case _:
            return f"{text} ({route['type']})"


def _context(explained: dict[str, Any]) -> Iterable[Text | str]:
    yield _heading("Recipient")
    if explained["route"] is not None:
        yield f"  {_route_line(explained)}"
        queue = explained["queue"]
        yield (
            f"  {explained['schedule']['text']}, virtual queue {queue['name']!r} "
            f"({queue['threadsPerNode']} per node)"
        )
    yield f"  rcpt variables: {_variables(explained['variables'])}"
    mx = explained["mx"]
    if mx is not None:
        lookup = mx["lookup"]
        listed = sorted(lookup["records"], key=lambda r: (r["preference"], r["exchange"]))
        records = ", ".join(f"{r['preference']} {r['exchange']}" for r in listed)
        security = "DNSSEC-secure" if lookup["secure"] else "not DNSSEC-secure"
        implicit = " (no MX records: the domain is its own host)" if mx["implicit"] else ""
        yield _heading(
            "MX",
            f" of {explained['domain']}: {lookup['status']}, {security}"
            f"{': ' + records if records else ''}{implicit}",
        )
        if mx["randomOrder"]:
            yield "  hosts of equal preference are tried in a random order by each attempt"
    sts = explained["mtaSts"]
    if sts is not None:
        yield _heading("MTA-STS", f": {sts['text']}")
    yield _heading("DNSSEC", f": {explained['dnssec']['text']}")
    for note in explained["notes"]:
        yield _heading("note", f": {note}")


def render(explained: dict[str, Any], /) -> RenderableType:
    """render - the human report of one explanation (its JSON form)."""
    sender = explained["sender"] or "<>"
    title = Text.assemble(
        ("delivery explain ", "bold"),
        (explained["recipient"], "bold"),
        f"  (sender {sender}, at {explained['at']})",
    )
    parts: list[RenderableType] = [title, _decision(explained)]
    lines: list[Text | str] = []
    if explained["hosts"]:
        parts.append(_hosts_table(explained))
        for host in explained["hosts"]:
            for address in host["addresses"]:
                lines.extend(_address_details(host, address))
    lines.extend(_context(explained))
    # Plain strings become Text as they are, never parsed as markup.
    parts.extend(line if isinstance(line, Text) else Text(line) for line in lines)
    return Group(*parts)


@click.command("explain")
@click.argument("recipient", metavar="RCPT")
@click.option(
    "--from", "sender", default="", metavar="SENDER", help="Envelope sender (default: <>)."
)
@objects.api_options
def explain_command(
    recipient: str,
    sender: str,
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """Show what a delivery to RCPT would do now, sending nothing: route, schedule, MX hosts,
    MTA-STS, TLSA records, the TLS each host requires and what would authenticate it."""
    ctx = objects.ApiContext(url, token, cfg, as_json)

    def action() -> None:
        result = ctx.client.call(METHOD, {"recipient": recipient, "sender": sender})
        [explained] = result.get("list") or [None]
        if not isinstance(explained, dict):
            objects.fail(f"{METHOD} answered without an explanation")
        if ctx.as_json:
            objects.print_json(explained)
        else:
            ctx.console.print(render(explained))

    ctx.run(action)
