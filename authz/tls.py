"""`distill-guard tls`: throwaway certificates for mutual TLS, and Envoy's side of it.

`tls gen` makes a CA and, from it, a server certificate for distill-guard and
a client certificate for Envoy, laid out like the Secrets cert-manager writes
(tls.crt, tls.key, ca.crt per directory), so the demo, the tests and a
Kubernetes pod use the same paths. It runs the `openssl` command: these are
for tests, demos and trying things out; production certificates come from
cert-manager or your PKI (docs/tls.md).

`tls envoy-config` writes envoy/sidecar.yaml with its distill_guard cluster
speaking mutual TLS, and the two SDS files through which Envoy reads (and
re-reads) its certificate.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from authz import envoyconf
from authz.grpctls import DEFAULT_SERVER_NAME

DEFAULT_CLIENT_NAME = "envoy"
DEFAULT_DAYS = 90

Usage = Literal["server", "client"]

# Extensions for each kind of certificate; -subj names the subject, so [dn] stays empty.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ext_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ext_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:{name}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ext_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:{name}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class TlsGenError(Exception):
    """The certificates could not be made (no `openssl`, or it failed)."""


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA: its certificate and key."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate issued by an Authority, in a directory laid out like a cert-manager Secret."""

    directory: Path
    serial: int

    @property
    def cert(self) -> Path:
        """The certificate (tls.crt)."""
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        """Its private key (tls.key)."""
        return self.directory / "tls.key"

    @property
    def ca(self) -> Path:
        """The issuing CA's certificate (ca.crt): what the peer is verified with."""
        return self.directory / "ca.crt"


@dataclass(frozen=True, slots=True)
class Bundle:
    """What `tls gen` writes: a CA, distill-guard's server certificate, Envoy's client one."""

    ca: Authority
    server: Issued
    client: Issued


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise TlsGenError("the `openssl` command is needed to make certificates")
    return found


