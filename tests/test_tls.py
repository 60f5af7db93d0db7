"""Mutual TLS between Envoy and distill-guard: handshakes, rotation, probes, Envoy's side.

Every test runs real parts: certificates made by `distill-guard tls gen` (the
openssl command), a real gRPC server on 127.0.0.1:0, a real Envoy where marked.
Certificate files sit in a directory laid out like a mounted Kubernetes Secret
and are rotated the way the kubelet does it: a rename of the `..data` link.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz import envoyconf, tls
from authz.admin import AdminClient
from authz.cli import build_parser, main
from authz.errors import ConfigError
from authz.grpctls import (
    DEFAULT_SERVER_NAME,
    ServerTls,
    channel_credentials,
    channel_options,
    load_certificate_set,
)
from authz.procs import http_request
from authz.settings import from_namespace
from tests.checkreq import check_request
from tests.fakes import BOB_KEY
from tests.otel import counter_value, metric_reader
from tests.serverthread import ServerThread, demo_settings
from tests.test_envoy_e2e import Stacks

FAILURES = "distill_guard.reload.failures"


@dataclass(frozen=True)
class Pki:
    """Two unrelated CAs: `good` is distill-guard's and Envoy's, `other` is a stranger's."""

    good: tls.Bundle
    other: tls.Bundle


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates from `tls gen` (one CA for the pair, one unrelated CA), made once."""
    root = tmp_path_factory.mktemp("pki")
    return Pki(tls.generate(root / "good"), tls.generate(root / "other"))


class SecretMount:
    """A directory laid out like a mounted Secret: tls.crt -> ..data/tls.crt, ..data -> revision."""

    NAMES = ("tls.crt", "tls.key", "ca.crt")

    def __init__(self, root: Path, first: tls.Issued) -> None:
        root.mkdir()
        self.root = root
        self._revisions = 0
        self.publish(first)
        for name in self.NAMES:
            (root / name).symlink_to(f"..data/{name}")

    def publish(self, issued: tls.Issued, *, key_from: tls.Issued | None = None) -> None:
        """Swap in a new revision atomically, as the kubelet does (`key_from`: a wrong key)."""
        self._revisions += 1
        revision = self.root / f"..rev{self._revisions}"
        revision.mkdir()
        shutil.copyfile(issued.cert, revision / "tls.crt")
        shutil.copyfile((key_from or issued).key, revision / "tls.key")
        shutil.copyfile(issued.ca, revision / "ca.crt")
        link = self.root / "..data_tmp"
        link.symlink_to(revision.name)
        os.replace(link, self.root / "..data")

    @property
    def cert(self) -> Path:
        """The certificate, through the symlinks."""
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        """The key, through the symlinks."""
        return self.root / "tls.key"

    @property
    def ca(self) -> Path:
        """The CA, through the symlinks."""
        return self.root / "ca.crt"


def mtls_settings(mount: SecretMount, **overrides: object) -> dict[str, object]:
    """Settings overrides for a server with the mounted certificate, requiring client certs."""
    values: dict[str, object] = {
        "tls_cert": mount.cert,
        "tls_key": mount.key,
        "tls_client_ca": mount.ca,
        "reload_interval": 0.05,
    }
    return values | overrides


@pytest.fixture
def mtls_server(pki: Pki, tmp_path: Path) -> Iterator[tuple[ServerThread, SecretMount]]:
    """A real server on 127.0.0.1:0 requiring client certificates, its files in a mounted Secret."""
    mount = SecretMount(tmp_path / "secret", pki.good.server)
    running = ServerThread(demo_settings(**mtls_settings(mount)))
    try:
        yield running, mount
    finally:
        running.close()


def client_channel(target: str, client: tls.Issued | None, ca: Path) -> grpc.Channel:
    """A channel on its own connection (no shared subchannel), presenting `client` if given."""
    creds = channel_credentials(ca, *((client.cert, client.key) if client else (None, None)))
    options = [*channel_options(DEFAULT_SERVER_NAME), ("grpc.use_local_subchannel_pool", 1)]
    return grpc.secure_channel(target, creds, options=options)


def check_once(channel: grpc.Channel) -> str:
    """Check Bob's key over `channel`: "allowed" or "denied"."""
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    reply = stub.Check(check_request({"x-api-key": BOB_KEY}), timeout=5)
    return "denied" if reply.HasField("denied_response") else "allowed"


