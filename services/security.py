"""Secure edges of the platform's gRPC services: TLS, per-client tokens, site authentication at the gateway.

Configuration comes from the environment only (a deployment fills it from its secrets manager); nothing
secret is ever read from the repository or written to a log. With none of these variables set every
server and client runs as before: plaintext on localhost, no tokens, open fleet gateway.

==============================  ===================================================================
``VPP_TLS_CERT_DIR``            folder with ``ca.pem`` (clients trust it) and ``server.pem`` /
                                ``server-key.pem`` (servers present them): TLS on every gRPC port.
``VPP_GRPC_TOKENS``             ``client_id:token,client_id:token``: the bearer tokens servers accept.
                                Every call except ``grpc.health.v1`` must carry one (UNAUTHENTICATED
                                otherwise). Clients whose id starts with ``concentrator`` are site-side
                                edges: they may only open ``FleetGatewayService/Connect`` streams
                                (PERMISSION_DENIED for anything else).
``VPP_GRPC_TOKEN``              this process's own token, sent as ``authorization: Bearer <token>``.
``VPP_BIND_HOST``               address servers listen on (default ``127.0.0.1``; ``0.0.0.0`` in a
                                container). Clients keep dialling their configured addresses.
``VPP_FLEET_SITE_SECRET``       the fleet provisioning secret: site keys are derived from it (below).
``VPP_FLEET_SITE_KEYS_FILE``    a file (outside the repository, e.g. a mounted secret) of
                                ``site_id:hex_key`` lines: explicitly provisioned site keys (they win
                                over derived ones).
==============================  ===================================================================

Site authentication (the fleet gateway)
---------------------------------------
Every site owns a secret key. Provisioning model: ``key = HMAC-SHA256(fleet_secret, "openvpp-site-key/v1"
NUL site_id)`` — the platform derives any site's key from the fleet secret, a site (or its concentrator)
is given only its own keys; explicitly provisioned keys (``VPP_FLEET_SITE_KEYS_FILE``) work the same.
A concentrator proves each site it serves in its ``ConcentratorHello``::

    site_proof = HMAC-SHA256(site key, "openvpp-site-auth/v1" NUL concentrator_id NUL site_id NUL issued_at_ms)

``issued_at_ms`` is the concentrator's clock (Unix ms UTC). The gateway (:class:`SiteAuthenticator`)
accepts a proof only if it matches, ``issued_at_ms`` is within ``window_ms`` of its own clock and the
proof was not seen before (a replay cache holds proofs until they expire), so a captured hello cannot be
replayed and, on top of that, TLS keeps hellos confidential. A site proved on a stream is served by that
stream only: the gateway applies its telemetry and acknowledgements only from that stream (readings from
any other stream are quarantined as ``unauthenticated_site``) and sends its setpoints only down that
stream. A later valid hello on another stream (the site's concentrator reconnected) moves the site there.

Local stack
-----------
``vpp up`` (:func:`prepare_local_edge`) generates a CA and a server certificate for ``localhost`` /
``127.0.0.1`` into ``<state_dir>/tls/`` (the CA key is discarded once the server certificate is signed),
random tokens per client and a random fleet secret, and hands each child process only what it needs
through its environment. The operator's token is kept in ``<state_dir>/tls/operator.token`` (mode 0600,
runtime state outside version control) so that CLI commands against the running stack work
(:func:`operator_security`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from algorithms.fleet.fleet_types import BoolArray
from settings.extras import LOCAL, import_extra

logger = logging.getLogger(__name__)

TLS_DIR_ENV = "VPP_TLS_CERT_DIR"
TOKENS_ENV = "VPP_GRPC_TOKENS"
TOKEN_ENV = "VPP_GRPC_TOKEN"
BIND_HOST_ENV = "VPP_BIND_HOST"
SITE_SECRET_ENV = "VPP_FLEET_SITE_SECRET"
SITE_KEYS_FILE_ENV = "VPP_FLEET_SITE_KEYS_FILE"
EDGE_ENVIRONMENT: tuple[str, ...] = (TLS_DIR_ENV, TOKENS_ENV, TOKEN_ENV, BIND_HOST_ENV, SITE_SECRET_ENV,
                                     SITE_KEYS_FILE_ENV)
"""Every environment variable this module reads."""

DEFAULT_BIND_HOST = "127.0.0.1"
CA_FILE = "ca.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
OPERATOR_TOKEN_FILE = "operator.token"
# Calls every client may make without a token (load balancers and supervisors probe them).
OPEN_METHOD_PREFIX = "/grpc.health.v1.Health/"
# Client ids with this prefix are site-side edges: they may only call CONNECT_METHOD.
EDGE_CLIENT_PREFIX = "concentrator"
CONNECT_METHOD = "/vpp.v1.FleetGatewayService/Connect"
MIN_SECRET_BYTES = 16
SITE_KEY_LABEL = b"openvpp-site-key/v1\x00"
SITE_PROOF_LABEL = b"openvpp-site-auth/v1\x00"
# A hello's proofs are accepted this long either side of the gateway's clock (ms).
SITE_AUTH_WINDOW_MS = 60_000
LOCAL_CERT_VALID_DAYS = 30
# The clients of the local stack, each with its own token.
LOCAL_CLIENTS: tuple[str, ...] = ("temporal-worker", "vpp-worker", "concentrator-simulator", "operator")


class EdgeConfigError(ValueError):
    """An edge-security variable or file that cannot be used; the message names it (never its secret)."""


# ---------------------------------------------------------------------------------------------------
# Site keys and proofs (pure)


def derive_site_key(fleet_secret: bytes, site_id: str) -> bytes:
    """The 32-byte key of ``site_id`` under the fleet provisioning secret (HMAC-SHA256)."""
    return hmac.new(fleet_secret, SITE_KEY_LABEL + site_id.encode(), hashlib.sha256).digest()


def site_proof(key: bytes, concentrator_id: str, site_id: str, issued_at_ms: int) -> bytes:
    """The 32-byte proof that the holder of ``key`` serves ``site_id`` through ``concentrator_id`` at
    ``issued_at_ms`` (Unix ms UTC): HMAC-SHA256 over the NUL-separated fields."""
    message = b"\x00".join((concentrator_id.encode(), site_id.encode(), str(int(issued_at_ms)).encode()))
    return hmac.new(key, SITE_PROOF_LABEL + message, hashlib.sha256).digest()


@dataclass(frozen=True)
class SiteKeys:
    """Where site keys come from: explicit per-site keys (``table``) first, else derived from ``fleet_secret``."""

    fleet_secret: bytes | None = field(default=None, repr=False)
    table: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def key_of(self, site_id: str) -> bytes | None:
        """The key of ``site_id``; None when it has none."""
        explicit = self.table.get(site_id)
        if explicit is not None:
            return explicit
        if self.fleet_secret is not None:
            return derive_site_key(self.fleet_secret, site_id)
        return None


def prove_sites(keys: SiteKeys, concentrator_id: str, site_ids: Sequence[str], issued_at_ms: int) -> list[bytes]:
    """The hello's proof of each site (empty bytes for a site without a key: the gateway refuses it)."""
    proofs = []
    for site_id in site_ids:
        key = keys.key_of(site_id)
        proofs.append(b"" if key is None else site_proof(key, concentrator_id, site_id, issued_at_ms))
    return proofs