def _run(*args: str | Path) -> None:
    done = subprocess.run(
        [_openssl(), *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise TlsGenError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _serial() -> int:
    return secrets.randbits(127) | 1 << 126  # positive, 16 bytes, never 0


def _config(work: Path, name: str) -> Path:
    path = work / "openssl.cnf"
    path.write_text(_OPENSSL_CONFIG.format(name=name), encoding="ascii")
    return path


def _new_key(path: Path) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    path.chmod(0o600)


def _publish(work: Path, directory: Path, names: list[str]) -> None:
    """Move finished files from the private work directory into place, each by rename."""
    for name in names:
        os.replace(work / name, directory / name)


def new_authority(directory: Path, *, days: int = DEFAULT_DAYS) -> Authority:
    """A new self-signed CA in `directory` (ca.crt, ca.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:  # mode 0700: keys never exposed
        work = Path(tmp)
        _new_key(work / "ca.key")
        serial = _serial()
        _run(
            "req", "-new", "-x509", "-key", work / "ca.key", "-out", work / "ca.crt",
            "-subj", f"/CN=distill-guard throwaway CA {serial:x}"[:64],
            "-days", str(days), "-set_serial", str(serial),
            "-config", _config(work, "unused"), "-extensions", "ext_ca",
        )  # fmt: skip
        _publish(work, directory, ["ca.key", "ca.crt"])
    return Authority(directory / "ca.crt", directory / "ca.key")


def issue(
    ca: Authority, directory: Path, *, name: str, usage: Usage, days: int = DEFAULT_DAYS
) -> Issued:
    """A new key and certificate for `name` from `ca`, in `directory` (tls.crt, tls.key, ca.crt)."""
    directory.mkdir(parents=True, exist_ok=True)
    serial = _serial()
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        work = Path(tmp)
        config = _config(work, name)
        _new_key(work / "tls.key")
        _run(
            "req", "-new", "-key", work / "tls.key", "-out", work / "tls.csr",
            "-subj", f"/CN={name}", "-config", config,
        )  # fmt: skip
        _run(
            "x509", "-req", "-in", work / "tls.csr", "-out", work / "tls.crt",
            "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", str(serial), "-days", str(days),
            "-extfile", config, "-extensions", f"ext_{usage}",
        )  # fmt: skip
        shutil.copyfile(ca.cert, work / "ca.crt")
        _publish(work, directory, ["tls.key", "tls.crt", "ca.crt"])
    return Issued(directory, serial)


def generate(
    out: Path,
    *,
    days: int = DEFAULT_DAYS,
    server_name: str = DEFAULT_SERVER_NAME,
    client_name: str = DEFAULT_CLIENT_NAME,
    ca: Authority | None = None,
) -> Bundle:
    """A CA (or `ca`), and from it out/server for distill-guard and out/client for Envoy."""
    if ca is None:
        ca = new_authority(out / "ca", days=days)
    server = issue(ca, out / "server", name=server_name, usage="server", days=days)
    client = issue(ca, out / "client", name=client_name, usage="client", days=days)
    return Bundle(ca, server, client)


# --- the command line ----------------------------------------------------------------


def _gen(ns: argparse.Namespace) -> int:
    ca = None
    if ns.ca is not None:
        ca = Authority(ns.ca / "ca.crt", ns.ca / "ca.key")
        for path in (ca.cert, ca.key):
            if not path.is_file():
                print(f"distill-guard tls gen: {path}: no such file", file=sys.stderr)
                return 2
    try:
        bundle = generate(
            ns.out, days=ns.days, server_name=ns.server_name, client_name=ns.client_name, ca=ca
        )
    except TlsGenError as exc:
        print(f"distill-guard tls gen: {exc}", file=sys.stderr)
        return 1
    server, client = bundle.server, bundle.client
    print(f"CA:            {bundle.ca.cert}" + ("" if ca is None else " (reused)"))
    print(f"distill-guard: {server.cert} (DNS:{ns.server_name}, serial {server.serial:x})")
    print(f"Envoy:         {client.cert} (DNS:{ns.client_name}, serial {client.serial:x})")
    print("\nserve with:")
    print(f"  distill-guard serve ... --tls-cert {server.cert} --tls-key {server.key} \\")
    print(f"    --tls-client-ca {server.ca}")
    print("probe with:")
    print(f"  distill-guard health --tls-ca {client.ca} --tls-cert {client.cert} \\")
    print(f"    --tls-key {client.key} --tls-server-name {ns.server_name}")
    return 0


def _envoy_config(ns: argparse.Namespace) -> int:
    tls = envoyconf.AuthzTls(certs=ns.certs, sds=ns.sds_dir, server_name=ns.server_name)
    ns.out.mkdir(parents=True, exist_ok=True)
    conf = envoyconf.with_authz_tls(envoyconf.load_sidecar(), tls)
    header = (
        "# envoy/sidecar.yaml with mutual TLS to distill-guard, written by\n"
        f"#   distill-guard tls envoy-config --certs {ns.certs} --sds-dir {ns.sds_dir}"
        f" --server-name {ns.server_name}\n"
        "# Every setting is explained in the comments of envoy/sidecar.yaml and in docs/tls.md.\n"
    )
    bootstrap = ns.out / "sidecar.yaml"
    bootstrap.write_text(header + yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")
    written = [bootstrap]
    for name, doc in envoyconf.authz_tls_secrets(tls).items():
        path = ns.out / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        written.append(path)
    for path in written:
        print(path)
    if ns.out.resolve() != ns.sds_dir.resolve():
        print(f"(Envoy reads the SDS files from {ns.sds_dir}: put them there)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tls gen` and `tls envoy-config`."""
    tls = sub.add_parser("tls", help="mutual TLS between Envoy and distill-guard (docs/tls.md)")
    actions = tls.add_subparsers(dest="tls_command", required=True, metavar="ACTION")

    gen = actions.add_parser(
        "gen",
        help="write a throwaway CA, a server certificate and an Envoy client certificate",
        description="Writes OUT/ca (ca.crt, ca.key), OUT/server and OUT/client (tls.crt, "
        "tls.key, ca.crt each, like cert-manager's Secrets). Needs the openssl command. "
        "For tests and demos; production certificates come from cert-manager or your PKI.",
    )
    gen.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    gen.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    gen.add_argument(
        "--server-name",
        default=DEFAULT_SERVER_NAME,
        help=f"DNS name in distill-guard's certificate [default: {DEFAULT_SERVER_NAME}]",
    )
    gen.add_argument(
        "--client-name",
        default=DEFAULT_CLIENT_NAME,
        help=f"DNS name in Envoy's client certificate [default: {DEFAULT_CLIENT_NAME}]",
    )
    gen.add_argument(
        "--ca",
        type=Path,
        metavar="DIR",
        help="issue from this existing CA directory (ca.crt, ca.key) instead of a new one: "
        "new certificates that the other side already trusts (rotation)",
    )
    gen.set_defaults(func=_gen)

    envoy = actions.add_parser(
        "envoy-config",
        help="write Envoy's bootstrap with mutual TLS to distill-guard, and its SDS files",
    )
    envoy.add_argument(
        "--certs",
        type=Path,
        required=True,
        metavar="DIR",
        help="where Envoy finds tls.crt, tls.key and ca.crt (its client certificate Secret)",
    )
    envoy.add_argument(
        "--sds-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where Envoy will find the SDS files (the bootstrap names them by path)",
    )
    envoy.add_argument(
        "--server-name",
        default=DEFAULT_SERVER_NAME,
        help=f"DNS name distill-guard's certificate must carry [default: {DEFAULT_SERVER_NAME}]",
    )
    envoy.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    envoy.set_defaults(func=_envoy_config)
