"""The delivery engine: due recipients in, delivered / deferred / bounced out (DESIGN §1, §5).

Modules (import the module, then use its names: ``from delivery.engine import worker``):
    worker     Worker: leases due recipients per virtual queue, runs attempts, records
               outcomes and DSNs; build_worker(settings, registry, store) for the daemon
    recorder   Recorder: the outcomes of jobs that finish together in one store write
    eventloop  run(main): the daemon's event loop (uvloop when installed)
    attempt    Attempt: one delivery attempt for one message, domain and route (Mx, Relay,
               Local), STARTTLS as the TLS plan says, fail-over across hosts and addresses
    planner    pure: what each strategy expression picked, MX order, addresses, TLS plan
    variables  pure: the rcpt and host variables of the expressions (DESIGN §4)
    local      the Local route's maildir delivery
    outcome    pure: the error policy (TRY_NEXT_HOST / DEFER / BOUNCE) and Outcome values
    schedule   pure: retry, notify and expiry arithmetic
    dsn        pure: RFC 3464 delivery status notifications

Data flows one way: worker -> planner -> attempt -> smtp / dns -> outcome -> worker -> queue.
"""
