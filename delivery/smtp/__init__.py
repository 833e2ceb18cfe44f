"""Outbound SMTP/LMTP client: mechanisms the engine sequences, never policy.

Modules (import the module, not its names):
    reply    `Reply` and the incremental, capped `ReplyParser` (pure)
    esmtp    EHLO extensions, `Envelope`/`Recipient`, MAIL/RCPT parameters (pure)
    data     `prepare_data`: CRLF normalisation and dot-stuffing, smuggling-proof (pure)
    tls      cached PKIX / unverified client contexts, `peer_chain`, `tls_info`
    session  `SmtpSession`: connect (plain or implicit TLS), EHLO, STARTTLS, AUTH PLAIN/LOGIN
             (inside TLS only), pipelined transaction, RSET, QUIT
    pool     `ConnectionPool`: idle sessions kept between messages, by `pool_key` (host,
             address, source, TLS plan, policy domain...), with message, idle and age limits
    server   `ServerDialogue`: the sans-I/O SMTP server core of the submission listener and
             of the harness receivers
    errors   the classified `AttemptError`s each step raises
"""