def served_serial(port: int, client: tls.Issued) -> int:
    """The serial number of the certificate a new TLS handshake with the server presents."""
    context = ssl.create_default_context(cafile=client.ca)
    context.load_cert_chain(client.cert, client.key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=DEFAULT_SERVER_NAME) as conn,
    ):
        peer = conn.getpeercert()
    assert peer is not None
    return int(str(peer["serialNumber"]), 16)


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `probe` holds, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.02)


@dataclass
class Traffic:
    """A thread sending checks in a loop until stopped; counts answers and failures."""

    send: Callable[[], None]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.send()
                    self.ok += 1
                except Exception as exc:
                    self.failures.append(repr(exc))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def wait_for_more(self, n: int) -> None:
        """Block until `n` more checks have been answered."""
        target = self.ok + n
        wait_for(f"{n} more answered checks", lambda: self.ok >= target or bool(self.failures))


# --- who may connect -------------------------------------------------------------------


def test_client_with_the_right_certificate_gets_answers(
    mtls_server: tuple[ServerThread, SecretMount], pki: Pki
) -> None:
    """A client presenting a certificate from the client CA gets allow and deny answers."""
    running, _ = mtls_server
    with client_channel(running.target, pki.good.client, pki.good.client.ca) as channel:
        assert check_once(channel) == "allowed"
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        denied = stub.Check(check_request({}), timeout=5)
        assert json.loads(denied.denied_response.body)["reason"] == "key_missing"


@pytest.mark.parametrize("client", ["no certificate", "another CA's certificate", "plaintext"])
def test_other_clients_are_refused_at_the_handshake(
    mtls_server: tuple[ServerThread, SecretMount], pki: Pki, client: str
) -> None:
    """No client certificate, one from an unrelated CA, or no TLS at all: no answer, ever."""
    running, _ = mtls_server
    if client == "plaintext":
        channel = grpc.insecure_channel(running.target)
    else:
        presented = pki.other.client if client == "another CA's certificate" else None
        channel = client_channel(running.target, presented, pki.good.client.ca)
    with channel, pytest.raises(grpc.RpcError) as refused:
        check_once(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_tls_settings_go_together(pki: Pki) -> None:
    """A key without a certificate, or a client CA without either, is a usage error."""
    good = pki.good.server
    with pytest.raises(ConfigError) as alone:
        ServerTls.from_settings(demo_settings(tls_key=good.key))
    assert str(alone.value) == "--tls-cert: --tls-cert and --tls-key go together"
    with pytest.raises(ConfigError) as no_cert:
        ServerTls.from_settings(demo_settings(tls_client_ca=good.ca))
    assert str(no_cert.value) == "--tls-client-ca: needs --tls-cert and --tls-key"
    assert ServerTls.from_settings(demo_settings()) is None


def test_serve_flags_name_the_files(tmp_path: Path) -> None:
    """`serve --tls-cert --tls-key --tls-client-ca --health-listen` reach the settings."""
    files = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]
    ns = build_parser().parse_args(
        ["serve", "--rules", "r.yaml", *files, "--health-listen", "127.0.0.1:9193"]
    )
    conf = from_namespace(ns)
    assert (conf.tls_cert, conf.tls_key, conf.tls_client_ca) == (
        Path("c.pem"),
        Path("k.pem"),
        Path("ca.pem"),
    )
    assert conf.health_listen == "127.0.0.1:9193"


# --- loading and checking the files -----------------------------------------------------


