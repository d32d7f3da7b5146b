"""Certificate pinning for the Outline management API.

An Outline server presents a self-signed certificate; the installer prints its SHA-256
fingerprint. The API's only credential is the secret path of its URL, so no request may
reach a server before its certificate is known to be that one. ``PinnedTransport`` does:

1. before the first request, a bare TLS handshake (no HTTP, so no path is sent) that
   accepts any certificate, only to read it; its SHA-256 is compared with the pin in
   constant time. A mismatch is a permanent ``DependencyError`` and nothing is sent.
2. then an ``ssl.SSLContext`` that trusts exactly that certificate and nothing else: it is
   the only trust anchor (no system CAs), ``VERIFY_X509_PARTIAL_CHAIN`` lets a self-signed
   leaf be one, and the host name is not checked (Outline's certificate names an IP or
   whatever the installer was given). Every later connection is verified by OpenSSL
   against it, during the handshake and before the request is written, so a server that
   swaps its certificate afterwards fails the handshake (a permanent ``DependencyError``
   too: the pin has to be updated by the operator).

Fingerprints compare equal for the certificate's exact DER bytes, as
``openssl x509 -fingerprint -sha256`` (the installer's command) computes them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import ssl

import httpx
import trio

from runtime.failures import DependencyError
from runtime.logs import get_logger

_HEX_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")

_log = get_logger("outline")


def parse_fingerprint(text: str) -> bytes:
    """The 32 bytes of a SHA-256 fingerprint written in hex, with or without colons."""
    compact = text.strip().replace(":", "")
    if not _HEX_FINGERPRINT.fullmatch(compact):
        raise ValueError("must be a SHA-256 fingerprint: 64 hex digits, colons allowed")
    return bytes.fromhex(compact)


def format_fingerprint(digest: bytes) -> str:
    """``AB:CD:...``, as ``openssl x509 -fingerprint`` prints it."""
    return ":".join(f"{byte:02X}" for byte in digest)


def pinned_context(certificate_der: bytes) -> ssl.SSLContext:
    """A client context that trusts this one certificate and nothing else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=certificate_der)
    return context


def _reading_context() -> ssl.SSLContext:
    """Accepts any certificate: used only to read it, never to send anything."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _sni_name(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None  # SNI carries host names only


async def read_certificate(host: str, port: int, *, seconds: float, peer: str) -> bytes:
    """The DER certificate the server presents, from a TLS handshake and nothing more."""
    failure: DependencyError | None = None
    certificate: bytes | None = None
    with trio.move_on_after(seconds) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
            tls = trio.SSLStream(stream, _reading_context(), server_hostname=_sni_name(host))
            try:
                await tls.do_handshake()
                certificate = tls.getpeercert(binary_form=True)
            finally:
                await trio.aclose_forcefully(tls)
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            failure = DependencyError(
                f"{peer}: unreachable during the TLS handshake ({type(exc).__name__})"
            )
    if scope.cancelled_caught:
        failure = DependencyError(f"{peer}: timed out during the TLS handshake")
    if failure is not None:
        raise failure
    if not certificate:
        raise DependencyError(f"{peer}: the server presented no certificate", transient=False)
    return certificate


def _is_certificate_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that talks only to the server holding the pinned certificate."""

    def __init__(
        self, host: str, port: int, fingerprint: bytes, *, timeout: float, peer: str
    ) -> None:
        if len(fingerprint) != 32:
            raise ValueError("a SHA-256 fingerprint is 32 bytes")
        self._host = host
        self._port = port
        self._fingerprint = fingerprint
        self._timeout = timeout
        self._peer = peer
        self._inner: httpx.AsyncHTTPTransport | None = None
        self._lock = trio.Lock()

    @property
    def pinned(self) -> bool:
        return self._inner is not None

    async def _transport(self) -> httpx.AsyncHTTPTransport:
        async with self._lock:
            if self._inner is None:
                certificate = await read_certificate(
                    self._host, self._port, seconds=self._timeout, peer=self._peer
                )
                seen = hashlib.sha256(certificate).digest()
                if not hmac.compare_digest(seen, self._fingerprint):
                    raise DependencyError(
                        f"{self._peer}: the server's certificate does not match cert_sha256 "
                        f"(it presents {format_fingerprint(seen)}); nothing was sent to it",
                        transient=False,
                    )
                self._inner = httpx.AsyncHTTPTransport(verify=pinned_context(certificate))
                _log.info("certificate pinned", operation="pin", outcome="success")
            return self._inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = await self._transport()
        try:
            return await transport.handle_async_request(request)
        except httpx.ConnectError as exc:
            if not _is_certificate_failure(exc):
                raise
        # Outside the except block: httpx's exception is not chained to ours.
        raise DependencyError(
            f"{self._peer}: the server now presents another certificate than cert_sha256; "
            "refused before sending anything",
            transient=False,
        )

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
