"""Personalized issue messages per second: the render-once path against the naive one.

Builds 10,000 ready-to-send messages (bytes) of a 10-paper issue through
MessageTemplate.personalize, then the naive path (render + CSS inlining + a full
EmailMessage per recipient) for a sample of recipients, and prints both rates and
their ratio; then the same with DKIM signing (a 2048-bit RSA key made here).

    .venv/bin/python bench/render.py [--messages 10000] [--naive 200] [--dkim 300]
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
from newsletter.message import build_message, message_template  # noqa: E402
from newsletter.render import build_issue, render_issue  # noqa: E402
from newsletter.select import IsoWeek  # noqa: E402


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=200, help="naive-path sample size")
    parser.add_argument("--dkim", type=int, default=300, help="messages signed with DKIM")
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
            template.personalize(to_address=address, to_name=name, unsubscribe_token=token).data
        )
    fast = _rate(len(recipients), time.perf_counter() - start)

    start = time.perf_counter()
    for address, name, token in recipients[: args.naive]:
        again = render_issue(cfg, issue, "ko")
        build_message(
            cfg, again, to_address=address, to_name=name, unsubscribe_token=token
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
            signed.personalize(to_address=address, to_name=name, unsubscribe_token=token)
        rate = _rate(min(args.dkim, len(recipients)), time.perf_counter() - start)
        print(f"render once + personalize + DKIM (dkimpy, RSA-2048): {rate:,.0f} messages/s")


if __name__ == "__main__":
    main()
