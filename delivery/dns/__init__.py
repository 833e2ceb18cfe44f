"""The engine's DNS: an async resolver with cache, deadlines and DNSSEC status.

Modules (import the module, then use its names: ``from delivery.dns import resolver``):
    result    Lookup, DnsResult, MxRecord, TlsaRecord, is_null_mx: what lookups return
    resolver  Resolver: queries the configured nameservers, never the system resolver
    answer    pure core: one DNS response -> DnsResult
    cache     DnsCache: TTL-bounded, shared by every delivery, with hit/miss counters
    names     normalize_name, parse_nameserver / format_nameserver

Expected outcomes are values (Lookup.NXDOMAIN, Lookup.TEMPFAIL, ...); no lookup
raises. Policy code (DANE, MTA-STS) decides from `DnsResult.secure`, which is only
ever True for the AD bit of a resolver the operator trusts.
"""
