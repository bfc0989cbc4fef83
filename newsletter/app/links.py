"""The check before a real send: links that a one-click unsubscribe can use, and a real
Message-ID domain.

Apart from the issue's operations (:mod:`newsletter.app.issues`, which names it too), so
that ``newsletter run`` makes it before it listens without importing the database and the
renderers they need.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from newsletter.config import Config
from newsletter.errors import NewsletterError

__all__ = ["InsecureLinks", "check_links"]


class InsecureLinks(NewsletterError):
    pass


def check_links(cfg: Config, *, allow_insecure: bool) -> None:
    """A real SMTP send needs https links (RFC 8058 one-click) and a real Message-ID domain;
    the Maildir outbox is for trying things out and is exempt."""
    if not cfg.smtp.host or allow_insecure:
        return
    if urlsplit(cfg.site_url).scheme != "https":
        where = (
            f"base_url is {cfg.base_url}"
            if cfg.base_url
            else f"base_url is not set, so links point to the listening address {cfg.site_url}"
        )
        raise InsecureLinks(
            f"{where}: one-click unsubscribe (RFC 8058) needs an https base_url in a real "
            "send (--allow-insecure-links to send anyway, for testing)"
        )
    # Only for a real send: the message module brings the renderers and DKIM.
    from newsletter.mail.message import message_domain

    domain = message_domain(cfg)
    if domain in ("localhost", "localhost.localdomain") or "." not in domain:
        raise InsecureLinks(
            f"Message-IDs would end in @{domain}: set email.from_address (or "
            "email.dkim_domain) to your domain (--allow-insecure-links to send anyway)"
        )