class SiteAuthError(ValueError):
    """A hello whose proofs do not fit its sites (gRPC INVALID_ARGUMENT)."""


class SiteAuthenticator:
    """Checks the site proofs of concentrator hellos (see the module docstring); remembers proofs seen.

    ``window_ms``: how far ``issued_at_ms`` may be from the gateway's clock (ms, either side).
    """

    def __init__(self, keys: SiteKeys, window_ms: int = SITE_AUTH_WINDOW_MS) -> None:
        if window_ms <= 0:
            raise ValueError(f"window_ms must be > 0, got {window_ms}")
        self.keys = keys
        self.window_ms = window_ms
        self._seen: dict[bytes, int] = {}  # proof -> time (ms) after which it would be refused anyway

    def verify(self, concentrator_id: str, site_ids: Sequence[str], issued_at_ms: int,
               proofs: Sequence[bytes], now_ms: int) -> BoolArray:
        """Per site of a hello: whether its proof is valid, fresh (within the window) and not replayed.

        Raises SiteAuthError when the number of proofs differs from the number of sites.
        """
        if len(proofs) != len(site_ids):
            raise SiteAuthError(f"hello of {concentrator_id!r}: {len(proofs)} site_proof values for "
                                f"{len(site_ids)} site_id values (one proof per site)")
        self._forget_expired(now_ms)
        valid = np.zeros(len(site_ids), dtype=np.bool_)
        if abs(now_ms - issued_at_ms) > self.window_ms or "\x00" in concentrator_id:
            return valid
        expires_ms = issued_at_ms + self.window_ms
        for index, (site_id, proof) in enumerate(zip(site_ids, proofs, strict=True)):
            key = self.keys.key_of(site_id)
            if key is None or "\x00" in site_id or proof in self._seen:
                continue
            if hmac.compare_digest(proof, site_proof(key, concentrator_id, site_id, issued_at_ms)):
                valid[index] = True
                self._seen[proof] = expires_ms
        return valid

    def _forget_expired(self, now_ms: int) -> None:
        expired = [proof for proof, expires_ms in self._seen.items() if expires_ms < now_ms]
        for proof in expired:
            del self._seen[proof]


