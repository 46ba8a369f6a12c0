"""TLS and mutual TLS on the gRPC port, tenants known by their client certificates, and
certificates read again while the server runs; with grpcio and with grpcurl."""

import signal
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc

from devtools.processes import PatternsServer
from patterns_server.runtime.auth import new_token
from tests.certificates import CertificateAuthority, Issued
from tests.conftest import require_tool
from tests.rpc import bearer, details, rpc_error
from tests.tenants import Tenant, write_auth_file
from tests.waiting import eventually

BETA = Tenant("beta", "beta", *new_token())
ALPHA_SAN = "spiffe://example.org/alpha"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(require_tool("openssl"), tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue("server", "/CN=localhost", ["DNS:localhost", "IP:127.0.0.1"])


@pytest.fixture(scope="module")
def alpha_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue("alpha", "/O=Example/CN=alpha", [f"URI:{ALPHA_SAN}"])


@pytest.fixture(scope="module")
def gamma_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue("gamma", "/O=Example/CN=gamma", ["DNS:gamma.internal"])


def tls_flags(cert: Issued, client_ca: Path | None = None) -> list[str]:
    flags = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    return flags + (["--tls-client-ca", str(client_ca)] if client_ca else [])


def secure(
    server: PatternsServer, ca: CertificateAuthority, client: Issued | None = None
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        ca.cert.read_bytes(),
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def add_and_count(channel: grpc.Channel, key: str, *metadata: tuple[str, str]) -> int:
    counter = counter_pb2_grpc.UniqueCounterStub(channel)
    counter.Add(counter_pb2.AddRequest(key=key, items=["x"]), metadata=metadata, timeout=10)
    count = counter.Count(counter_pb2.CountRequest(keys=[key]), metadata=metadata, timeout=10)
    return int(count.count)


def served_serial(server: PatternsServer, ca: CertificateAuthority) -> str:
    """The serial number of the certificate a new TLS connection to `server` is shown."""
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        peer = tls.getpeercert()
        assert peer is not None
        return str(peer["serialNumber"])


def test_tls_serves_grpcio_and_grpcurl_and_refuses_plaintext(
    server_on_own_redis: Callable[..., PatternsServer],
    ca: CertificateAuthority,
    server_cert: Issued,
    grpcurl_path: str,
) -> None:
    server = server_on_own_redis(*tls_flags(server_cert))
    assert "with TLS" in server.log
    with secure(server, ca) as channel:
        assert add_and_count(channel, "tls") == 1
    with grpc.insecure_channel(server.address) as plaintext:
        refused = rpc_error(lambda: add_and_count(plaintext, "tls"))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
    listed = subprocess.run(
        [grpcurl_path, "-cacert", str(ca.cert), f"localhost:{server.port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "patterns.counter.v1.UniqueCounter" in listed.stdout, listed.stderr


def test_mutual_tls_requires_a_client_certificate_of_the_ca(
    server_on_own_redis: Callable[..., PatternsServer],
    ca: CertificateAuthority,
    server_cert: Issued,
    alpha_cert: Issued,
    grpcurl_path: str,
    tmp_path: Path,
) -> None:
    server = server_on_own_redis(*tls_flags(server_cert, ca.cert))
    assert "with mutual TLS" in server.log
    with secure(server, ca, alpha_cert) as channel:
        assert add_and_count(channel, "mtls") == 1
    with secure(server, ca) as without:
        assert rpc_error(lambda: add_and_count(without, "mtls")).code() == (
            grpc.StatusCode.UNAVAILABLE
        )
    stranger_ca = CertificateAuthority(require_tool("openssl"), tmp_path / "other", "other-ca")
    stranger = stranger_ca.issue("stranger", "/CN=alpha", [f"URI:{ALPHA_SAN}"])
    with secure(server, ca, stranger) as impostor:
        assert rpc_error(lambda: add_and_count(impostor, "mtls")).code() == (
            grpc.StatusCode.UNAVAILABLE
        )
    listed = subprocess.run(
        [
            grpcurl_path, "-cacert", str(ca.cert), "-cert", str(alpha_cert.cert),
            "-key", str(alpha_cert.key), f"localhost:{server.port}", "list",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert "patterns.counter.v1.UniqueCounter" in listed.stdout, listed.stderr


def test_a_tenant_is_known_by_its_client_certificate(
    server_on_own_redis: Callable[..., PatternsServer],
    ca: CertificateAuthority,
    server_cert: Issued,
    alpha_cert: Issued,
    gamma_cert: Issued,
    tmp_path: Path,
) -> None:
    """Alpha by a SAN, Gamma by its subject, Beta by an API key. A key, when sent, is
    who calls; a certificate that names no tenant, without a key, is no credential."""
    tenants = [
        Tenant("alpha", "alpha", "", "", extra=[f'client_cert_san = "{ALPHA_SAN}"']),
        Tenant("gamma", "gamma", "", "", extra=['client_cert_subject = "CN=gamma,O=Example"']),
        BETA,
    ]
    auth = write_auth_file(tmp_path / "tenants.toml", tenants)
    server = server_on_own_redis("--auth-file", str(auth), *tls_flags(server_cert, ca.cert))
    with secure(server, ca, alpha_cert) as as_alpha, secure(server, ca, gamma_cert) as as_gamma:
        assert add_and_count(as_alpha, "shared-name") == 1
        assert add_and_count(as_gamma, "shared-name") == 1  # its own namespace
        assert add_and_count(as_alpha, "shared-name") == 1
        assert add_and_count(as_alpha, "shared-name", *bearer(BETA)) == 1  # the key: Beta
    unnamed = ca.issue("unnamed", "/CN=nobody", ["DNS:nobody.internal"])
    with secure(server, ca, unnamed) as nobody:
        error = rpc_error(lambda: add_and_count(nobody, "shared-name"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details(error)["ErrorInfo"].reason == "MISSING_CREDENTIALS"


def test_certificates_are_read_again_and_a_bad_one_is_not_taken(
    server_on_own_redis: Callable[..., PatternsServer],
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    """New connections get a renewed certificate after SIGHUP, connections made before
    keep working; a file that does not load leaves the last good one in force."""
    first = ca.issue("renewed", "/CN=localhost", ["DNS:localhost", "IP:127.0.0.1"])
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    server = server_on_own_redis(*tls_flags(Issued(cert, key)))
    before = served_serial(server, ca)
    with secure(server, ca) as kept:
        assert add_and_count(kept, "renew") == 1
        second = ca.issue("renewed-again", "/CN=localhost", ["DNS:localhost", "IP:127.0.0.1"])
        cert.write_bytes(second.cert.read_bytes())
        key.write_bytes(second.key.read_bytes())
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        eventually(lambda: served_serial(server, ca) != before)
        assert add_and_count(kept, "renew") == 1
    renewed = served_serial(server, ca)
    cert.write_text("not a certificate")
    server.process.send_signal(signal.SIGHUP)
    assert served_serial(server, ca) == renewed  # this connection had it read again
    server.wait_for_log("TLS files not reloaded, the previous ones stay in force")
    with secure(server, ca) as fresh:
        assert add_and_count(fresh, "renew") == 1
