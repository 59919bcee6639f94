"""The local API Gateway over HTTPS with a locally generated certificate: real TLS on loopback."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from infra.local import tls
from infra.local.api_gateway import LocalApiGateway
from infra.local.tls import LocalCertificate, local_certificate

API_KEY = "tls-key"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.dumps({"ok": True, "path": event["path"]})
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": body}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> LocalCertificate:
    return local_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")  # one server for the module: each stop takes up to half a second
def gateway(certificate: LocalCertificate) -> Iterator[LocalApiGateway]:
    server = LocalApiGateway(
        handler, lambda: None, api_key=API_KEY, ssl_context=certificate.server_context()
    )
    with server:
        yield server


def _get(url: str, context: ssl.SSLContext | None, key: str | None = API_KEY) -> tuple[int, Any]:
    # No proxies: a proxy from the environment must not stand between the test and loopback.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url + "/predict", headers={"x-api-key": key} if key else {})
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_https_with_the_local_certificate_trusted_reaches_the_function(
    gateway: LocalApiGateway, certificate: LocalCertificate
) -> None:
    assert gateway.url.startswith("https://127.0.0.1:")
    assert _get(gateway.url, certificate.client_context()) == (
        200,
        {"ok": True, "path": "/predict"},
    )


def test_the_api_key_is_still_required_over_tls(
    gateway: LocalApiGateway, certificate: LocalCertificate
) -> None:
    assert _get(gateway.url, certificate.client_context(), key=None) == (
        403,
        {"message": "Forbidden"},
    )


def test_a_client_that_does_not_trust_the_certificate_fails_verification_only_itself(
    gateway: LocalApiGateway, certificate: LocalCertificate
) -> None:
    with pytest.raises(urllib.error.URLError) as refused:
        _get(gateway.url, ssl.create_default_context())
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    assert _get(gateway.url, certificate.client_context())[0] == 200


def test_plain_http_to_the_tls_port_is_refused_and_the_server_keeps_serving(
    gateway: LocalApiGateway, certificate: LocalCertificate
) -> None:
    plain_url = gateway.url.replace("https://", "http://")
    assert _get(plain_url, None) == (
        400,
        {"message": f"This endpoint serves HTTPS: use {gateway.url}"},
    )
    assert _get(gateway.url, certificate.client_context())[0] == 200


def test_a_client_stalled_before_its_handshake_does_not_hold_up_others(
    gateway: LocalApiGateway, certificate: LocalCertificate
) -> None:
    host, port = gateway.url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=5):  # connects, never says a word
        assert _get(gateway.url, certificate.client_context())[0] == 200


def test_the_certificate_verifies_under_x509_strict(
    gateway: LocalApiGateway, certificate: LocalCertificate
) -> None:
    # Python 3.13's default client context adds VERIFY_X509_STRICT, stricter about CA extensions
    context = certificate.client_context()
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    assert _get(gateway.url, context)[0] == 200


def _san(certificate: LocalCertificate) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(certificate.cert_path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_the_certificate_names_the_hosts_and_its_key_is_private(tmp_path: Path) -> None:
    certificate = local_certificate(tmp_path / "tls")
    assert certificate.cert_path == tmp_path / "tls" / "cert.pem"
    assert certificate.key_path == tmp_path / "tls" / "key.pem"
    assert os.stat(certificate.key_path).st_mode & 0o777 == 0o600
    san = _san(certificate)
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert not list(certificate.cert_path.parent.glob("*.tmp"))


def test_the_certificate_is_reused_and_regenerated_when_the_hosts_change(tmp_path: Path) -> None:
    first = local_certificate(tmp_path)
    pem, key = first.cert_path.read_bytes(), first.key_path.read_bytes()

    again = local_certificate(tmp_path, ["127.0.0.1"])  # already covered: reused as is
    assert (again.cert_path.read_bytes(), again.key_path.read_bytes()) == (pem, key)

    wider = local_certificate(tmp_path, ["localhost", "127.0.0.1", "::1", "sluice.test"])
    assert wider.cert_path.read_bytes() != pem and wider.key_path.read_bytes() != key
    san = _san(wider)
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "sluice.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda c: c.cert_path.write_text("not a certificate"), id="garbled-cert"),
        pytest.param(lambda c: c.key_path.unlink(), id="missing-key"),
        pytest.param(
            lambda c: c.key_path.write_bytes(
                local_certificate(c.cert_path.parent / "other").key_path.read_bytes()
            ),
            id="key-from-another-pair",
        ),
    ],
)
def test_an_unusable_pair_is_regenerated(
    tmp_path: Path, damage: Callable[[LocalCertificate], object]
) -> None:
    certificate = local_certificate(tmp_path)
    pem = certificate.cert_path.read_bytes()
    damage(certificate)
    regenerated = local_certificate(tmp_path)
    assert regenerated.cert_path.read_bytes() != pem
    regenerated.server_context()  # loads: the certificate and key belong together


def test_a_certificate_about_to_expire_is_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as short:
        short.setattr(tls, "VALIDITY", timedelta(days=3))
        pem = local_certificate(tmp_path).cert_path.read_bytes()
    renewed = local_certificate(tmp_path).cert_path.read_bytes()
    assert renewed != pem
    cert = x509.load_pem_x509_certificate(renewed)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == tls.VALIDITY