# ---------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class EdgeSecurity:
    """The edge security of one process (see the module docstring); the default is open, plaintext."""

    tls_dir: Path | None = None
    accepted_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    client_token: str | None = field(default=None, repr=False)
    bind_host: str = DEFAULT_BIND_HOST
    site_keys: SiteKeys | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *,
                         with_site_keys: bool = True) -> EdgeSecurity:
        """Read the ``VPP_*`` edge variables (``os.environ`` by default); EdgeConfigError when unusable.

        ``with_site_keys=False`` skips the site keys (a plain client or server need not read a key file).
        """
        env = os.environ if environ is None else environ
        tls_text = env.get(TLS_DIR_ENV, "").strip()
        site_keys = (_site_keys(env.get(SITE_SECRET_ENV, ""), env.get(SITE_KEYS_FILE_ENV, "").strip())
                     if with_site_keys else None)
        return cls(tls_dir=Path(tls_text) if tls_text else None,
                   accepted_tokens=parse_tokens(env.get(TOKENS_ENV, "")),
                   client_token=_client_token(env.get(TOKEN_ENV, "")),
                   bind_host=env.get(BIND_HOST_ENV, "").strip() or DEFAULT_BIND_HOST,
                   site_keys=site_keys)

    @property
    def tls(self) -> bool:
        """Whether servers listen and clients dial with TLS."""
        return self.tls_dir is not None

    def site_authenticator(self) -> SiteAuthenticator | None:
        """The gateway's site authenticator; None (open gateway) without site keys."""
        return None if self.site_keys is None else SiteAuthenticator(self.site_keys)


def parse_tokens(text: str) -> tuple[tuple[str, str], ...]:
    """``client_id:token`` pairs of a comma-separated list; EdgeConfigError naming the bad entry's position."""
    pairs: list[tuple[str, str]] = []
    for position, entry in enumerate((part.strip() for part in text.split(",")), start=1):
        if not entry:
            continue
        client_id, separator, token = entry.partition(":")
        if not separator or not client_id.strip() or len(token.strip()) < MIN_SECRET_BYTES:
            raise EdgeConfigError(f"{TOKENS_ENV}: entry {position} is not client_id:token with a token of at "
                                  f"least {MIN_SECRET_BYTES} characters")
        pairs.append((client_id.strip(), token.strip()))
    if len({token for _, token in pairs}) != len(pairs):
        raise EdgeConfigError(f"{TOKENS_ENV}: two clients share a token; every client needs its own")
    return tuple(pairs)


