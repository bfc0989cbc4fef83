"""Personalized issue messages per second: the render-once path against the naive one.

Builds 10,000 ready-to-send messages (bytes) of a 10-paper issue through
MessageTemplate.personalize, then the naive path (render + CSS inlining + a full
EmailMessage per recipient) for a sample of recipients, and prints both rates and
their ratio; then the same with DKIM signing (a 2048-bit RSA key made here, signed through
OpenSSL), and with dkimpy's pure-Python RSA on a sample for comparison.

    .venv/bin/python bench/render.py [--messages 10000] [--naive 200] [--dkim 10000]
                                     [--dkimpy 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import long_week  # noqa: E402

from newsletter.config import load_config  # noqa: E402
from newsletter.mail.message import MessageTemplate, build_message, message_template  # noqa: E402
from newsletter.publish.render import render_issue  # noqa: E402
from newsletter.select import IsoWeek, build_issue  # noqa: E402


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=200, help="naive-path sample size")
    parser.add_argument("--dkim", type=int, default=10_000, help="messages signed with DKIM")
    parser.add_argument("--dkimpy", type=int, default=200, help="messages signed by dkimpy")
    args = parser.parse_args()

    cfg = load_config(ROOT / "config.toml", env={})
    cfg = cfg.replace(
        base_url="https://news.example.org/",
        email=dataclasses.replace(
            cfg.email,
            from_address="weekly@news.example.org",
            unsubscribe_mailto="unsubscribe@news.example.org",
            dkim_selector="mail",
        ),
    )
    archive = long_week(10)
    issue = build_issue(cfg, archive, IsoWeek.of(archive.digests[0].date))
    recipients = [
        (f"reader{i}@example.org", f"독자 {i}", f"{i:08d}.AbCdEfGhIjKlMnOpQrStUv")
        for i in range(args.messages)
    ]

    start = time.perf_counter()
    rendered = render_issue(cfg, issue, "ko")
    template = message_template(cfg, rendered, dkim_key=None)
    size = 0
    for address, name, token in recipients:
        size += len(
            template.personalize(
                to_address=address, to_name=name, unsubscribe_token=token, preferences_token=token
            ).data
        )
    fast = _rate(len(recipients), time.perf_counter() - start)

    start = time.perf_counter()
    for address, name, token in recipients[: args.naive]:
        again = render_issue(cfg, issue, "ko")
        build_message(
            cfg,
            again,
            to_address=address,
            to_name=name,
            unsubscribe_token=token,
            preferences_token=token,
        ).as_bytes()
    naive = _rate(min(args.naive, len(recipients)), time.perf_counter() - start)

    print(
        f"issue: 10 papers, HTML {len(rendered.html.encode()):,} bytes, message {size // len(recipients):,} bytes"
    )
    print(f"render once + personalize: {fast:10,.0f} messages/s ({len(recipients):,} messages)")
    print(
        f"naive (render per message): {naive:9,.0f} messages/s ({min(args.naive, len(recipients))} messages)"
    )
    print(f"ratio: {fast / naive:.0f}x")

    if args.dkim:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        signed = message_template(cfg, rendered, dkim_key=key)
        start = time.perf_counter()
        for address, name, token in recipients[: args.dkim]:
            signed.personalize(
                to_address=address, to_name=name, unsubscribe_token=token, preferences_token=token
            )
        rate = _rate(min(args.dkim, len(recipients)), time.perf_counter() - start)
        extra = (1 / rate - 1 / fast) * 1000
        print(
            f"render once + personalize + DKIM (OpenSSL, RSA-2048): {rate:8,.0f} messages/s "
            f"({min(args.dkim, len(recipients)):,} messages; signing adds {extra:.2f} ms each)"
        )
        if args.dkimpy:
            _dkimpy(template, recipients[: args.dkimpy], key)


def _dkimpy(template: MessageTemplate, recipients: list[tuple[str, str, str]], key: bytes) -> None:
    """The same messages signed by dkimpy (pure-Python RSA), as this code did before."""
    try:
        import dkim
    except ImportError:
        print("dkimpy: not installed (it is in the test extra), skipped")
        return
    headers = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Id"]
    headers += [b"List-Unsubscribe", b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type"]
    start = time.perf_counter()
    for address, name, token in recipients:
        data = template.personalize(
            to_address=address, to_name=name, unsubscribe_token=token, preferences_token=token
        ).data
        dkim.sign(
            data,
            b"mail",
            b"news.example.org",
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=headers,
        )
    rate = _rate(len(recipients), time.perf_counter() - start)
    print(
        f"render once + personalize + DKIM (dkimpy, RSA-2048): {rate:9,.0f} messages/s "
        f"({len(recipients):,} messages)"
    )


if __name__ == "__main__":
    main()
