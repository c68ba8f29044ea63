"""The Temporal client's mTLS configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from services.temporal_client import TemporalTlsConfigError, temporal_tls

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def test_no_certificate_means_a_plain_connection() -> None:
    assert temporal_tls({}) is False
    assert temporal_tls({"VPP_TEMPORAL_TLS_CERT": " ", "VPP_TEMPORAL_TLS_KEY": ""}) is False


def test_pem_text_or_files_give_a_client_certificate(tmp_path: Path) -> None:
    from_text = temporal_tls({"VPP_TEMPORAL_TLS_CERT": CERT, "VPP_TEMPORAL_TLS_KEY": KEY})
    assert isinstance(from_text, TLSConfig)
    assert from_text.client_cert == CERT.strip().encode() and from_text.client_private_key == KEY.strip().encode()
    assert from_text.server_root_ca_cert is None
    (tmp_path / "client.pem").write_text(CERT)
    (tmp_path / "client.key").write_text(KEY)
    (tmp_path / "ca.pem").write_text(CERT)
    from_files = temporal_tls({"VPP_TEMPORAL_TLS_CERT": str(tmp_path / "client.pem"),
                               "VPP_TEMPORAL_TLS_KEY": str(tmp_path / "client.key"),
                               "VPP_TEMPORAL_TLS_CA": str(tmp_path / "ca.pem")})
    assert isinstance(from_files, TLSConfig)
    assert from_files.client_private_key == KEY.encode() and from_files.server_root_ca_cert == CERT.encode()


@pytest.mark.parametrize(("environ", "message"), [
    ({"VPP_TEMPORAL_TLS_CERT": CERT}, "VPP_TEMPORAL_TLS_KEY is not set"),
    ({"VPP_TEMPORAL_TLS_KEY": KEY}, "VPP_TEMPORAL_TLS_CERT is not set"),
    ({"VPP_TEMPORAL_TLS_CERT": "/nowhere/client.pem", "VPP_TEMPORAL_TLS_KEY": KEY}, "neither PEM text nor a readable"),
])
def test_an_incomplete_or_unreadable_certificate_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(TemporalTlsConfigError, match=message):
        temporal_tls(environ)


def test_a_file_without_pem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("not a certificate")
    with pytest.raises(TemporalTlsConfigError, match="holds no PEM block"):
        temporal_tls({"VPP_TEMPORAL_TLS_CERT": str(tmp_path / "client.pem"), "VPP_TEMPORAL_TLS_KEY": KEY})