def _client_token(text: str) -> str | None:
    token = text.strip()
    if token and len(token) < MIN_SECRET_BYTES:
        raise EdgeConfigError(f"{TOKEN_ENV}: a token needs at least {MIN_SECRET_BYTES} characters")
    return token or None


def _site_keys(secret_text: str, keys_file: str) -> SiteKeys | None:
    secret = secret_text.strip().encode()
    if secret and len(secret) < MIN_SECRET_BYTES:
        raise EdgeConfigError(f"{SITE_SECRET_ENV}: the fleet secret needs at least {MIN_SECRET_BYTES} bytes")
    table = read_site_keys_file(Path(keys_file)) if keys_file else {}
    if not secret and not table:
        return None
    return SiteKeys(fleet_secret=secret or None, table=table)


def read_site_keys_file(path: Path) -> dict[str, bytes]:
    """Site keys from ``site_id:hex_key`` lines (``#`` comments, blank lines ignored)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise EdgeConfigError(f"{SITE_KEYS_FILE_ENV}: cannot read {path}: {exc.strerror}") from None
    table: dict[str, bytes] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        site_id, _, hex_key = text.partition(":")
        try:
            key = bytes.fromhex(hex_key.strip())
        except ValueError:
            key = b""
        if not site_id.strip() or len(key) < MIN_SECRET_BYTES:
            raise EdgeConfigError(f"{path} line {number}: expected site_id:hex_key with a key of at least "
                                  f"{MIN_SECRET_BYTES} bytes")
        table[site_id.strip()] = key
    return table


# ---------------------------------------------------------------------------------------------------
# Server side


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EdgeConfigError(f"{TLS_DIR_ENV}: cannot read {path}: {exc.strerror}") from None


def server_credentials(security: EdgeSecurity) -> grpc.ServerCredentials | None:
    """TLS credentials of a server (``server.pem`` / ``server-key.pem``); None without TLS."""
    if security.tls_dir is None:
        return None
    key = _read(security.tls_dir / SERVER_KEY_FILE)
    chain = _read(security.tls_dir / SERVER_CERT_FILE)
    return grpc.ssl_server_credentials([(key, chain)])


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> str | None:
    for key, value in metadata or ():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call but health checks without a known bearer token (UNAUTHENTICATED), and every
    call but ``Connect`` from site-side edge clients (PERMISSION_DENIED). Tokens are never logged."""

    def __init__(self, tokens: Sequence[tuple[str, str]]) -> None:
        self._tokens = tuple((client_id, token.encode()) for client_id, token in tokens)

    def client_of(self, authorization: str | None) -> str | None:
        """The client id whose token ``authorization`` ("Bearer <token>") carries; None if none matches."""
        if authorization is None:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        candidate = presented.strip().encode()
        found = None
        for client_id, token in self._tokens:  # compare with every token: no early exit to time
            if hmac.compare_digest(candidate, token):
                found = client_id
        return found

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Pass authorised calls on; answer the others with UNAUTHENTICATED / PERMISSION_DENIED."""
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_METHOD_PREFIX):
            return handler
        authorization = _metadata_value(handler_call_details.invocation_metadata, "authorization")
        client_id = self.client_of(authorization)
        if client_id is None:
            problem = "missing" if authorization is None else "unknown"
            logger.warning("refused %s: %s bearer token", method, problem)
            return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED,
                             f"{method}: {problem} bearer token (send 'authorization: Bearer <token>')")
        if client_id.startswith(EDGE_CLIENT_PREFIX) and method != CONNECT_METHOD:
            logger.warning("refused %s to edge client %s: edge clients may only open Connect streams",
                           method, client_id)
            return _refusing(handler, grpc.StatusCode.PERMISSION_DENIED,
                             f"client {client_id} may only open {CONNECT_METHOD} streams, not call {method}")
        return handler


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with ``code`` and ``message``."""

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield None  # pragma: no cover (abort raises)

    kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler,
             (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    behaviour = streaming if handler.response_streaming else unary
    refusal: grpc.RpcMethodHandler = make(behaviour, request_deserializer=handler.request_deserializer,
                                          response_serializer=handler.response_serializer)
    return refusal


def secure_server(security: EdgeSecurity, options: Sequence[tuple[str, Any]]) -> grpc.aio.Server:
    """A grpc.aio server with ``options`` that checks bearer tokens when ``security`` accepts any."""
    interceptors = [TokenAuthInterceptor(security.accepted_tokens)] if security.accepted_tokens else []
    return grpc.aio.server(options=list(options), interceptors=interceptors)


# ---------------------------------------------------------------------------------------------------
# Client side


def _with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {token}")
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                      details.wait_for_ready)