def test_broken_files_are_named_with_their_problem(pki: Pki, tmp_path: Path) -> None:
    """Each way a certificate set can be unusable gives a message naming the file."""
    good, stranger = pki.good.server, pki.other.server
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    missing = tmp_path / "missing.pem"
    no_cert = "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
    no_key = "no PEM private key (-----BEGIN ... PRIVATE KEY-----) in it"
    cases: list[tuple[Path, Path, Path | None, str]] = [
        (
            good.cert,
            stranger.key,
            None,
            f"{stranger.key}: the private key does not match {good.cert}",
        ),
        (text, good.key, None, f"{text}: {no_cert}"),
        (good.cert, text, None, f"{text}: {no_key}"),
        (good.cert, good.key, text, f"{text}: {no_cert}"),
        (missing, good.key, None, f"{missing}: cannot read: No such file or directory"),
    ]
    for cert, key, ca, message in cases:
        with pytest.raises(ConfigError) as bad:
            load_certificate_set(cert, key, ca)
        assert str(bad.value) == message
    loaded = load_certificate_set(good.cert, good.key, good.ca)
    assert loaded.client_ca == good.ca.read_bytes() and len(loaded.fingerprint) == 64


# --- rotation ----------------------------------------------------------------------------


def test_rotation_while_checks_flow(
    mtls_server: tuple[ServerThread, SecretMount], pki: Pki, tmp_path: Path
) -> None:
    """A new pair from the same CA, swapped in under load: no check fails, new handshakes get it.

    Every check opens a new connection, so handshakes happen throughout the swap.
    """
    running, mount = mtls_server
    port = running.server.port
    assert served_serial(port, pki.good.client) == pki.good.server.serial
    renewed = tls.issue(pki.good.ca, tmp_path / "renewed", name=DEFAULT_SERVER_NAME, usage="server")

    def send() -> None:
        with client_channel(running.target, pki.good.client, pki.good.client.ca) as channel:
            assert check_once(channel) == "allowed"

    with Traffic(send) as traffic:
        traffic.wait_for_more(5)
        mount.publish(renewed)
        wait_for(
            "new certificate on new handshakes",
            lambda: served_serial(port, pki.good.client) == renewed.serial,
        )
        traffic.wait_for_more(5)
    assert traffic.failures == []
    assert running.server.tls is not None
    assert running.server.tls.watched.reloads == 1


