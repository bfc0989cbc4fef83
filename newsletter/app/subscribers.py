"""Managing the subscriber list: address validation, CSV import and export."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from email_validator import EmailNotValidError, validate_email

from newsletter.config import LANGS
from newsletter.errors import NewsletterError
from newsletter.models import Problem
from newsletter.pacing import Steps
from newsletter.store import SUBSCRIBER_STATUSES, Store, Subscriber

log = logging.getLogger(__name__)

CSV_FIELDS = ("email", "name", "lang")


class AddressError(NewsletterError):
    """An address or a name that cannot be used. ``kind`` says what is wrong with it, for
    a form to tell the visitor in its own words and language (``empty``, ``at_sign``,
    ``non_ascii``, ``spaces``, ``domain``, ``too_long``, ``invalid``, ``name_...``)."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class EncodedWordError(AddressError):
    """A name holding RFC 2047 encoded-word markers (``=?`` or ``?=``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "name_encoded_word")


# Encoded words in a name could be decoded and folded into real header lines by mail
# software (CPython's email package did, CVE-2024-6923): such names are refused outright.
_ENCODED_WORD_MARK = re.compile(r"=\?|\?=")


# The one reason an address with other characters before the @ is refused, wherever it is
# typed (the form says it in the page's language): sending to it needs SMTPUTF8 all the way
# to the mailbox, which the messages here are not built for.
NON_ASCII_LOCAL = (
    "the part before the @ can only hold Latin letters, digits and . _ - +: addresses "
    "with Korean or other characters there cannot be sent to"
)


def normalize_address(text: str) -> str:
    """A syntactically valid address in normal form, its domain in IDNA (ASCII) form
    (``reader@한국.kr`` -> ``reader@xn--3e0b707e.kr``), which every mail server takes and
    which is what is stored and sent to; no DNS lookups. Else :class:`AddressError`."""
    raw = text.strip()
    if any(c in raw for c in "\r\n"):
        raise AddressError(
            f"{raw!r} is not a valid email address: it contains a line break", "spaces"
        )
    try:
        valid = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        kind = _kind(raw)
        if kind == "non_ascii":
            raise AddressError(f"{raw!r}: {NON_ASCII_LOCAL}", kind) from None
        raise AddressError(f"{raw!r} is not a valid email address: {exc}", kind) from None
    return valid.ascii_email or valid.normalized


def _kind(address: str) -> str:
    """What is wrong with an address the validator refused, told from the address itself."""
    local, at, domain = address.rpartition("@")
    if not address:
        return "empty"
    if not at or not local or not domain or "@" in local:
        return "at_sign"
    if any(c.isspace() for c in address):
        return "spaces"
    if len(address) > 254 or len(local) > 64:
        return "too_long"
    if not local.isascii():
        return "non_ascii"
    if "." not in domain.strip(".") or not all(domain.split(".")):
        return "domain"
    return "invalid"


def check_name(name: str) -> str:
    name = name.strip()
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise AddressError("name must be one line without control characters", "name_control")
    if _ENCODED_WORD_MARK.search(name):
        raise EncodedWordError("name must not contain the character sequences =? or ?=")
    if len(name) > 200:
        raise AddressError("name is longer than 200 characters", "name_too_long")
    return name


def check_lang(lang: str, default: str) -> str:
    lang = (lang or default).strip().lower()
    if lang not in LANGS:
        raise AddressError(f"language must be one of {', '.join(LANGS)}, got {lang!r}")
    return lang


@dataclass
class ImportReport:
    added: int = 0
    merged: int = 0
    problems: list[Problem] = field(default_factory=list)


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError) -> str:
    """The whole file is refused, in one line saying where and how to save it instead."""
    line = data.count(b"\n", 0, exc.start) + 1
    what = f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x})"
    try:
        data.decode("cp949")
    except UnicodeDecodeError:
        return f"{what}; save the file as UTF-8 and import it again"
    # Excel's plain "CSV" on a Korean system is CP949 (EUC-KR), which reads as that.
    return (
        f"{what}: it looks like Korean Excel's CP949; save it in Excel as "
        '"CSV UTF-8 (Comma delimited)" and import it again'
    )


def import_csv(
    store: Store, path: Path, default_lang: str = "ko", *, progress: Steps | None = None
) -> ImportReport:
    """Add every good row of a ``email,name,lang`` CSV; report each bad one with its line.
    ``progress`` is told the lines read after the header and the lines there are."""
    report = ImportReport()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NewsletterError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NewsletterError(_not_utf8(path, data, exc)) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if "email" not in header:
        raise NewsletterError(
            f"{path}:1: the header row must name an 'email' column (email,name,lang)"
        )
    reader.fieldnames = header
    # Lines, not rows: a quoted field may hold line breaks, and the reader counts lines.
    lines = text.count("\n") + (0 if text.endswith("\n") else 1) - 1
    while True:
        if progress is not None:
            progress(min(reader.line_num - 1, lines), lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A row the csv module cannot read (e.g. a field over its size limit) is
            # reported like any bad row; reading goes on with the next line.
            report.problems.append(Problem(str(path), reader.line_num + 1, f"not valid CSV: {exc}"))
            continue
        try:
            email = normalize_address(row.get("email") or "")
            name = check_name(row.get("name") or "")
            lang = check_lang(row.get("lang") or "", default_lang)
        except AddressError as exc:
            report.problems.append(Problem(str(path), reader.line_num, str(exc)))
            continue
        _, created = store.add_subscriber(email, name, lang)
        if created:
            report.added += 1
        else:
            report.merged += 1
    return report


def check_filters(status: str | None, lang: str | None) -> None:
    """Refuse a state or a language the list cannot hold, in one line."""
    if status is not None and status not in SUBSCRIBER_STATUSES:
        raise NewsletterError(f"status must be one of {', '.join(SUBSCRIBER_STATUSES)}")
    if lang is not None and lang not in LANGS:
        raise NewsletterError(f"language must be one of {', '.join(LANGS)}, got {lang!r}")


def export_csv(
    store: Store,
    out: TextIO,
    status: str | None = None,
    *,
    query: str = "",
    lang: str | None = None,
    spreadsheet: bool = False,
) -> int:
    """Write subscribers as CSV (``email,name,lang,status``), streaming; returns the count.
    ``status``, ``lang`` and ``query`` (part of the address or name) narrow the list.
    With ``spreadsheet``, a name a spreadsheet would read as a formula (anyone may type
    ``=HYPERLINK(...)`` into the subscribe form) is written with a leading ``'``."""
    check_filters(status, lang)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, "status"])
    count = 0
    for sub in store.iter_subscribers(status, query=query, lang=lang):
        name = _inert(sub.name) if spreadsheet else sub.name
        writer.writerow([sub.email, name, sub.lang, sub.status])
        count += 1
    return count


# What spreadsheets take for the start of a formula (OWASP, "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


# The first line of `newsletter subscribers list`: scripts skip it with `tail -n +2`.
LIST_HEADER = "email\tname\tlang\tstatus\twhy"


def rows(
    store: Store, status: str | None = None, *, query: str = "", lang: str | None = None
) -> Iterator[str]:
    """:data:`LIST_HEADER`, then one tab-separated line per subscriber (narrowed as by
    :func:`export_csv`); the fifth column says why the status changed (a bounce, a
    complaint: reason, status code, time and diagnostic) when it is known."""
    yield LIST_HEADER
    for sub in store.iter_subscribers(status, query=query, lang=lang):
        line = f"{sub.email}\t{sub.name}\t{sub.lang}\t{sub.status}"
        yield f"{line}\t{sub.why}" if sub.why else line


def unsubscribe(store: Store, subscriber_id: int, reason: str = "console") -> Subscriber | None:
    """An operator takes one subscriber off the list (the console's button); its history
    stays. None when there is no such subscriber."""
    found = store.get_subscriber(id=subscriber_id)
    if found is None:
        return None
    if found.status != "unsubscribed":
        store.set_status(found.id, "unsubscribed", reason=reason)
    return store.get_subscriber(id=subscriber_id)