class _TokenUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class _TokenUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request)


class _TokenStreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request_iterator)


class _TokenStreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await continuation(_with_token(client_call_details, self._token), request_iterator)


def channel(address: str, security: EdgeSecurity | None = None,
            options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to ``address`` ("host:port"): TLS trusting ``ca.pem`` when configured, and the
    client's bearer token on every call when it has one. ``security`` defaults to the environment's."""
    security = EdgeSecurity.from_environment(with_site_keys=False) if security is None else security
    token = security.client_token
    if security.tls_dir is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=_read(security.tls_dir / CA_FILE))
        if token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token))
        return grpc.aio.secure_channel(address, credentials, options=list(options))
    interceptors: list[grpc.aio.ClientInterceptor] = []
    if token is not None:
        interceptors = [_TokenUnaryUnary(token), _TokenUnaryStream(token), _TokenStreamUnary(token),
                        _TokenStreamStream(token)]
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors or None)


class ChannelPool:
    """Open gRPC channels of one process, one per address, kept for every call instead of one channel per call.

    :func:`channel` per call costs a TCP connection, a TLS handshake (with the stack's edge security) and
    HTTP/2 set-up on both sides, and a few ms before the request leaves; a cycle makes three or four such calls
    (the unit's status and snapshot, the submission, the outcome). A pooled channel is made on first use with
    ``security`` (the environment's by default); a call that fails UNAVAILABLE (the server down or restarting)
    drops it (:func:`call_channel`), so the next call dials afresh instead of waiting out the channel's reconnect
    back-off, and a call's failures are those of a channel per call. A channel belongs to the event loop it was
    made on: on another loop (a test's) the pool starts afresh. :meth:`close` closes them (the process's end)."""

    def __init__(self, security: EdgeSecurity | None = None) -> None:
        self._security = security
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def channel(self, address: str) -> grpc.aio.Channel:
        """The open channel to ``address`` ("host:port"), made on first use; call from the pool's event loop."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._channels, self._loop = {}, loop
        found = self._channels.get(address)
        if found is None:
            found = self._channels[address] = channel(address, self._security)
        return found

    async def forget(self, address: str, failed: grpc.aio.Channel) -> None:
        """Drop and close ``failed``, the channel to ``address``, unless another has replaced it already."""
        current = self._channels.get(address)
        if current is None or current is not failed:
            return
        del self._channels[address]
        await current.close()

    def open_channels(self) -> int:
        """Channels made on the current loop and not closed."""
        return len(self._channels)

    async def close(self) -> None:
        """Close every channel of the current loop (a later call makes a new one)."""
        channels, self._channels = list(self._channels.values()), {}
        for open_channel in channels:
            await open_channel.close()


@contextlib.asynccontextmanager
async def call_channel(address: str, security: EdgeSecurity | None = None,
                       channels: ChannelPool | None = None) -> AsyncIterator[grpc.aio.Channel]:
    """The channel a client helper calls ``address`` on: the pool's open one when ``channels`` is given (left
    open; dropped when the call fails UNAVAILABLE), else a channel of its own (:func:`channel`, ``security``),
    closed after the call."""
    if channels is not None:
        pooled = channels.channel(address)
        try:
            yield pooled
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                await channels.forget(address, pooled)
            raise
        return
    async with channel(address, security) as own:
        yield own


# ---------------------------------------------------------------------------------------------------
# Local material for `vpp up`


def generate_local_tls(directory: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
                       valid_days: int = LOCAL_CERT_VALID_DAYS) -> Path:
    """Write a fresh CA (``ca.pem``) and a server certificate for ``hosts`` signed by it (``server.pem``,
    ``server-key.pem``, mode 0600) into ``directory`` (mode 0700); the CA key is not kept. Returns it.

    Needs cryptography (the ``local`` extra: a deployment brings its own certificates, ``VPP_TLS_CERT_DIR``);
    without it, :class:`settings.extras.MissingExtraError`."""
    import_extra("cryptography.x509", LOCAL, "the local certificate authority of vpp up")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=valid_days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openvpp local CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(until)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openvpp local services")]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA256()))
    _write_private(directory / SERVER_KEY_FILE, server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / SERVER_CERT_FILE).write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (directory / CA_FILE).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return directory


def _write_private(path: Path, content: bytes) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)


@dataclass(frozen=True)
class LocalEdge:
    """The generated edge material of a local stack: TLS folder, one token per client, fleet secret."""

    tls_dir: Path
    tokens: Mapping[str, str] = field(repr=False)
    fleet_secret: str = field(repr=False)

    def server_environment(self, site_authentication: bool = False) -> dict[str, str]:
        """Variables of a server child: TLS, the accepted tokens (and the fleet secret for the gateway)."""
        env = {TLS_DIR_ENV: str(self.tls_dir),
               TOKENS_ENV: ",".join(f"{client}:{token}" for client, token in self.tokens.items())}
        if site_authentication:
            env[SITE_SECRET_ENV] = self.fleet_secret
        return env

    def client_environment(self, client_id: str, site_keys: bool = False) -> dict[str, str]:
        """Variables of a client child: TLS trust, its own token (and the fleet secret for a simulator)."""
        env = {TLS_DIR_ENV: str(self.tls_dir), TOKEN_ENV: self.tokens[client_id]}
        if site_keys:
            env[SITE_SECRET_ENV] = self.fleet_secret
        return env

    def security(self, client_id: str = "operator") -> EdgeSecurity:
        """The client security of ``client_id`` in this process (the supervisor's health checks)."""
        return EdgeSecurity(tls_dir=self.tls_dir, client_token=self.tokens[client_id])


def prepare_local_edge(state_dir: Path, clients: Sequence[str] = LOCAL_CLIENTS) -> LocalEdge:
    """Generate the local stack's edge material under ``<state_dir>/tls`` (see the module docstring)."""
    tls_dir = generate_local_tls(state_dir / "tls")
    tokens = {client: secrets.token_urlsafe(32) for client in clients}
    if "operator" in tokens:
        _write_private(tls_dir / OPERATOR_TOKEN_FILE, tokens["operator"].encode())
    return LocalEdge(tls_dir=tls_dir, tokens=tokens, fleet_secret=secrets.token_urlsafe(32))


def operator_security(state_dir: Path, environ: Mapping[str, str] | None = None) -> EdgeSecurity:
    """The security of an operator's CLI call: the environment's when it sets any edge variable, else the
    running local stack's (``<state_dir>/tls`` with its operator token) when present, else open."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in EDGE_ENVIRONMENT):
        return EdgeSecurity.from_environment(env)
    tls_dir = state_dir / "tls"
    token_file = tls_dir / OPERATOR_TOKEN_FILE
    if (tls_dir / CA_FILE).is_file() and token_file.is_file():
        return EdgeSecurity(tls_dir=tls_dir, client_token=token_file.read_text().strip() or None)
    return EdgeSecurity()