def test_broken_pair_keeps_the_old_certificate_and_is_counted(
    mtls_server: tuple[ServerThread, SecretMount],
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new certificate with a key that does not match it: logged, counted, old pair serves."""
    metric_reader()
    before = counter_value(FAILURES, kind="tls")
    running, mount = mtls_server
    server_tls = running.server.tls
    assert server_tls is not None
    renewed = tls.issue(pki.good.ca, tmp_path / "renewed", name=DEFAULT_SERVER_NAME, usage="server")
    with caplog.at_level(logging.ERROR, logger="distill_guard.reload"):
        mount.publish(renewed, key_from=pki.good.server)
        wait_for("a rejected reload", lambda: server_tls.watched.failures == 1)
    assert (
        server_tls.watched.last_error == f"{mount.key}: the private key does not match {mount.cert}"
    )
    assert counter_value(FAILURES, kind="tls") - before == 1
    (record,) = [
        r for r in caplog.records if r.getMessage() == "reload rejected; last good tls keep serving"
    ]
    assert record.__dict__["file"] == str(mount.cert)
    assert served_serial(running.server.port, pki.good.client) == pki.good.server.serial
    with client_channel(running.target, pki.good.client, pki.good.client.ca) as channel:
        assert check_once(channel) == "allowed"
    # The fix arrives: the matching key is swapped in and served.
    mount.publish(renewed)
    wait_for(
        "the repaired certificate",
        lambda: served_serial(running.server.port, pki.good.client) == renewed.serial,
    )


# --- probes and the Admin port -------------------------------------------------------------


def test_health_command_over_mtls(
    mtls_server: tuple[ServerThread, SecretMount], pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    """`distill-guard health` with the CA and a client certificate exits 0; without, 2."""
    running, _ = mtls_server
    client = pki.good.client
    base = ["health", "--target", running.target, "--timeout", "2"]
    pair = ["--tls-cert", str(client.cert), "--tls-key", str(client.key)]
    assert main([*base, "--tls-ca", str(client.ca), *pair]) == 0
    assert capsys.readouterr().out == f"{running.target}: SERVING\n"
    assert main([*base, "--tls-ca", str(client.ca)]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_plaintext_health_port_answers_health_only(pki: Pki, tmp_path: Path) -> None:
    """--health-listen serves grpc.health.v1 in plaintext, and no Authorization service."""
    mount = SecretMount(tmp_path / "secret", pki.good.server)
    running = ServerThread(demo_settings(**mtls_settings(mount, health_listen="127.0.0.1:0")))
    try:
        target = f"127.0.0.1:{running.server.health_port}"
        assert main(["health", "--target", target]) == 0
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            service = "envoy.service.auth.v3.Authorization"
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as missing:
                check_once(channel)
            assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
        running.call(running.server.health.set(False))
        assert main(["health", "--target", target]) == 1
    finally:
        running.close()


def test_admin_port_uses_the_server_certificate_without_client_certificates(
    pki: Pki, tmp_path: Path
) -> None:
    """The Admin API speaks TLS with the same certificate; its token, not a client cert, admits."""
    mount = SecretMount(tmp_path / "secret", pki.good.server)
    token = tmp_path / "token"
    token.write_text("s3cret-admin-token\n")
    settings = mtls_settings(mount, admin_listen="127.0.0.1:0", admin_token_file=token)
    running = ServerThread(demo_settings(**settings))
    try:
        assert running.server.admin_port is not None
        assert served_serial(running.server.admin_port, pki.good.client) == pki.good.server.serial

        async def list_keys() -> int:
            client = AdminClient(
                f"127.0.0.1:{running.server.admin_port}",
                "s3cret-admin-token",
                credentials=channel_credentials(pki.good.client.ca),
                options=channel_options(DEFAULT_SERVER_NAME),
            )
            try:
                return len(await client.list_keys())
            finally:
                await client.close()

        assert running.call(list_keys()) >= 0
        target = f"127.0.0.1:{running.server.admin_port}"
        argv = ["keys", "list", "--server", target, "--admin-token-file", str(token)]
        assert main([*argv, "--tls-ca", str(pki.good.client.ca)]) == 0
        assert main(argv) == 1  # plaintext against a TLS port: the API cannot be asked
    finally:
        running.close()


def test_health_command_probes_the_health_port_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With DISTILL_GUARD_HEALTH_LISTEN set, `health` (the image's HEALTHCHECK) asks that port."""
    monkeypatch.setenv("DISTILL_GUARD_LISTEN", "127.0.0.1:9191")
    monkeypatch.setenv("DISTILL_GUARD_HEALTH_LISTEN", "0.0.0.0:9193")
    assert build_parser().parse_args(["health"]).target == "127.0.0.1:9193"
    monkeypatch.delenv("DISTILL_GUARD_HEALTH_LISTEN")
    assert build_parser().parse_args(["health"]).target == "127.0.0.1:9191"


# --- certificate generation ---------------------------------------------------------------


def test_tls_gen_writes_secret_shaped_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tls gen` writes ca/, server/ and client/; keys are private; --ca reuses the CA."""
    out = tmp_path / "pki"
    assert main(["tls", "gen", "--out", str(out), "--days", "2"]) == 0
    assert "--tls-cert " + str(out / "server" / "tls.crt") in capsys.readouterr().out
    for name in ("server", "client"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert (out / name / "tls.key").stat().st_mode & 0o077 == 0
        assert (out / name / "ca.crt").read_bytes() == (out / "ca" / "ca.crt").read_bytes()
    assert (out / "ca" / "ca.key").stat().st_mode & 0o077 == 0
    again = tmp_path / "again"
    assert main(["tls", "gen", "--out", str(again), "--ca", str(out / "ca")]) == 0
    assert (again / "server" / "ca.crt").read_bytes() == (out / "ca" / "ca.crt").read_bytes()
    assert not (again / "ca").exists()
    ca, renewed = out / "ca" / "ca.crt", again / "server" / "tls.crt"
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(renewed)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


# --- Envoy ------------------------------------------------------------------------------


@pytest.fixture
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    """Stacks (Envoy, distill-guard, mock model API) stopped after the test."""
    owned = Stacks(tmp_path_factory)
    try:
        yield owned
    finally:
        owned.close()


def envoy_client_serial(admin: int) -> int | None:
    """The serial of the client certificate Envoy has loaded for the distill_guard cluster."""
    certs = http_request(f"http://127.0.0.1:{admin}/certs").json()["certificates"]
    for entry in certs:
        for cert in entry.get("cert_chain", []):
            return int(cert["serial_number"], 16)
    return None


@pytest.mark.envoy
def test_envoy_over_mtls(stacks: Stacks, pki: Pki, tmp_path: Path) -> None:
    """Through Envoy over mutual TLS: allowed and denied as usual, and rotation costs nothing.

    distill-guard's certificate is swapped while requests flow through Envoy (its
    connection keeps the old one; new handshakes get the new one), and Envoy's own
    client certificate is swapped too: Envoy re-reads it through its SDS files.
    """
    server_mount = SecretMount(tmp_path / "guard-secret", pki.good.server)
    envoy_mount = SecretMount(tmp_path / "envoy-secret", pki.good.client)
    authz_tls = envoyconf.AuthzTls(certs=envoy_mount.root, sds=tmp_path / "sds")
    stack = stacks.start(authz_tls=authz_tls, **mtls_settings(server_mount))
    bearer = {"authorization": f"Bearer {BOB_KEY}"}
    assert stack.post(bearer).status == 200
    denied = stack.post({})
    assert (denied.status, denied.json()["reason"]) == (401, "key_missing")
    assert envoy_client_serial(stack.admin) == pki.good.client.serial

    renewed = tls.issue(pki.good.ca, tmp_path / "renewed", name=DEFAULT_SERVER_NAME, usage="server")
    client2 = tls.issue(pki.good.ca, tmp_path / "client2", name="envoy", usage="client")
    assert stack.guard.server is not None
    port = stack.guard.server.port

    def send() -> None:
        status = stack.post(bearer).status
        assert status == 200, status

    with Traffic(send) as traffic:
        traffic.wait_for_more(5)
        server_mount.publish(renewed)
        envoy_mount.publish(client2)
        wait_for(
            "distill-guard's new certificate",
            lambda: served_serial(port, pki.good.client) == renewed.serial,
        )
        wait_for(
            "Envoy's new client certificate",
            lambda: envoy_client_serial(stack.admin) == client2.serial,
        )
        traffic.wait_for_more(5)
    assert traffic.failures == []


@pytest.mark.envoy
def test_envoy_config_command_output_is_valid(tmp_path: Path, pki: Pki) -> None:
    """`tls envoy-config` writes a bootstrap Envoy accepts, with its two SDS files."""
    binary = envoyconf.envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary")
    out = tmp_path / "envoy"
    argv = ["tls", "envoy-config", "--certs", str(pki.good.client.directory)]
    assert main([*argv, "--sds-dir", str(out), "--out", str(out)]) == 0
    sds = yaml.safe_load((out / "distill-guard-client.sds.yaml").read_text())
    assert sds["resources"][0]["tls_certificate"]["watched_directory"] == {
        "path": str(pki.good.client.directory)
    }
    done = subprocess.run(
        [binary, "--mode", "validate", "-c", str(out / "sidecar.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
