"""TLS and login against a real SMTP server: STARTTLS, implicit TLS, certificate checks."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import FaultySmtpHandler, free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.mail.transport import DeliveryError, SmtpTransport, transport_factory


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Authenticator:
    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"sender",
            b"s3cret",
        )
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[FaultySmtpHandler, int, Path]]:
    mode = request.param
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = FaultySmtpHandler()
    port = free_port()
    options: dict[str, Any] = {"authenticator": _Authenticator(), "auth_require_tls": True}
    if mode == "starttls":
        options.update(tls_context=context, require_starttls=True)
    else:
        # aiosmtpd cannot tell that an implicit-TLS connection is encrypted, so it would
        # hide AUTH; the connection is TLS from the first byte all the same.
        options.update(ssl_context=context, auth_require_tls=False)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield handler, port, cert
    finally:
        controller.stop()


def _smtp(cfg: Config, port: int, tls: str, **changes: Any) -> Config:
    smtp = dataclasses.replace(
        cfg.smtp,
        host="127.0.0.1",
        port=port,
        tls=tls,
        username="sender",
        password="s3cret",
        **changes,
    )
    return cfg.replace(smtp=smtp)


def _send(cfg: Config) -> None:
    async def main() -> None:
        transport = SmtpTransport(cfg)
        try:
            await transport.send(
                "from@example.org", "to@example.org", b"Subject: hi\r\n\r\nhello\r\n"
            )
        finally:
            await transport.close()

    asyncio.run(main())


@pytest.mark.parametrize("tls_server", ["starttls", "implicit"], indirect=True)
def test_tls_with_a_trusted_certificate_and_login(
    cfg: Config,
    tls_server: tuple[FaultySmtpHandler, int, Path],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    handler, port, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate only
    mode = request.node.callspec.params["tls_server"]
    _send(_smtp(cfg, port, mode))
    assert handler.counts() == {"to@example.org": 1}
    # A wrong password is refused, not retried in plaintext.
    with pytest.raises(DeliveryError, match="login refused"):
        _send(cfg.replace(smtp=dataclasses.replace(_smtp(cfg, port, mode).smtp, password="wrong")))


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_an_untrusted_certificate_is_refused_by_default(
    cfg: Config, tls_server: tuple[FaultySmtpHandler, int, Path]
) -> None:
    handler, port, _ = tls_server
    with pytest.raises(DeliveryError, match="cannot connect"):
        _send(_smtp(cfg, port, "starttls"))
    assert handler.counts() == {}
    _send(_smtp(cfg, port, "starttls", verify_certificates=False))
    assert handler.counts() == {"to@example.org": 1}


def test_starttls_never_falls_back_to_plaintext(
    cfg: Config, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server  # offers no STARTTLS
    with pytest.raises(DeliveryError):
        _send(_smtp(cfg, port, "starttls"))
    assert handler.counts() == {}


def test_a_password_requires_tls(cfg: Config) -> None:
    with pytest.raises(NewsletterError, match="TLS"):
        transport_factory(_smtp(cfg, 25, "none"))


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_secrets_stay_out_of_errors_and_logs(
    cfg: Config,
    tls_server: tuple[FaultySmtpHandler, int, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, port, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    caplog.set_level("DEBUG")
    secret = "hunter2-do-not-print"
    with pytest.raises(DeliveryError) as info:
        _send(
            cfg.replace(
                smtp=dataclasses.replace(_smtp(cfg, port, "starttls").smtp, password=secret)
            )
        )
    assert secret not in str(info.value)
    assert secret not in caplog.text
    assert secret not in repr(cfg.replace(smtp=dataclasses.replace(cfg.smtp, password=secret)))
