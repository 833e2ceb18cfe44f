"""Mail intake: the SMTP submission listener and what it shares with `delivery send`.

- `listener`: `SubmissionListener`, the asyncio shell around `delivery.smtp.server` (the
  protocol core) listening on ``[submission] listen``; an async context manager.
- `policy`: `SubmissionPolicy`, the decisions before the message: allowed networks, AUTH
  required, address syntax, DSN parameter lengths.
- `intake`: `Intake.accept`, the end-of-data step: plan, enqueue durably, then 250.
- `message`: pure: the queued message and recipients from what the client sent, and the
  Received header.
- `planning`: `make_planner`, each recipient's schedule from the ``schedule`` expression.
- `credentials`: the users AUTH accepts.
- `defaults`: the named defaults and caps.

Data flows one way: a client -> the core -> `Intake` -> `QueueStore.enqueue`; the worker
picks the message up from the store (``on_enqueued`` wakes it).
"""
