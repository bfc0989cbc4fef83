"""Mail: building messages, DKIM, transports, the outbox's sender, tokens, and what comes back (bounces, webhooks)."""
