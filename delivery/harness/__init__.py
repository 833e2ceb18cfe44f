"""The local test SMTP harness (DESIGN §7): a whole mail world on loopback.

Modules:
    certs          harness CA, intermediates, good and bad leaf certificates, TLSA data
    dns_server     DNS server for the scenario's zones: DNSSEC status, faults
    smtp_script    what a receiver is told to do: scripted replies, extensions, limits
    smtp_dialogue  the receiver's SMTP protocol core (sans-I/O)
    smtp_server    SMTP receivers on loopback addresses, recording what they get
    mtasts_server  HTTPS MTA-STS policy server, per-domain behaviour
    loopback       loopback addresses and one port shared by several addresses
    scenario       TOML scenario files, parsed and checked
    lab            a running scenario: all of the above, and the settings pointing at it

The engine never imports this package; tests, `delivery harness` and the lab do.
"""
