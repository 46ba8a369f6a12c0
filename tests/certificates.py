"""Throwaway certificates for TLS tests, made at run time with `openssl`: a CA, and
certificates it signs for servers (localhost) and clients (a subject, and SANs)."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Issued:
    """A certificate (PEM) and its private key (PEM), as files."""

    cert: Path
    key: Path


class CertificateAuthority:
    def __init__(self, openssl: str, folder: Path, name: str = "test-ca") -> None:
        self._openssl = openssl
        self._folder = folder
        self._serial = 0
        self.cert = folder / f"{name}.pem"
        self._key = folder / f"{name}.key"
        folder.mkdir(parents=True, exist_ok=True)
        self._run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", self._key, "-out", self.cert, "-subj", f"/CN={name}",
        )  # fmt: skip

    def issue(self, name: str, subject: str, sans: list[str]) -> Issued:
        """A certificate for `subject` ("/O=Example/CN=team-a") with `sans`
        ("DNS:localhost", "IP:127.0.0.1", "URI:spiffe://example.org/team-a")."""
        self._serial += 1
        key, request, cert = (self._folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        extensions = self._folder / f"{name}.ext"
        extensions.write_text(f"subjectAltName={','.join(sans)}\n")
        self._run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request,
                  "-subj", subject)  # fmt: skip
        self._run(
            "x509", "-req", "-in", request, "-CA", self.cert, "-CAkey", self._key,
            "-set_serial", str(self._serial), "-days", "2", "-out", cert,
            "-extfile", extensions,
        )  # fmt: skip
        return Issued(cert, key)

    def _run(self, *args: object) -> None:
        subprocess.run(
            [self._openssl, *map(str, args)], check=True, capture_output=True, timeout=60
        )
