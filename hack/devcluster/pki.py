"""Certificates and keys for the local control plane, made with the openssl command.

A private CA signs the API server's serving certificate and the client certificates of the
admin (group system:masters), kube-controller-manager and kube-scheduler. The service-account
key pair signs and verifies ServiceAccount tokens (TokenRequest). Everything is generated once
per state folder and reused by later `up` runs.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DAYS = 3650
KEY_ALGORITHM = ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")

# A config of our own, so the system's openssl.cnf defaults add no extensions of their own.
_REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
"""


class PkiError(RuntimeError):
    """openssl is missing or failed."""


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of everything the components need."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving(self) -> ClientCert:
        return ClientCert(self.directory / "apiserver.crt", self.directory / "apiserver.key")

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client(self, name: str) -> ClientCert:
        return ClientCert(self.directory / f"{name}.crt", self.directory / f"{name}.key")


# name -> subject of the client certificates.
CLIENTS = {
    "admin": "/O=system:masters/CN=admin",
    "kube-controller-manager": "/CN=system:kube-controller-manager",
    "kube-scheduler": "/CN=system:kube-scheduler",
    # The API server's identity towards aggregated API servers (requestheader authentication).
    "front-proxy-client": "/CN=front-proxy-client",
}

SERVING_SANS = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
    "IP:10.96.0.1",
)


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise PkiError("the openssl command is needed to make the cluster's certificates")
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", *KEY_ALGORITHM, "-out", str(path))
    path.chmod(0o600)


def _sign(pki: Pki, name: str, subject: str, extensions: str, tmp: Path) -> None:
    key = pki.directory / f"{name}.key"
    crt = pki.directory / f"{name}.crt"
    csr = tmp / f"{name}.csr"
    config = tmp / "req.cnf"
    ext = tmp / f"{name}.ext"
    config.write_text(_REQ_CONFIG)
    ext.write_text(f"[ext]\n{extensions}\n")
    _new_key(key)
    _openssl(
        "req", "-new", "-config", str(config), "-key", str(key), "-subj", subject, "-out", str(csr)
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(pki.ca_cert),
        "-CAkey",
        str(pki.ca_key),
        "-set_serial",
        f"0x{secrets.randbits(120):x}",
        "-days",
        str(DAYS),
        "-sha256",
        "-extfile",
        str(ext),
        "-extensions",
        "ext",
        "-out",
        str(crt),
    )


def ensure_pki(directory: Path) -> Pki:
    """Create whatever is missing under `directory` and return the paths.

    Without a CA everything is made anew, so no certificate outlives the CA that signed it.
    """
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pki-") as tmpname:
        tmp = Path(tmpname)
        if not (pki.ca_cert.exists() and pki.ca_key.exists()):
            for old in directory.iterdir():
                old.unlink()
            config = tmp / "req.cnf"
            config.write_text(_REQ_CONFIG)
            _new_key(pki.ca_key)
            _openssl(
                "req",
                "-x509",
                "-new",
                "-config",
                str(config),
                "-extensions",
                "ca",
                "-key",
                str(pki.ca_key),
                "-subj",
                "/CN=gpu-rightsizer-local-ca",
                "-days",
                str(DAYS),
                "-sha256",
                "-out",
                str(pki.ca_cert),
            )
        serving = pki.serving
        if not (serving.cert.exists() and serving.key.exists()):
            _sign(
                pki,
                "apiserver",
                "/CN=kube-apiserver",
                "basicConstraints = critical,CA:FALSE\n"
                "keyUsage = critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage = serverAuth\n"
                f"subjectAltName = {','.join(SERVING_SANS)}",
                tmp,
            )
        for name, subject in CLIENTS.items():
            client = pki.client(name)
            if not (client.cert.exists() and client.key.exists()):
                _sign(
                    pki,
                    name,
                    subject,
                    "basicConstraints = critical,CA:FALSE\n"
                    "keyUsage = critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage = clientAuth",
                    tmp,
                )
        if not (pki.sa_key.exists() and pki.sa_pub.exists()):
            _new_key(pki.sa_key)
            _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki
