"""A locally generated certificate, so the local stack's API can be reached over HTTPS.

Why self-signed: the stack runs on loopback with no domain name and no network, so no public
CA can issue for it and there is no one else to trust. The certificate is its own issuer
(``BasicConstraints CA=True``), which lets a client trust it directly as a CA file; nothing is
added to the system's trust store. It names every host it serves (by default ``localhost`` and
``127.0.0.1``) in its subjectAlternativeName, so hostname checks pass, and it is valid for a
year from a few minutes ago (clock skew).

Where it lives: ``cert.pem`` and ``key.pem`` in the directory given to :func:`local_certificate`
(the stack's is ``.sluice/tls/``; ``key.pem`` is readable by its owner only). The pair is
reused while it parses, matches, covers the hosts asked for and has more than 7 days left;
otherwise it is generated again, so deleting the directory is always safe.

How to trust it:

- curl: ``curl --cacert .sluice/tls/cert.pem https://127.0.0.1:8080/...``
- Python: ``ssl.create_default_context(cafile=".sluice/tls/cert.pem")`` (or
  :meth:`LocalCertificate.client_context`) passed to ``urllib.request.urlopen(...,
  context=...)``; requests: ``requests.post(url, verify=".sluice/tls/cert.pem")``
- boto3/botocore: ``boto3.client(..., verify=".sluice/tls/cert.pem")`` or
  ``AWS_CA_BUNDLE=.sluice/tls/cert.pem``; most other tools read ``SSL_CERT_FILE``.

The certificate is for a developer's machine only: anyone who can read ``key.pem`` can
impersonate these hosts to a client that trusts ``cert.pem``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
COMMON_NAME = "sluice local stack"
VALIDITY = timedelta(days=365)
BACKDATE = timedelta(minutes=5)
RENEW_BEFORE = timedelta(days=7)
DEFAULT_HOSTS = ("localhost", "127.0.0.1")

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class LocalCertificate:
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """What the server presents: this certificate and key, TLS 1.2 or later."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate (and verifies hostnames as usual)."""
        return ssl.create_default_context(cafile=self.cert_path)


def local_certificate(directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> LocalCertificate:
    """The certificate and key in ``directory``, generated there unless a usable pair exists."""
    wanted = _names(hosts)
    directory.mkdir(parents=True, exist_ok=True)
    certificate = LocalCertificate(directory / CERT_FILE, directory / KEY_FILE)
    if not _usable(certificate, wanted):
        _generate(certificate, wanted)
    return certificate


def _names(hosts: Sequence[str]) -> list[str | _IpAddress]:
    """Each host once, IP addresses (``127.0.0.1``, ``::1``, ``[::1]``) told from DNS names."""
    if isinstance(hosts, str):
        raise TypeError("hosts is a sequence of host names, not one string")
    names: list[str | _IpAddress] = []
    for host in hosts:
        text = host.strip().strip("[]")
        if not text:
            raise ValueError(f"empty host name in {list(hosts)!r}")
        try:
            name: str | _IpAddress = ipaddress.ip_address(text)
        except ValueError:
            name = text.lower()
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("at least one host is needed")
    return names


def _usable(certificate: LocalCertificate, wanted: list[str | _IpAddress]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(certificate.cert_path.read_bytes())
        key = serialization.load_pem_private_key(certificate.key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    now = datetime.now(UTC)
    covered: set[str | _IpAddress] = {
        name.lower() for name in san.get_values_for_type(x509.DNSName)
    }
    covered.update(
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)  # not networks
    )
    return (
        key.public_key() == cert.public_key()  # not a cert from one run, key from another
        and cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc - now > RENEW_BEFORE
        and all(name in covered for name in wanted)
    )


def _generate(certificate: LocalCertificate, names: list[str | _IpAddress]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    now = datetime.now(UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(name) if isinstance(name, str) else x509.IPAddress(name) for name in names
    ]
    # Self-issued and self-trusted: both a CA (a client loads it as its CA file) and the server's
    # own certificate. Extensions chosen to also pass OpenSSL's X509_STRICT checks, which
    # Python 3.13's default client context turns on.
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now - BACKDATE + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a crash in between leaves a mismatched pair, which _usable rejects.
    _write_atomically(certificate.key_path, key_pem, mode=0o600)
    _write_atomically(certificate.cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one (temp file + os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.chmod(tmp, mode)  # mkstemp creates 0o600: the key is never readable by others
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
