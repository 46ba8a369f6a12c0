"""The server's TLS: its certificate and key, and for mutual TLS the CA that client
certificates must chain to. They are read again, for the connections made from then on,
after `reload()` (SIGHUP) or when a file changes: a renewed certificate needs no restart,
and connections already made keep theirs. A new version that cannot be read or does not
load leaves the last good one in force, and the log says why.
"""

import logging
import os
import ssl
import threading
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)


class ServerCertificates:
    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self._files = [Path(cert), Path(key), *([Path(client_ca)] if client_ca else [])]
        self._mutual = bool(client_ca)
        self._lock = threading.Lock()  # gRPC asks for certificates from its own threads
        self._reload = False
        self._seen = self._signature()
        self._initial = self._configuration()  # raises: a server without them cannot start

    @property
    def mutual(self) -> bool:
        return self._mutual

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self._mutual
        )

    def reload(self) -> None:
        """Read the files again before the next connection."""
        with self._lock:
            self._reload = True

    def _fetch(self) -> "grpc.ServerCertificateConfiguration | None":
        """gRPC asks before each new connection: a new configuration, or None to keep
        the one it has."""
        with self._lock:
            signature = self._signature()
            if not self._reload and signature == self._seen:
                return None
            self._reload, self._seen = False, signature
        try:
            configuration = self._configuration()
        except (OSError, ValueError) as error:
            logger.error("TLS files not reloaded, the previous ones stay in force: %s", error)
            return None
        logger.info("TLS certificate reloaded from %s", self._files[0])
        return configuration

    def _configuration(self) -> "grpc.ServerCertificateConfiguration":
        cert, key, *ca = (file.read_bytes() for file in self._files)
        # The ssl module checks what gRPC would only find at the next handshake: that the
        # files are PEM, and that the key is the certificate's.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self._files[0], self._files[1])
        if ca:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(self._files[2])
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=ca[0] if ca else None
        )

    def _signature(self) -> list[tuple[int, int, int] | None]:
        signature: list[tuple[int, int, int] | None] = []
        for file in self._files:
            try:
                status = os.stat(file)
                signature.append((status.st_mtime_ns, status.st_size, status.st_ino))
            except OSError:
                signature.append(None)
        return signature
