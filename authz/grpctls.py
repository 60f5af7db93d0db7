"""TLS for the gRPC ports: the server's certificate, reloaded when its files change.

cert-manager (or any rotation) replaces the certificate, key and CA files in a
mounted Secret by swapping a symlink. One WatchedFile watches the three: a new
set is checked here (the key matches the certificate, the CA parses) and only
then handed to gRPC, which asks for it at the next TLS handshake
(`grpc.dynamic_ssl_server_credentials`); connections already open keep the
certificate they were made with. A broken set is logged and counted as a `tls`
reload failure, and the last good one keeps serving.

The client side, `channel_credentials`, serves `distill-guard health` and
`distill-guard keys --server`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from authz.errors import ConfigError
from authz.reload import WatchedFile, signatures
from authz.settings import Settings

log = logging.getLogger("distill_guard.tls")

# The name the generated certificates (`distill-guard tls gen`) and the rendered
# Envoy configuration use for distill-guard, and what `health` verifies by default.
DEFAULT_SERVER_NAME = "distill-guard.local"

_CERT_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.S)
_READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class CertificateSet:
    """A server certificate chain, its key and the client CA, checked to belong together."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    fingerprint: str  # SHA-256 of the leaf certificate (DER), hex: names it in logs

    def configuration(self, *, verify_clients: bool) -> grpc.ServerCertificateConfiguration:
        """This set as gRPC's server configuration (the client CA only to verify clients)."""
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.cert)], root_certificates=self.client_ca if verify_clients else None
        )


def load_certificate_set(cert: Path, key: Path, client_ca: Path | None) -> CertificateSet:
    """Read and check the files; ConfigError names the file and the problem.

    The files are read, then checked by path, and their identities compared
    before and after: the bytes kept are the bytes checked, even while a
    rotation swaps the files underneath.
    """
    paths = [cert, key] if client_ca is None else [cert, key, client_ca]
    for _ in range(_READ_ATTEMPTS):
        before = signatures(paths)
        cert_pem, key_pem = _read(cert), _read(key)
        ca_pem = None if client_ca is None else _read(client_ca)
        fingerprint = _check_pair(cert, cert_pem, key, key_pem)
        if client_ca is not None and ca_pem is not None:
            _check_ca(client_ca, ca_pem)
        if signatures(paths) == before:
            return CertificateSet(cert_pem, key_pem, ca_pem, fingerprint)
    raise ConfigError(str(cert), "", "the certificate files kept changing while being read")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None


def _check_pair(cert: Path, cert_pem: bytes, key: Path, key_pem: bytes) -> str:
    """Check the certificate and key by loading them as a TLS server would; the fingerprint."""
    first = _CERT_PEM.search(cert_pem)
    if first is None:
        raise ConfigError(str(cert), "", "no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    if b"PRIVATE KEY-----" not in key_pem:
        raise ConfigError(
            str(key), "", "no PEM private key (-----BEGIN ... PRIVATE KEY-----) in it"
        )
    if b"ENCRYPTED" in key_pem:
        raise ConfigError(str(key), "", "the private key is encrypted; give it unencrypted")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails instead of prompting on a terminal.
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(str(key), "", f"the private key does not match {cert}") from None
        raise ConfigError(
            str(cert), "", f"certificate or key {key} unusable: {exc.reason or exc}"
        ) from None
    except OSError as exc:  # a file vanished between the read and the check
        raise ConfigError(str(cert), "", f"cannot read: {exc.strerror or exc}") from None
    der = ssl.PEM_cert_to_DER_cert(first.group().decode("ascii"))
    return hashlib.sha256(der).hexdigest()


def _check_ca(path: Path, pem: bytes) -> None:
    if _CERT_PEM.search(pem) is None:
        raise ConfigError(str(path), "", "no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"unusable CA certificates: {exc}") from None


class ServerTls:
    """The server's certificate files, watched, and gRPC credentials that follow them."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.verifies_clients = client_ca is not None
        also = [key] if client_ca is None else [key, client_ca]
        self.watched = WatchedFile(
            cert,
            lambda _: load_certificate_set(cert, key, client_ca),
            kind="tls",
            also=also,
            on_swap=_log_swap,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerTls | None:
        """The configured certificate files, or None for plaintext ports."""
        if settings.tls_cert is None and settings.tls_key is None:
            if settings.tls_client_ca is not None:
                raise ConfigError("--tls-client-ca", "", "needs --tls-cert and --tls-key")
            return None
        if settings.tls_cert is None or settings.tls_key is None:
            raise ConfigError("--tls-cert", "", "--tls-cert and --tls-key go together")
        return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)

    @property
    def fingerprint(self) -> str:
        """The SHA-256 fingerprint of the certificate being served."""
        return self.watched.current().fingerprint

    def credentials(self, *, verify_clients: bool) -> grpc.ServerCredentials:
        """Credentials for one port; every new handshake uses the current certificate set.

        With `verify_clients` a client certificate chaining to the client CA is
        required; without, none is asked for.
        """
        return grpc.dynamic_ssl_server_credentials(
            self.watched.current().configuration(verify_clients=verify_clients),
            self._fetcher(verify_clients),
            require_client_authentication=verify_clients,
        )

    def _fetcher(self, verify_clients: bool) -> Callable[[], grpc.ServerCertificateConfiguration]:
        # gRPC calls this on its own threads before each handshake: it must be cheap
        # and never block, so it only compares with what it handed out last. The
        # files are polled by the server's reload task (and SIGHUP).
        served = [self.watched.current()]

        def fetch() -> grpc.ServerCertificateConfiguration:
            current = self.watched.current()
            if current is served[0]:
                # gRPC reads None as "no change"; the stubs leave None out.
                return None  # type: ignore[return-value]
            served[0] = current
            return current.configuration(verify_clients=verify_clients)

        return fetch


def _log_swap(loaded: CertificateSet) -> None:
    log.info("serving a new TLS certificate", extra={"fingerprint": loaded.fingerprint})


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """A client's TLS credentials: the CA to verify the server with, and its own pair if any."""
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert", "", "--tls-cert and --tls-key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=None if key is None else _read(key),
        certificate_chain=None if cert is None else _read(cert),
    )


def channel_options(server_name: str | None) -> list[tuple[str, str]]:
    """Channel options verifying the server as `server_name` (not the address dialled)."""
    if not server_name:
        return []
    return [("grpc.ssl_target_name_override", server_name)]
