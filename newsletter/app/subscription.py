"""Subscribing: a request from the form queues a confirmation mail (double opt-in), and
the editor's Approve button queues a draft issue. The web pages are
:mod:`newsletter.web.subscription`'s; the work is done here, where the CLI and the
scheduler reach it too."""

from __future__ import annotations

import datetime as dt
import logging
import time

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.lifecycle import CONFIRM_DAYS
from newsletter.mail.message import confirmation_message
from newsletter.mail.tokens import CONFIRM, make_token
from newsletter.store import Issue, Store

log = logging.getLogger(__name__)

__all__ = [
    "ADDRESS_DAILY",
    "ADDRESS_GAP",
    "CONFIRM_DAYS",
    "RateLimited",
    "approve_and_start",
    "confirm_purpose",
    "confirm_url",
    "mask_address",
    "request_subscription",
]

# Confirmation mails to one address: one per ADDRESS_GAP, at most ADDRESS_DAILY a day.
ADDRESS_GAP = dt.timedelta(minutes=10)
ADDRESS_DAILY = 3
_ADDRESS_LIMITS = ((ADDRESS_GAP, 1), (dt.timedelta(days=1), ADDRESS_DAILY))


def confirm_url(cfg: Config, token: str) -> str:
    return f"{cfg.site_url}confirm/{token}"


class RateLimited(NewsletterError):
    """Too many requests: answered with 429."""


def request_subscription(
    cfg: Config, store: Store, key: bytes, email: str, name: str, lang: str
) -> int:
    """Queue the confirmation mail of a request from the form; returns the mail's id.

    Known or not, active or not, the address gets the same work: a confirmation row
    bound to a fresh nonce (replacing older ones), the mail rendered and recorded. The
    subscriber changes only when the link's button is pressed. An address that bounced
    or complained is answered the same, but its mail is never sent. :class:`RateLimited`
    when the address had a mail in the last ten minutes or three in a day, checked and
    recorded in one transaction, so requests arriving together cannot pass it together."""
    expires = int(time.time()) + CONFIRM_DAYS * 86400
    urls: list[str] = []

    def mail(confirmation_id: int, nonce: str, address: str) -> tuple[str, bytes]:
        token = make_token(key, confirm_purpose(nonce), confirmation_id, expires=expires)
        urls.append(confirm_url(cfg, token))
        message = confirmation_message(
            cfg,
            lang=lang,
            to_address=address,
            to_name=name,
            confirm_url=urls[-1],
            valid_days=CONFIRM_DAYS,
        )
        return message.message_id, message.data

    request = store.request_confirmation(email, name, lang, limits=_ADDRESS_LIMITS, mail=mail)
    if request is None:
        raise RateLimited("a confirmation was mailed to this address a moment ago")
    if request.withheld:
        log.info("confirmation for %s %s", mask_address(request.address), request.withheld)
    elif not cfg.smtp.host:
        # Trying it out, with the Maildir outbox: the link is said where the person running
        # it looks. Never with real mail, where only the address's owner may see it.
        log.info(
            "confirmation link for %s (no SMTP host: the mail goes to %s): %s",
            mask_address(request.address),
            cfg.outbox_path / "new",
            urls[-1],
        )
    return request.mail_id


def confirm_purpose(nonce: str) -> str:
    # The nonce is part of what is signed: a link works only for the request it was made for.
    return f"{CONFIRM}:{nonce}"


def mask_address(email: str) -> str:
    """``kim@example.com`` -> ``k***@example.com``: enough for its owner to recognise."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else email


def approve_and_start(cfg: Config, store: Store, row: Issue) -> Issue:
    """The Approve button: freeze the draft from the archive as it is now, and queue it."""
    from newsletter.app import delivery
    from newsletter.archive.sources import load_local_archive
    from newsletter.select import IsoWeek

    return delivery.ready_to_send(
        cfg, store, lambda: load_local_archive(cfg), IsoWeek.parse(row.week)
    )
