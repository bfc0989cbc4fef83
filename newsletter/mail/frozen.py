"""An issue's messages as approved: what is frozen when an issue leaves ``draft``, and the
message templates every sender builds from it.

The subject, HTML and text of each language and the settings its messages are built with
are stored with a content hash; every worker, resume and retry builds its messages from
that, never from the archive or the settings of the moment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from newsletter.config import Config, EmailConfig, EmailEdition
from newsletter.errors import NewsletterError
from newsletter.mail.message import MessageTemplate
from newsletter.mail.signing import Signer
from newsletter.publish.render import LANGS, RenderedIssue
from newsletter.select import IsoWeek
from newsletter.store import Issue, Store

# The settings that shape an issue's messages (headers and links), frozen with it. The
# DKIM key and selector are not: a key rotation must apply to the rest of a send.
FROZEN_EMAIL = ("name", "from_address", "from_name", "reply_to", "list_id", "unsubscribe_mailto")
# Each language's edition (its sender name and List-Id), frozen the same way.
FROZEN_EDITIONS = LANGS
FROZEN_TOP = ("base_url", "default_lang")


class FrozenError(NewsletterError):
    """An issue whose frozen content is missing."""


@dataclass(frozen=True)
class Prepared:
    """An issue's messages, ready to personalize: one template per language."""

    week: IsoWeek
    subject: str
    templates: dict[str, MessageTemplate]

    def template(self, lang: str, default: str) -> MessageTemplate:
        return self.templates.get(lang) or self.templates[default]


def frozen_settings(cfg: Config) -> dict[str, Any]:
    return {
        **{key: getattr(cfg, key) for key in FROZEN_TOP},
        # The address the links were made for: an unset base_url follows the port of the
        # process that froze the issue, and every later sender must use that one.
        "base_url": cfg.site_url,
        "email": {
            **{key: getattr(cfg.email, key) for key in FROZEN_EMAIL},
            **{lang: dataclasses.asdict(getattr(cfg.email, lang)) for lang in FROZEN_EDITIONS},
        },
    }


def contents(prepared: Prepared) -> list[dict[str, str]]:
    rows = []
    for lang, template in sorted(prepared.templates.items()):
        r = template.rendered
        rows.append(
            {
                "lang": lang,
                "subject": r.subject,
                "html": r.html,
                "text": r.text,
                "preheader": r.preheader,
                "marker": r.marker,
                "web_url": r.web_url,
            }
        )
    return rows


def content_hash(contents: list[dict[str, str]], settings: str) -> str:
    digest = hashlib.sha256(settings.encode("utf-8"))
    for row in contents:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _frozen_email(email: EmailConfig, stored: dict[str, Any]) -> EmailConfig:
    # Issues frozen before editions existed have none stored: today's apply.
    values = {key: value for key, value in stored.items() if key not in FROZEN_EDITIONS}
    for lang in FROZEN_EDITIONS:
        if isinstance(stored.get(lang), dict):
            values[lang] = EmailEdition(**stored[lang])
    return dataclasses.replace(email, **values)


def frozen(store: Store, cfg: Config, row: Issue) -> Prepared:
    """The issue's messages as frozen: the stored content with the stored settings (and
    today's DKIM key)."""
    if not row.content_hash or row.frozen_settings is None:
        raise FrozenError(f"{row.week} has no frozen content: approve it first")
    settings = json.loads(row.frozen_settings)
    built = dataclasses.replace(
        cfg,
        **{key: settings[key] for key in FROZEN_TOP if key in settings},
        email=_frozen_email(cfg.email, settings.get("email", {})),
    )
    week = IsoWeek.parse(row.week)
    # One signer for every language: the keys are read once, and a signing process
    # (newsletter.mail.signproc) signs for all of them.
    signer = Signer.from_config(built)
    templates = {}
    for content in store.frozen_contents(row.id):
        rendered = RenderedIssue(
            week=week,
            lang=content.lang,
            subject=content.subject,
            html=content.html,
            text=content.text,
            preheader=content.preheader,
            marker=content.marker,
            web_url=content.web_url,
        )
        templates[content.lang] = MessageTemplate(built, rendered, signer=signer)
    if not templates:
        raise FrozenError(f"{row.week}: its frozen content is missing")
    default = built.default_lang if built.default_lang in templates else next(iter(templates))
    return Prepared(week, templates[default].rendered.subject, templates)
