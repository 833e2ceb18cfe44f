"""The management API (DESIGN §6): JMAP over HTTP for the managed objects, health, metrics.

Modules, each with one job:
    request    the JMAP Request envelope and its request-level errors (pure)
    refs       result references between calls (pure)
    failures   method-level errors as values
    auth       Bearer tokens and sys<Object><Op> permissions (pure)
    session    the JMAP Session object (pure)
    methods    runs x:<Object>/get|set|query against the registry
    bootstrap  configured tokens, or the admin token made at first start
    health     named health checks that components register (GET /healthz)
    metrics    counters and gauges that components register (GET /metrics)
    app        the aiohttp application and its routes
    server     the application on a TCP listener, as an async context manager

Components outside the API import only `health` and `metrics` (neither imports aiohttp).
"""
