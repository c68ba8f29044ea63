"""The one way the platform connects to Temporal: address and namespace from settings, mTLS from the
environment.

Temporal Cloud (or a self-hosted Temporal with mTLS) needs a client certificate. The deployment passes
it from the secrets manager as ``VPP_TEMPORAL_TLS_CERT`` and ``VPP_TEMPORAL_TLS_KEY`` (PEM text, or the
path of a PEM file); ``VPP_TEMPORAL_TLS_CA`` optionally names the server's root CA (default: the system's
trust store). Neither set: plain connection (the local dev server). Only one set: a clear error, never a
silent fall back to plain text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.service import TLSConfig

from settings import Settings

CERT_VARIABLE = "VPP_TEMPORAL_TLS_CERT"
KEY_VARIABLE = "VPP_TEMPORAL_TLS_KEY"
CA_VARIABLE = "VPP_TEMPORAL_TLS_CA"
TEMPORAL_TLS_ENVIRONMENT = (CERT_VARIABLE, KEY_VARIABLE, CA_VARIABLE)


class TemporalTlsConfigError(ValueError):
    """The Temporal mTLS variables are incomplete or unreadable."""


def _pem(variable: str, value: str) -> bytes:
    """PEM bytes of a variable holding PEM text or the path of a PEM file."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    path = Path(value)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise TemporalTlsConfigError(f"{variable}: neither PEM text nor a readable file ({error})") from error
    if b"-----BEGIN" not in text:
        raise TemporalTlsConfigError(f"{variable}: {path} holds no PEM block")
    return text


def temporal_tls(environ: Mapping[str, str]) -> TLSConfig | bool:
    """The client's TLS configuration from ``environ``: False (plain) when no certificate is set.

    Raises TemporalTlsConfigError when only one of the certificate and key is set, or one is unreadable.
    """
    cert, key, ca = (environ.get(name, "").strip() for name in TEMPORAL_TLS_ENVIRONMENT)
    if not cert and not key:
        if ca:
            return TLSConfig(server_root_ca_cert=_pem(CA_VARIABLE, ca))
        return False
    if not (cert and key):
        missing = KEY_VARIABLE if cert else CERT_VARIABLE
        raise TemporalTlsConfigError(f"Temporal mTLS needs both {CERT_VARIABLE} and {KEY_VARIABLE}: {missing} "
                                     "is not set")
    return TLSConfig(client_cert=_pem(CERT_VARIABLE, cert), client_private_key=_pem(KEY_VARIABLE, key),
                     server_root_ca_cert=_pem(CA_VARIABLE, ca) if ca else None)


async def connect_temporal(settings: Settings, environ: Mapping[str, str] | None = None) -> Client:
    """A client of ``[stack] temporal_address`` / ``temporal_namespace`` (mTLS when the environment says)."""
    stack = settings.stack
    return await Client.connect(stack.temporal_address, namespace=stack.temporal_namespace,
                                tls=temporal_tls(os.environ if environ is None else environ))


def schedule_id(settings: Settings, unit_id: str | None = None) -> str:
    """Id of the AutoBidder schedule of ``unit_id`` (default: the first battery unit, ``[cycle] unit_id``)."""
    return f"autobidder-{unit_id or settings.cycle.unit_id}"


def schedule_ids(settings: Settings) -> tuple[str, ...]:
    """Ids of every battery unit's AutoBidder schedule, in configuration order."""
    return tuple(schedule_id(settings, unit.unit_id) for unit in settings.battery_units)


async def trigger_now(settings: Settings, client: Client | None = None, unit_id: str | None = None) -> None:
    """Run one cycle of ``unit_id`` now, or of every battery unit when it is None (each skipped if one of
    that unit is already running)."""
    if client is None:
        client = await connect_temporal(settings)
    identifiers = (schedule_id(settings, unit_id),) if unit_id else schedule_ids(settings)
    for identifier in identifiers:
        await client.get_schedule_handle(identifier).trigger(overlap=ScheduleOverlapPolicy.SKIP)
